"""The one path every convolution takes: normalise -> select -> dispatch.

``functional`` and ``grad`` describe each public op as a direction of the conv-view
primitives (forward, backward_input, backward_weight); this module checks devices and
dtypes, picks the backend from the array type and the algorithm, and handles the batch
forms (unbatched in, unbatched out; N = 0).
"""
from __future__ import annotations

import numpy as np

from . import _cpu
from ._params import array_module_name, check_algorithm, check_dtypes
from ._select import select_algorithm


def backend(xp_name: str):
    if xp_name == "cupy":
        from . import _gpu
        return _gpu
    return _cpu


def resolve_algorithm(op, p, direction, dtype, algorithm, xp_name):
    check_algorithm(op, algorithm)
    if algorithm != "auto":
        if algorithm == "im2col":
            from ._select import im2col_feasible
            if not im2col_feasible(p):
                raise ValueError(
                    f"{op}: algorithm='im2col' needs a column plane of at most 2**31 - 1 "
                    f"elements; output {p.col_size} is too large, use algorithm='direct'")
        return algorithm
    n_threads = _cpu._runtime.get_num_threads() if xp_name == "numpy" else 0
    return select_algorithm(p, direction, np.dtype(dtype).itemsize, n_threads,
                            device="cpu" if xp_name == "numpy" else "cuda")


def prepare(op, *, x=None, w=None, b=None, gy=None):
    """Device name and common dtype of the given arrays (TypeError on mixing)."""
    named = {k: v for k, v in (("input", x), ("weight", w), ("bias", b), ("grad_output", gy))
             if v is not None}
    xp_name = array_module_name(op, *named.values())
    dtype = check_dtypes(op, xp_name, **named)
    return xp_name, dtype


def batched(a, p):
    """View an op-side array as batched (N, C, ...)."""
    return a if p.batched else a[None]


def unbatch(a, p):
    return a if p.batched else a[0]
