"""The one loader of cyconv's CUDA kernels, and their typed launch helpers.

Each kernel family (``im2col.cu``, ``direct.cu``, ``pool.cu``, ``norm.cu``,
``eltwise.cu``, ``resample.cu``) is one templated source,
``template <typename T, typename I>``, compiled once per process and device into a
``cupy.RawModule`` that instantiates every kernel for every element type (float16,
float32, float64) and index type (``int``, ``long long``).  Shapes are run-time
arguments, so no new shape ever compiles anything; CuPy caches the binary on disk
(``CUPY_CACHE_DIR``) for the next process.

CuPy does not check kernel arguments: a Python ``int`` is passed as ``long long`` and
an array of the wrong dtype is read as raw bytes.  :func:`launch` therefore converts
every argument by the kernel's signature in :data:`SIGNATURES` (which a test compares
with the ``.cu`` sources) and refuses anything that does not fit.

Importing this module does not import CuPy.
"""
from __future__ import annotations

import os
import threading

import numpy as np

#: how to get CuPy, in every "needs CuPy" message: the extra of the driver's CUDA major
#: version (``nvidia-smi`` shows it).
INSTALL_HINT = ("pip install 'cyconv[cuda12]' (CUDA 12) or pip install 'cyconv[cuda13]' "
                "(CUDA 13), which install cupy-cuda12x / cupy-cuda13x")

#: threads per block of every elementwise (grid-stride) kernel.
BLOCK = 256
#: threads per block of the block-per-item reductions; must equal CYC_REDUCE_BLOCK.
REDUCE_BLOCK = 256
#: at most this many blocks per launch: with BLOCK threads, 2**24 threads in all, which
#: is the slack ``index_dtype`` leaves so that a grid-stride ``i += stride`` cannot
#: overflow a 32-bit index.
MAX_GRID = 2**16
_GRID_SLACK = MAX_GRID * max(BLOCK, REDUCE_BLOCK)
INT32_MAX = 2**31 - 1

_HERE = os.path.dirname(os.path.abspath(__file__))
_INCLUDE = '#include "common.cuh"'

#: element dtype name -> the C++ type its kernels are instantiated with.
CTYPES = {"float16": "cyc_half", "float32": "float", "float64": "double"}
#: index dtype name -> C++ type.
INDEX_CTYPES = {"int32": "int", "int64": "long long"}
#: the accumulation dtype of each element dtype (``Acc<T>::type`` in common.cuh).
ACC_DTYPES = {"float16": "float32", "float32": "float32", "float64": "float64"}

_GEOM = ("I",) * 21     # ConvParams.geometry(): CYC_GEOM_PARAMS
_POOL = ("I",) * 18     # PoolParams.geometry(): CYC_POOL_PARAMS
_SHAPE = ("I",) * 6     # PoolShape.geometry(): CYC_SHAPE_PARAMS

#: Argument kinds of every kernel, in order.  'T*' / 'const T*': an array of the element
#: dtype; 'A*' / 'const A*': an array of the accumulation dtype; 'i64*' / 'const i64*':
#: an int64 array; a trailing '?': the same or None (a null pointer); 'I': an index
#: scalar.
SIGNATURES = {
    "im2col": {
        "im2col_nd": ("const T*", "T*", "I") + _GEOM,
        "col2im_nd": ("const T*", "const T*?", "T*", "I") + _GEOM,
        "batch_to_chunk": ("const T*", "T*", "I", "I", "I"),
        "batch_to_chunk_t": ("const T*", "T*", "I", "I", "I", "I"),
        "chunk_to_batch": ("const T*", "const T*?", "T*", "I", "I", "I"),
        "add_bias": ("T*", "const T*", "I", "I", "I"),
    },
    "direct": {
        "conv_direct_forward": ("const T*", "const T*", "const T*?", "T*", "I") + _GEOM,
        "conv_direct_backward_input": ("const T*", "const T*", "const T*?", "T*", "I") + _GEOM,
        "conv_direct_backward_weight": ("const T*", "const T*", "A*", "I", "I", "I") + _GEOM,
        "reduce_partials": ("const A*", "T*", "I", "I"),
    },
    "pool": {
        "max_pool_forward": ("const T*", "T*", "i64*?", "I") + _POOL,
        "max_pool_backward": ("const T*", "const i64*", "T*", "I", "I", "I"),
        "avg_pool_forward": ("const T*", "T*", "I", "I", "I") + _POOL,
        "avg_pool_backward": ("const T*", "T*", "I", "I", "I") + _POOL,
        "adaptive_avg_pool_forward": ("const T*", "T*", "I") + _SHAPE,
        "adaptive_avg_pool_backward": ("const T*", "T*", "I") + _SHAPE,
        "adaptive_max_pool_forward": ("const T*", "T*", "i64*", "I") + _SHAPE,
    },
    "norm": {
        "batch_norm_stats": ("const T*", "A*", "A*", "I", "I", "I"),
        "batch_norm_apply": ("const T*", "T*", "const A*", "const A*", "const A*", "I", "I",
                             "I"),
        "batch_norm_backward_reduce": ("const T*", "const T*", "const A*", "A*", "A*", "I",
                                       "I", "I"),
        "batch_norm_backward_apply": ("const T*", "const T*", "T*", "const A*", "const A*",
                                      "const A*", "const A*", "I", "I", "I"),
    },
    "eltwise": {
        "activation_forward": ("const T*", "T*", "const A*", "I", "I"),
        "activation_backward": ("const T*", "const T*", "T*", "const A*", "I", "I"),
        "softmax_forward": ("const T*", "T*", "I", "I", "I", "I"),
        "softmax_backward": ("const T*", "const T*", "T*", "I", "I", "I", "I"),
    },
    "resample": {
        "resample_forward": ("const T*", "T*", "const i64*", "const i64*", "const A*?",
                             "const A*?", "I", "I", "I", "I"),
        "resample_backward": ("const T*", "T*", "const i64*", "const i64*", "const A*", "I",
                              "I", "I", "I"),
    },
}

