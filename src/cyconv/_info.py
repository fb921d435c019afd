"""cyconv.info(): what this process runs on (the first thing to paste in a bug report)."""
from __future__ import annotations

import os
import platform


def info() -> dict:
    """Keys: version, openmp, openmp_runtime, num_threads, blas, simd, cuda (and a few
    more).  ``openmp_runtime`` and ``blas`` name the libraries loaded and their files."""
    from . import __version__, _runtime
    from ._ext import ISA
    from ._ext import _runtime as ext

    try:
        from . import _build_info as b
        built = {"openmp_built": b.OPENMP, "avx2_built": b.AVX2_BUILT, "debug": b.DEBUG}
    except ImportError:
        built = {}
    n = _runtime.get_num_threads()
    return {
        "version": __version__,
        "openmp": ext.openmp_enabled(),
        "openmp_threads_seen": ext.threads_used(n),
        "openmp_runtime": _runtime.openmp_info(),
        "num_threads": n,
        "blas": _runtime.blas_info(),
        "simd": ISA,
        "cpu_avx2_fma": ext.cpu_has_avx2_fma(),
        "workspace_bytes": _runtime.get_workspace_limit(),
        "cuda": _cuda_info(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **built,
    }


def _cuda_info():
    from ._cuda import CUDAUnavailableError, require_cupy
    try:
        cupy = require_cupy("cyconv.info")
    except CUDAUnavailableError as exc:
        return {"available": False, "reason": str(exc)}
    except Exception as exc:  # a broken CuPy install
        return {"available": False, "reason": f"CuPy not importable ({type(exc).__name__})"}
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        props = cupy.cuda.runtime.getDeviceProperties(0) if n else {}
        name = props.get("name", b"")
        return {"available": n > 0, "cupy": cupy.__version__, "devices": n,
                "device0": name.decode() if isinstance(name, bytes) else name,
                "cache_dir": os.environ.get("CUPY_CACHE_DIR", "~/.cupy/kernel_cache")}
    except Exception as exc:
        return {"available": False, "cupy": cupy.__version__, "reason": str(exc)}
