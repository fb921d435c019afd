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
    1-D k9, 3-D), forward and input gradient, and on strided forward layers (ResNet
    downsampling, a transposed convolution's input gradient).  im2col + GEMM stays ahead
    where a GEMM has the most to reuse and the blocked kernel the least: 1x1 and 2-tap
    kernels, without AVX2 (the blocked micro-kernel needs 16 vector registers), and
    channel reductions of GEMM depth k (channels x taps) 4096 or more, where a pair of
    output blocks' weights (k x 64 bytes) outgrows the 512 KiB L2.  Interleaved, batch 8,
    2 threads, direct/im2col forward / input grad: 3x3 256 ch at 7x7 0.83 / 0.92, at
    10x10 0.78 / 0.90, 384 ch at 14x14 0.87 / 0.93 (k 3456), 512 ch at 7x7, 14x14, 28x28
    0.95-0.97 / 1.00-1.15 (k 4608), 640 ch at 7x7 1.05 / 1.30, 768 ch 1.17 / 1.56;
    strided forward: 3x3 stride 2 0.84-0.89 (64-128 ch), 0.97-0.98 (256-512 ch at 14x14),
    4x4 stride 2 0.70-0.86, but 1x1 stride 2 1.36.
    """
    from . import _cpu
    if _cpu.ISA != "avx2" or direction == "backward_weight":
        return False
    if math.prod(p.kernel_size) < 3:
        return False
    if direction == "forward":
        ok, k = _cpu.blocked_applies(p, itemsize), p.gemm_k
    else:   # the input gradient runs as a forward conv from column side to image side
        # (a strided one, as one conv per output phase, measured slower than im2col:
        # DCGAN's transposed layer 14.6 ms against 9.2, each phase packing gy again)
        ok = _cpu.blocked_applies(p, itemsize) and _cpu.input_grad_is_forward(p)
        k = p.col_channels // p.G * math.prod(p.kernel_size)
    return ok and k < 4096
