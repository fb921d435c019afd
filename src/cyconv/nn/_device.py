"""Devices and dtypes of layer parameters: NumPy arrays on "cpu", CuPy arrays on "cuda".

CuPy is imported only when something asks for "cuda" or hands in a CuPy array, so
importing :mod:`cyconv.nn` never touches CUDA.
"""
from __future__ import annotations

import numpy as np

from .._cuda import require_cupy

__all__ = ["is_cupy", "array_module", "device_of", "parse_device", "to_device", "layer_dtype"]


def is_cupy(a) -> bool:
    """True for a CuPy array (checked without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """``numpy`` or ``cupy``, whichever ``a`` belongs to."""
    if is_cupy(a):
        import cupy
        return cupy
    return np


def device_of(a) -> str:
    """'cpu' for a NumPy array, 'cuda' for a CuPy array."""
    return "cuda" if is_cupy(a) else "cpu"


def parse_device(what: str, device):
    """Normalise a device argument to ``("cpu", None)`` or ``("cuda", index)``.

    Accepts ``None`` (= "cpu"), ``"cpu"``, ``"cuda"`` and ``"cuda:<index>"``.
    """
    if device is None:
        return "cpu", None
    if isinstance(device, str):
        d = device.strip().lower()
        if d == "cpu":
            return "cpu", None
        if d == "cuda":
            return "cuda", None
        if d.startswith("cuda:") and d[5:].isdigit():
            return "cuda", int(d[5:])
    raise ValueError(f"{what}: unknown device {device!r}; expected 'cpu', 'cuda' or "
                     f"'cuda:<index>'")


def to_device(a, device: str, index=None, what: str = "to"):
    """``a`` as an array on ``device`` (``a`` itself when it is already there)."""
    if device == "cpu":
        return a.get() if is_cupy(a) else a
    cupy = require_cupy(what)
    if index is None:
        return a if is_cupy(a) else cupy.asarray(a)
    with cupy.cuda.Device(index):
        if is_cupy(a) and a.device.id == index:
            return a
        return cupy.asarray(a.get() if is_cupy(a) else a)


def layer_dtype(what: str, dtype, device: str = "cpu") -> np.dtype:
    """Check a layer's ``dtype`` argument: float32 or float64 (float16 on "cuda" too)."""
    try:
        dt = np.dtype(np.float32 if dtype is None else dtype)
    except TypeError:
        raise TypeError(f"{what}: dtype must be a NumPy floating dtype, got {dtype!r}") from None
    allowed = ("float16", "float32", "float64") if device == "cuda" else ("float32", "float64")
    if dt.name not in allowed:
        if dt == np.float16:
            raise TypeError(f"{what}: float16 is supported for CuPy (GPU) arrays only; use "
                            f"float32 on the CPU")
        raise TypeError(f"{what}: dtype {dt.name} is not supported; expected one of "
                        f"{', '.join(allowed)}")
    return dt
