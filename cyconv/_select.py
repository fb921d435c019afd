"""Algorithm choice: a pure function of shapes, dtype, direction and thread count.

The same call always takes the same path (so results never change from call to call),
and no timing-based autotuning is done.
"""
from __future__ import annotations

from ._params import INT32_MAX, ConvParams

DIRECTIONS = ("forward", "backward_input", "backward_weight")


def im2col_feasible(p: ConvParams) -> bool:
    """The im2col path needs each sample's column plane to fit a 32-bit BLAS ``ld``."""
    return p.pixels <= INT32_MAX and p.gemm_k <= INT32_MAX


def select_algorithm(p: ConvParams, direction: str, itemsize: int, n_threads: int,
                     device: str = "cpu") -> str:
    """'im2col' or 'direct' for one op in conv view.

    Direct loops win where a GEMM has too little to reuse: depthwise and thin groups
    (few channels per group, so each group's GEMM is a sliver), and layers whose column
    matrix would have very few rows.  Everything else goes to im2col + BLAS.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    if not im2col_feasible(p):
        return "direct"
    cg = p.img_channels // p.G      # image channels per group
    kg = p.col_channels // p.G      # column channels per group
    if p.G > 1 and min(cg, kg) < 8:
        return "direct"
    if p.gemm_k < 8:
        return "direct"
    return "im2col"
