"""Algorithm choice: a pure function of shapes, dtype, direction and thread count.

The same call always takes the same path (so results never change from call to call),
and no timing-based autotuning is done.
"""
from __future__ import annotations

import functools
import math

from ._params import INT32_MAX, ConvParams

DIRECTIONS = ("forward", "backward_input", "backward_weight")


def im2col_feasible(p: ConvParams) -> bool:
    """The im2col path needs each sample's column plane to fit a 32-bit BLAS ``ld``."""
    return p.pixels <= INT32_MAX and p.gemm_k <= INT32_MAX


@functools.lru_cache(maxsize=1024)
def select_algorithm(p: ConvParams, direction: str, itemsize: int, n_threads: int,
                     device: str = "cpu") -> str:
    """'im2col' or 'direct' for one op in conv view.

    Memoised (the arguments are all it depends on), so 'auto' costs a dictionary lookup
    per call, not the rules below.

    Direct loops win where a GEMM has too little to reuse: depthwise and thin groups
    (few channels per group, so each group's GEMM is a sliver), and layers whose column
    matrix would have very few rows.  On the CPU the channel-blocked direct kernel also
    wins most dense unit-stride layers (:func:`_blocked_wins`).  Everything else goes to
    im2col + BLAS.
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
    if device == "cpu" and _blocked_wins(p, direction, itemsize):
        return "direct"
    if device == "cpu" and direction == "backward_weight" and _direct_wgrad_wins(p):
        return "direct"
    return "im2col"


def _direct_wgrad_wins(p: ConvParams) -> bool:
    """Dense weight gradients where the direct kernel's per-tap dot products beat
    im2col + GEMM: the GEMM's row count is the output channels per group, and at 16 or
    fewer (32 for kernels of 27 or more taps, e.g. 3x3x3) it is too thin to pay for the
    column matrix.  Measured on 2-core AVX2 machines, direct/im2col: 16 channels 0.53
    (3-D), 0.76 (2-D 112x112); 32 channels 0.86 (3-D 3x3x3), 1.04-1.06 (2-D 3x3, 5x5);
    64 channels 1.12 (3-D) to 1.84 (2-D)."""
    from . import _cpu
    if _cpu.ISA != "avx2":
        return False
    kg = p.col_channels // p.G
    taps = math.prod(p.kernel_size)
    return kg <= 16 or (kg <= 32 and taps >= 27)


def _blocked_wins(p: ConvParams, direction: str, itemsize: int) -> bool:
    """Dense layers where the channel-blocked direct kernel beats im2col + GEMM.

    Measured on 2-core AVX2 machines (``python -m cyconv bench --algorithms``): it wins
    by 1.2-2.4x on unit-stride layers with at least 3 taps (ResNet 3x3 at 56x56, dilated,
    1-D k9, 3-D), forward and input gradient.  im2col + GEMM stays ahead where a GEMM
    has the most to reuse and the blocked kernel the least: 1x1 and 2-tap kernels,
    strided layers, without AVX2 (the blocked micro-kernel needs 16 vector registers),
    and long channel reductions: a GEMM depth k (channels x taps) of 4096 or more, or
    of 20 or more per output pixel.  Interleaved 3x3 layers, batch 8, 2 threads,
    direct/im2col forward and input grad: 256 ch at 28x28 (k/pixels 2.9) 0.91 / 0.97,
    at 14x14 (11.8) 0.91 / 0.99, 320 ch at 14x14 (14.7) 0.95 / 0.93, 384 ch at 14x14
    (17.6) 0.97 / 1.04, 256 ch at 10x10 (23) 0.95 / 1.05, at 7x7 (47) 1.01 / 1.25,
    512 ch at 14x14 (k 4608) 1.08 / 1.10, at 28x28 1.12 / 1.01, 1024 ch at 7x7 2.4 / 2.8.
    """
    from . import _cpu
    if _cpu.ISA != "avx2" or direction == "backward_weight":
        return False
    if any(s != 1 for s in p.stride) or math.prod(p.kernel_size) < 3:
        return False
    if direction == "forward":
        ok, k, pixels = _cpu.blocked_applies(p, itemsize), p.gemm_k, p.pixels
    else:   # the input gradient runs as a forward conv from column side to image side
        ok = _cpu.blocked_input_grad_applies(p, itemsize)
        k = p.col_channels // p.G * math.prod(p.kernel_size)
        pixels = math.prod(p.img_size)
    return ok and k < 4096 and k < 20 * pixels
