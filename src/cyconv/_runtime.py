"""Threads, workspace and BLAS pinning: the runtime state every CPU kernel reads.

cyconv has one level of parallelism: OpenMP ``prange`` loops in the kernels, each thread
calling a *single-threaded* BLAS.  So SciPy's BLAS (the one ``scipy.linalg.cython_blas``
calls) is pinned to one thread the first time a kernel runs; the number of OpenMP threads
comes from :func:`set_num_threads` or ``CYCONV_NUM_THREADS``.
"""
from __future__ import annotations

import os
import threading

from ._params import is_int

#: more threads than this is a mistake (an OpenMP runtime may fail to start them all)
MAX_THREADS = 256
_lock = threading.Lock()
_state = {"num_threads": None, "workspace": {"cpu": None, "cuda": None},
          "blas_pinned": False, "blas": None, "forked": False}
#: changes whenever a setting that plans depend on changes (threads, workspace limits, a
#: fork): part of every plan-cache key (:mod:`cyconv._plan`).
generation = 0


def settings_changed() -> None:
    """Invalidate the cached plans: a thread count or workspace limit changed."""
    global generation
    generation += 1


def _default_threads() -> int:
    env = os.environ.get("CYCONV_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"CYCONV_NUM_THREADS must be a positive integer, got {env!r}")
        if n > MAX_THREADS:
            raise ValueError(f"CYCONV_NUM_THREADS must be at most {MAX_THREADS}, got {env!r}")
        return n
    try:
        return min(MAX_THREADS, max(1, len(os.sched_getaffinity(0))))
    except AttributeError:  # macOS, Windows
        return min(MAX_THREADS, max(1, os.cpu_count() or 1))


def get_num_threads() -> int:
    """The number of threads cyconv's CPU kernels use.

    Always 1 in a process forked from one that imported cyconv: GNU libgomp's thread
    pool does not survive ``fork()``, and a parallel region in the child would wait
    forever for the parent's threads.  (Worker pools of forked processes get one
    thread each, which also keeps them from oversubscribing the cores.)
    """
    if _state["forked"]:
        return 1
    if _state["num_threads"] is None:
        _state["num_threads"] = _default_threads()
    return _state["num_threads"]


def set_num_threads(n: int) -> None:
    """Set the number of threads of cyconv's CPU kernels (overrides CYCONV_NUM_THREADS)."""
    if not is_int(n) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if n > MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be at most {MAX_THREADS}, got {n!r}")
    _state["num_threads"] = int(n)
    settings_changed()


#: device -> (environment variable, default MiB) of the workspace limit.
_WORKSPACE_DEFAULTS = {"cpu": ("CYCONV_WORKSPACE_MB", 256),
                       "cuda": ("CYCONV_GPU_WORKSPACE_MB", 1024)}


def get_workspace_limit(device: str = "cpu") -> int:
    """Bytes of scratch memory one op may use on ``device``: im2col columns and partial
    sums on the CPU (default 256 MiB, env ``CYCONV_WORKSPACE_MB``), column buffers of one
    im2col op on the GPU (default 1 GiB, env ``CYCONV_GPU_WORKSPACE_MB``)."""
    limit = _state["workspace"][device]
    if limit is None:
        var, default = _WORKSPACE_DEFAULTS[device]
        env = os.environ.get(var, "").strip()
        try:
            mb = float(env) if env else default
        except ValueError:
            mb = -1
        if not mb > 0:
            raise ValueError(f"{var} must be a positive number, got {env!r}")
        limit = _state["workspace"][device] = int(mb * 2**20)
    return limit


def set_workspace_limit(nbytes: int, device: str = "cpu") -> None:
    """Cap the scratch memory of one op on ``device`` ('cpu' or 'cuda').

    A smaller cap only makes the im2col path work in smaller chunks: results agree to
    rounding (the BLAS rounds differently for other GEMM shapes); direct is unaffected.
    """
    if not is_int(nbytes) or nbytes < 1:
        raise ValueError(f"set_workspace_limit: nbytes must be a positive int, got {nbytes!r}")
    if device not in _WORKSPACE_DEFAULTS:
        raise ValueError(f"set_workspace_limit: device must be 'cpu' or 'cuda', got {device!r}")
    _state["workspace"][device] = int(nbytes)
    settings_changed()


def pin_blas() -> None:
    """Limit the BLAS that the kernels call to one thread (once per process)."""
    if _state["blas_pinned"]:
        return
    with _lock:
        if _state["blas_pinned"]:
            return
        import scipy.linalg.cython_blas  # noqa: F401  (load the library to be found)
        info = []
        try:
            from threadpoolctl import ThreadpoolController
            ctl = ThreadpoolController()
            blas = [lib for lib in ctl.lib_controllers if lib.user_api == "blas"]
            ours = [lib for lib in blas if "scipy" in os.path.dirname(lib.filepath)
                    and "numpy" not in os.path.basename(os.path.dirname(lib.filepath))]
            for lib in ours or blas:
                lib.set_num_threads(1)
                info.append({"library": lib.prefix, "version": lib.version,
                             "threading_layer": getattr(lib, "threading_layer", None),
                             "filepath": lib.filepath})
        except Exception as exc:  # threadpoolctl missing or failing: say so in info()
            info.append({"error": f"could not pin BLAS threads: {exc}"})
        _state["blas"] = info
        _state["blas_pinned"] = True


def blas_info() -> list:
    pin_blas()
    return list(_state["blas"])


def openmp_info() -> list:
    """The OpenMP runtimes loaded in this process (threadpoolctl's view): library, version
    and file.  A repaired wheel shows the copy it bundles (``cyconv.libs/libgomp-*.so``),
    a source build the system's."""
    from ._ext import _runtime  # noqa: F401  (linked to the OpenMP runtime: loads it)
    try:
        from threadpoolctl import ThreadpoolController
        libs = [lib for lib in ThreadpoolController().lib_controllers
                if lib.user_api == "openmp"]
    except Exception as exc:  # threadpoolctl missing or failing
        return [{"error": f"could not list OpenMP runtimes: {exc}"}]
    return [{"library": lib.prefix, "version": lib.version, "filepath": lib.filepath}
            for lib in libs]


def _after_fork_in_child():
    # OpenMP (libgomp) cannot start threads again in a forked child: run serially there.
    # The BLAS settings survive a fork but are re-checked lazily.
    _state["forked"] = True
    settings_changed()
    _state["blas_pinned"] = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
