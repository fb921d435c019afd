"""The one loader of cyconv's compiled CPU kernels (Cython + OpenMP), and their helpers.

Every kernel module (``im2col``, ``direct``, ``blocked``, ``depthwise``, ``winograd``,
``pool``, ``norm``, ``eltwise``, ``resample``) is built twice on
x86-64: ``cyconv._ext.<mod>`` for the portable baseline and ``cyconv._ext.avx2.<mod>``
with AVX2+FMA (``meson.build``).  :data:`ISA` says which set this process uses, chosen
once at import from a CPU-feature check: ``CYCONV_ISA=base`` forces the baseline,
``CYCONV_ISA=avx2`` insists on AVX2 (and fails clearly on a CPU without it).  This is
the CPU twin of :mod:`cyconv._cuda`'s loader.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from .._runtime import get_num_threads
from . import _runtime as _ext_runtime

try:
    from .. import _build_info
except ImportError:  # pragma: no cover - a source tree that was never built
    _build_info = None

#: below this many FLOPs (or elements of work) an op runs on one thread: starting the
#: thread team would cost more than it saves.
SERIAL_FLOPS = 1_000_000


def _choose_isa() -> str:
    want = os.environ.get("CYCONV_ISA", "auto").strip().lower() or "auto"
    if want not in ("auto", "base", "avx2"):
        raise ValueError(f"CYCONV_ISA must be 'auto', 'base' or 'avx2', got {want!r}")
    built = bool(_build_info and _build_info.AVX2_BUILT)
    has = _ext_runtime.cpu_has_avx2_fma()
    if want == "avx2" and not (built and has):
        raise ImportError("CYCONV_ISA=avx2, but " + (
            "this CPU lacks AVX2/FMA" if not has else "cyconv was built without AVX2 kernels"))
    if want == "base":
        return "base"
    return "avx2" if (built and has) else "base"


#: 'avx2' or 'base': the kernel set of this process.
ISA = _choose_isa()
_PKG = "cyconv._ext.avx2" if ISA == "avx2" else "cyconv._ext"
_modules = {}


def kernels(name: str):
    """The kernel module ``name`` ('im2col', 'direct', 'blocked', 'pool', 'norm', 'eltwise',
    'resample') for :data:`ISA`."""
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = importlib.import_module(f"{_PKG}.{name}")
    return mod


def threads_for(work: float) -> int:
    """OpenMP threads for an op of ``work`` FLOPs (or elements): 1 below
    :data:`SERIAL_FLOPS`, else :func:`cyconv.get_num_threads`."""
    return 1 if work < SERIAL_FLOPS else get_num_threads()


def native(a):
    """C-contiguous, native byte order (inputs are never modified: this copies if needed)."""
    if type(a) is np.ndarray and a.flags.c_contiguous and a.dtype.isnative:
        return a                                        # the common case, cheaply
    a = np.ascontiguousarray(a)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