_lock = threading.Lock()
_modules = {}       # (family, device id) -> cupy.RawModule
_functions = {}     # (family, kernel, dtype, index dtype, device id) -> RawKernel


def source(family: str) -> str:
    """The CUDA source of ``family`` as NVRTC compiles it (common.cuh pasted in)."""
    if family not in SIGNATURES:
        raise KeyError(f"unknown CUDA kernel family {family!r}")
    with open(os.path.join(_HERE, f"{family}.cu"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(_HERE, "common.cuh"), encoding="utf-8") as f:
        common = f.read().replace("#pragma once\n", "")
    if _INCLUDE not in text:
        return text
    return text.replace(_INCLUDE, common, 1)


def name_expression(kernel: str, dtype, index_dtype) -> str:
    """The template-id of one instantiation, e.g. ``'im2col_nd<float, long long>'``."""
    return f"{kernel}<{CTYPES[np.dtype(dtype).name]}, {INDEX_CTYPES[np.dtype(index_dtype).name]}>"


def name_expressions(family: str) -> list:
    """Every instantiation the module of ``family`` is compiled with."""
    return [name_expression(k, t, i) for k in SIGNATURES[family]
            for t in CTYPES for i in INDEX_CTYPES]


def index_dtype(*extents) -> np.dtype:
    """int32 when every extent (plus the grid-stride slack) stays below 2**31, else int64."""
    top = max((int(e) for e in extents), default=0)
    return np.dtype(np.int32 if top + _GRID_SLACK <= INT32_MAX else np.int64)


def grid_size(total: int, block: int = BLOCK) -> int:
    """Blocks of a 1-D grid-stride launch over ``total`` items (at least 1)."""
    return max(1, min(-(-int(total) // block), MAX_GRID))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def convert_args(where: str, signature, args, dtype, idx_dtype) -> tuple:
    """Check ``args`` against ``signature`` and convert every scalar to its C type.

    Arrays must have the exact dtype and be C-contiguous; an index scalar must be an
    integer that fits ``idx_dtype``.  Anything else raises ``TypeError``/``ValueError``
    naming the kernel and the argument: these are internal errors, never user errors.
    """
    dtype = np.dtype(dtype)
    idx_dtype = np.dtype(idx_dtype)
    if len(args) != len(signature):
        raise TypeError(f"{where}: expected {len(signature)} arguments, got {len(args)}")
    acc = np.dtype(ACC_DTYPES[dtype.name])
    info = np.iinfo(idx_dtype)
    out = []
    for pos, (kind, a) in enumerate(zip(signature, args)):
        if kind == "I":
            if not _is_int(a):
                raise TypeError(f"{where}: argument {pos} must be an integer, got "
                                f"{type(a).__name__}")
            if not info.min <= int(a) <= info.max:
                raise ValueError(f"{where}: argument {pos} = {int(a)} does not fit "
                                 f"{idx_dtype.name}")
            out.append(idx_dtype.type(a))
            continue
        if a is None:
            if not kind.endswith("?"):
                raise TypeError(f"{where}: argument {pos} ({kind}) may not be null")
            out.append(np.uint64(0))        # a null pointer (8 bytes)
            continue
        base = kind.rstrip("?").replace("const ", "")
        want = {"T*": dtype, "A*": acc, "i64*": np.dtype(np.int64)}[base]
        if getattr(a, "dtype", None) != want:
            raise TypeError(f"{where}: argument {pos} ({kind}) must be a {want.name} array, "
                            f"got {getattr(a, 'dtype', type(a).__name__)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{where}: argument {pos} must be C-contiguous")
        out.append(a)
    return tuple(out)


class CUDAUnavailableError(ImportError, RuntimeError):
    """CuPy is not installed, or it cannot reach a CUDA device: the one error every GPU
    entry point raises (GPU arrays, ``device="cuda"`` layers, CUDA tensors in
    :mod:`cyconv.torch`, the demo).  Both an ImportError and a RuntimeError, so code that
    catches either keeps working."""


_usable = {"cupy": None}


def require_cupy(what: str = "cyconv"):
    """The ``cupy`` module, once it is known to reach a CUDA device; the one check of
    "can the GPU be used here".  Raises :class:`CUDAUnavailableError` naming ``what``
    (the caller) and how to install CuPy."""
    cp = _usable["cupy"]
    if cp is not None:
        return cp
    try:
        import cupy as cp
    except ImportError as exc:
        raise CUDAUnavailableError(f"{what}: the 'cuda' device needs CuPy, which is not "
                                   f"installed; install it with {INSTALL_HINT}") from exc
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, ...
        raise CUDAUnavailableError(f"{what}: CuPy {cp.__version__} is installed but CUDA "
                                   f"cannot be used: {exc}") from exc
    if n < 1:
        raise CUDAUnavailableError(f"{what}: CuPy is installed but no CUDA device is "
                                   f"visible (check CUDA_VISIBLE_DEVICES)")
    _usable["cupy"] = cp
    return cp



def module(family: str):
    """The compiled RawModule of ``family`` on the current device (memoized)."""
    cp = require_cupy()
    dev = cp.cuda.runtime.getDevice()
    key = (family, dev)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cp.RawModule(code=source(family), options=("-std=c++17",),
                                   name_expressions=name_expressions(family))
                _modules[key] = mod
    return mod


def get_function(family: str, kernel: str, dtype, idx_dtype):
    """One kernel instantiation on the current device (memoized)."""
    cp = require_cupy()
    dev = cp.cuda.runtime.getDevice()
    key = (family, kernel, np.dtype(dtype).name, np.dtype(idx_dtype).name, dev)
    fn = _functions.get(key)
    if fn is None:
        fn = module(family).get_function(name_expression(kernel, dtype, idx_dtype))
        _functions[key] = fn
    return fn


def launch(family: str, kernel: str, dtype, idx_dtype, args, *, total=None, grid=None,
           block=BLOCK) -> None:
    """Launch ``family.kernel`` on the current device and CuPy stream.

    ``total`` (the grid-stride loop's trip count) sizes a 1-D grid; ``grid`` overrides it.
    Nothing is launched when ``total`` is 0.  The call never synchronises.
    """
    if grid is None:
        if total is None:
            raise TypeError("launch: give total or grid")
        if total <= 0:
            return
        grid = grid_size(total, block)
    sig = SIGNATURES[family][kernel]
    cargs = convert_args(f"{family}.{kernel}", sig, args, dtype, idx_dtype)
    get_function(family, kernel, dtype, idx_dtype)((int(grid),), (int(block),), cargs)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def split_reduction(n_out: int, length: int, target_items: int = 4096,
                    min_chunk: int = 2048) -> tuple:
    """(S, chunk): cut a reduction of ``length`` terms for each of ``n_out`` outputs into S
    slices of ``chunk`` terms, so that about ``target_items`` blocks have work and each
    sums at least ``min_chunk`` terms.  A pure function of the shapes, so the summation
    order (and the result, bit for bit) never depends on the device or the run.
    """
    if n_out < 1 or length < 1:
        return 1, max(1, length)
    s = max(1, min(ceil_div(target_items, n_out), ceil_div(length, min_chunk)))
    chunk = ceil_div(length, s)
    return ceil_div(length, chunk), chunk


__all__ = ["BLOCK", "REDUCE_BLOCK", "MAX_GRID", "CTYPES", "SIGNATURES", "source",
           "name_expression", "name_expressions", "index_dtype", "grid_size",
           "convert_args", "module", "get_function", "launch", "split_reduction",
           "ceil_div"]
