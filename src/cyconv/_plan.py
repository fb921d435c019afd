"""Plans: which kernel runs for a convolution call, decided in one place and cached.

A :class:`Plan` is a pure function of (op, direction, shapes, dtype, arguments, thread
count, workspace limit, device, ISA): it names the concrete kernel, the fallback taken
when the weights hold NaN or Inf (the one data-dependent choice), the scratch memory the
kernel may take, the threads and the reason.  The backends (:mod:`cyconv._cpu`,
:mod:`cyconv._gpu`) only execute plans; :func:`cyconv.plan` returns the very object a
call with the same arguments uses, as PyTorch's ``_select_conv_backend`` names a
``ConvBackend`` and cuDNN's and FFTW's plans are made once and executed many times.

Every public convolution and gradient looks its plan up in :data:`_CACHE`, keyed by
the raw arguments (array types, shapes and dtypes, the op's keyword values *and their
types*, so that ``stride=2.0`` is still refused) and :data:`cyconv._runtime.generation`
(which changes with the thread count, the workspace limit and after a fork); a hit skips
argument normalisation and selection.  Unhashable arguments (lists) are planned afresh
on every call.

Kernels (CPU)
-------------
forward (the conv view's column side from its image side):
  ``blocked`` (channel-blocked direct, ``blocked.pyx``), ``depthwise`` (depthwise layers
  on channel-interleaved blocks, ``depthwise.pyx``: strided or short rows), ``outer``
  (dense layers with fewer than 8 input channels: vectors of 8 output channels),
  ``direct`` (per-channel direct, ``direct.pyx``), ``im2col`` (column matrix + GEMM),
  ``im2col_pointwise`` (1x1, stride 1, unpadded: one GEMM on the input itself),
  ``im2col_fc`` (every direction: the window is the whole unpadded input, one output
  pixel: one GEMM over the whole batch, as a linear layer),
  ``im2col_taps`` (1-D, unit stride, 2 taps: one GEMM per tap on shifted views of the
  input; NaN/Inf weights fall back to ``im2col``).
input gradient (image side from column side; a transposed convolution's forward):
  ``blocked_flipped`` / ``direct_flipped`` (unit stride: a forward convolution of the
  output gradient with flipped, transposed weights), ``blocked_phases`` (strided: one
  blocked forward convolution per output phase), ``direct``, ``im2col`` (GEMM + col2im).
  Every direct variant falls back to ``im2col`` for NaN/Inf weights: the direct kernels
  add ``w * 0`` for padded outputs, which is NaN there.  ``depthwise`` (a gather per
  output phase) needs no fallback: it adds exactly im2col's terms.
weight gradient: ``depthwise``, ``outer``, ``direct``, ``im2col``.
Winograd (``winograd.pyx``; dense 3-tap, unit-stride, undilated layers): forward
  ``winograd_f4`` / ``winograd_f2`` (F(4x4,3x3) / F(2x2,3x3), see :func:`winograd_tile`),
  input gradient ``winograd_f4_flipped`` / ``winograd_f2_flipped`` (the same kernel on gy
  with flipped, transposed weights).  NaN or Inf in the weights *or the input* fall back
  to ``im2col`` (the transforms would spread them over whole tiles); the weight gradient
  has no Winograd kernel (``algorithm='winograd'`` runs 'auto's weight-gradient kernel).

Kernels (GPU): ``im2col`` (cuBLAS GEMMs on chunks of columns within the workspace limit;
``direct`` when an allocation fails) and ``direct``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _runtime
from ._params import INT32_MAX, ConvParams

#: conv-view directions (a transposed convolution's forward is a ``backward_input``).
DIRECTIONS = ("forward", "backward_input", "backward_weight")
#: the public directions of :func:`cyconv.plan` and what they are in conv view.
PUBLIC_DIRECTIONS = ("forward", "input", "weight")
#: 1-D kernels with at most this many taps run forward as per-tap GEMMs (``im2col_taps``):
#: WaveNet's 2-tap layers measured 0.92 of the column-matrix time, 3-5 taps 0.95-1.04.
TAP_GEMMS_MAX = 2
#: plans kept in the cache; the oldest goes first when it is full.
CACHE_SIZE = 1024

_CACHE: dict = {}


@dataclass(frozen=True, eq=False)
class Plan:
    """What one convolution call runs, and why (see the module docstring's kernel list).

    ``direction`` is the public one ('forward', 'input', 'weight'); ``conv_direction``
    the conv-view one the backends execute.  ``nonfinite`` is the plan run instead when
    the weights hold NaN or Inf (None when the kernel handles them itself).
    """
    op: str
    direction: str
    algorithm: str
    kernel: str
    out_shape: tuple
    workspace_bytes: int
    threads: int
    reason: str
    device: str
    dtype: str
    conv_direction: str
    params: ConvParams = field(repr=False)
    #: the geometry tuple the kernel reads (:meth:`ConvParams.geometry`, or the swapped
    #: one of a flipped input gradient), and the output phases of ``blocked_phases``.
    geometry: tuple = field(repr=False)
    phases: "tuple | None" = field(default=None, repr=False)
    nonfinite: "Plan | None" = field(default=None, repr=False)

    def __str__(self) -> str:
        p = self.params
        lines = [f"{self.op} {self.direction}: {self.kernel} ({self.algorithm}) on "
                 f"{self.device}, {self.dtype}, {self.threads} thread(s)",
                 f"  input {p.x_shape}, weight {p.w_shape} -> {self.out_shape}",
                 f"  workspace up to {self.workspace_bytes:,} bytes",
                 f"  why: {self.reason}"]
        if self.nonfinite is not None:
            what = "weights or input" if self.algorithm == "winograd" else "weights"
            lines.append(f"  NaN/Inf {what}: {self.nonfinite.kernel} "
                         f"({self.nonfinite.reason})")
        return "\n".join(lines)


# -- cache ----------------------------------------------------------------------------------

class Unplanned(Exception):
    """Raised by :func:`freeze` for an argument that cannot key the cache."""


def freeze(v):
    """A cache-key form of an op argument that keeps its types: ``2`` and ``2.0`` (or
    ``True``) must not share a plan, since only the first is valid.  Raises
    :class:`Unplanned` for values that are not ints, bools, floats, strings, None or
    tuples of them."""
    t = type(v)
    if t is int or t is str or v is None:
        return v
    if t is tuple:
        return (tuple,) + tuple(freeze(e) for e in v)
    if t is bool or t is float:
        return (t, v)
    raise Unplanned


def lookup(key):
    """The cached plan for ``key``, or None."""
    return _CACHE.get(key)


def remember(key, plan) -> None:
    """Cache ``plan`` under ``key`` (bounded: the oldest entry goes when full)."""
    if len(_CACHE) >= CACHE_SIZE:
        try:
            del _CACHE[next(iter(_CACHE))]
        except (StopIteration, KeyError, RuntimeError):   # another thread got there
            pass
    _CACHE[key] = plan


def clear_cache() -> None:
    """Forget every cached plan (the choice rules are fixed, so this only costs time)."""
    _CACHE.clear()


# -- geometry rules -------------------------------------------------------------------------

def im2col_feasible(p: ConvParams) -> bool:
    """The im2col path needs each sample's column plane to fit a 32-bit BLAS ``ld``."""
    return p.pixels <= INT32_MAX and p.gemm_k <= INT32_MAX


def padded_plane(p: ConvParams) -> int:
    """Elements of the zero-padded image plane the direct kernels stage per channel."""
    n = 1
    for i, o, k, s, (pb, _), d in zip(p.img_size, p.col_size, p.kernel_size, p.stride,
                                      p.padding, p.dilation):
        n *= max(i + pb, (o - 1) * s + (k - 1) * d + 1)
    return n


def staging_too_big(p: ConvParams) -> bool:
    """Padding or dilation so large that the direct kernels' zero-padded staging planes
    would dwarf the data (taps that reach far into the padding read only zeros, which
    im2col never stores): 'direct' then hands over to im2col."""
    data = math.prod(p.img_size) + math.prod(p.col_size)
    return padded_plane(p) > max(1 << 22, 16 * data)


def blocked_applies(p: ConvParams, itemsize: int) -> bool:
    """'direct' runs the channel-blocked kernel (``blocked.pyx``) rather than the
    per-channel one: every group has at least one full vector of input and of output
    channels (8 float32 / 4 float64), so blocking channels wastes little."""
    lanes = 32 // itemsize
    return (p.img_channels // p.G >= lanes and p.col_channels // p.G >= lanes
            and not staging_too_big(p))


def is_depthwise(p: ConvParams) -> bool:
    """One image channel and one column channel per group."""
    return p.img_channels == p.G == p.col_channels


#: a row this many bytes long or more feeds the per-channel row kernels' vectors well.
ROW_BYTES = 48


def depthwise_wins(p: ConvParams, direction: str, itemsize: int) -> bool:
    """A depthwise layer runs on channel-interleaved blocks (``depthwise.pyx``) unless
    the per-channel kernels of ``direct.pyx`` serve it better: they vectorise along a
    plane's rows, which at unit stride and rows of :data:`ROW_BYTES` or more (12
    float32) keeps their vectors full and needs no interleaving; they read only every
    S-th element of a strided row and leave most lanes of a short row idle, where the
    interleaved kernel keeps one channel per lane for any stride, kernel and plane
    (``benchmarks/results/depthwise-1thread.md``)."""
    if not is_depthwise(p) or staging_too_big(p):
        return False
    row = p.img_size[-1] if direction == "backward_input" else p.col_size[-1]
    return not (all(s == 1 for s in p.stride) and row * itemsize >= ROW_BYTES)


#: weight gradients of dense layers with at most this many input channels and output
#: planes of at most OUTER_WGRAD_PIXELS pixels run on the ``outer`` kernel.
OUTER_WGRAD_CHANNELS = 64
OUTER_WGRAD_PIXELS = 1024


def outer_wins(p: ConvParams, direction: str) -> bool:
    """Layers that run on vectors of 8 output channels (``outer_forward`` /
    ``outer_backward_weight`` in ``depthwise.pyx``), forward and weight gradient, 2+ taps:

    * dense, fewer than 8 image channels (a network's first layer, LeNet's 6-channel
      layer): the blocked kernel needs a full vector of input channels, and im2col's
      GEMM has a depth of only C_in x taps;
    * grouped, 8 to :data:`OUTER_WGRAD_CHANNELS` channels per group on both sides
      (ResNeXt's 8-32): each group's GEMM is a sliver, the blocked kernel's channel
      blocks span groups, and the per-channel kernels re-read every input plane for each
      output channel;
    * dense weight gradients with up to :data:`OUTER_WGRAD_CHANNELS` image and column
      channels on planes of up to :data:`OUTER_WGRAD_PIXELS` output pixels (CIFAR-size
      layers at a training batch): im2col's per-sample GEMMs are then only a plane deep.
      With more column channels the GEMM has the rows to reuse its columns and wins
      (DCGAN's 64 -> 128 4x4 stride-2 layers: outer 1.56, im2col 1.10-1.27 of PyTorch's
      time).

    Not for windows that do not overlap (ConvNeXt's 4x4 stride-4 stem: im2col's column
    matrix is then a permutation of the input, forward 1.10 against outer's 1.55 of
    PyTorch's time), nor for the forward of a single dense sample, whose pixel tiles
    feed im2col's threads where outer has a plane per block of 8 output channels (CIFAR
    and U-Net stems at batch 1: im2col 0.93-1.28, outer 1.19-1.41).

    Measured in ``benchmarks/results/kernels-2threads.md``."""
    if (direction == "backward_input" or math.prod(p.kernel_size) < 2 or is_depthwise(p)
            or staging_too_big(p)):
        return False
    if all(k <= s for k, s in zip(p.kernel_size, p.stride)):
        return False
    if direction == "forward" and p.G == 1 and p.N == 1:
        return False
    cg, kg = p.img_channels // p.G, p.col_channels // p.G
    if p.G > 1:
        return 8 <= cg <= OUTER_WGRAD_CHANNELS and kg >= 8
    if cg < 8:
        return True
    return (direction == "backward_weight" and max(cg, kg) <= OUTER_WGRAD_CHANNELS
            and p.pixels <= OUTER_WGRAD_PIXELS)


def input_grad_is_forward(p: ConvParams) -> bool:
    """The input gradient is a forward convolution of the output gradient (see
    :func:`input_grad_as_forward`): unit stride, and padding no wider than the dilated
    kernel on either side."""
    return (all(s == 1 for s in p.stride)
            and all(pb <= d * (k - 1)
                    for (pb, _), d, k in zip(p.padding, p.dilation, p.kernel_size)))


def input_grad_as_forward(p: ConvParams) -> tuple:
    """Geometry of gx = conv(gy, w') for a unit-stride convolution: the image and column
    sides swap and the padding before becomes ``d*(k-1) - pad``."""
    g = p.geom
    flipped = tuple(d * (k - 1) - pb for d, k, pb in zip(g.dilation, g.kernel, g.pad))
    return g._replace(C_img=g.C_col, C_col=g.C_img, img=g.col, col=g.img, stride=(1, 1, 1),
                      pad=flipped).flat()


def _axis_phases(n, k, s, pad):
    """One axis of :func:`input_grad_phases`: (r, positions, taps, padding before) per
    phase r of an image axis n long, or None if a phase needs negative padding."""
    phases = []
    for r in range(min(s, n)):
        t0 = (r + pad) % s
        taps = tuple(range(t0, k, s))
        before = len(taps) - 1 - (r + pad - t0) // s
        if taps and before < 0:
            return None
        phases.append((r, len(range(r, n, s)), taps, before))
    return phases


def input_grad_phases(p: ConvParams):
    """A strided input gradient (a transposed convolution) as unit-stride ones.

    Image positions i = s*m + r of one phase r (per axis) receive gy[o] through the
    taps t = t0, t0 + s, ... only (t0 = (r + pad) mod s), with o = m + off - j for tap
    t0 + j*s, off = (r + pad - t0) / s: a unit-stride correlation of gy with those taps
    flipped, padded J - 1 - off before (J taps).  Per axis (3 of them, leading unit
    axes included), a list of (r, positions, taps, padding before); None where this does
    not apply: dilation other than 1, or a phase that would need negative padding
    (padding wider than the kernel)."""
    g = p.geom
    if any(d != 1 for d in g.dilation):
        return None
    axes = [_axis_phases(*a) for a in zip(g.img, g.kernel, g.stride, g.pad)]
    return None if any(a is None for a in axes) else axes


def is_fully_connected(p: ConvParams) -> bool:
    """Dense, unpadded, one output pixel whose window is the whole input (DCGAN's last
    discriminator layer, its generator's first transposed layer): each sample's column
    matrix is the sample itself, so the whole batch is one GEMM."""
    return (p.G == 1 and p.pixels == 1 and p.img_size == p.kernel_size
            and all(d == 1 for d in p.dilation)
            and all(pb == 0 and pa == 0 for pb, pa in p.padding))


def winograd_applies(p: ConvParams) -> bool:
    """A layer ``algorithm='winograd'`` accepts (:func:`cyconv._params.check_winograd`)."""
    return (p.G == 1 and all(k == 3 for k in p.kernel_size)
            and all(s == 1 for s in p.stride) and all(d == 1 for d in p.dilation))


#: the fewest F(4x4,3x3) tiles per call for which F(4x4) is used, and the fewest tiles
#: (of the chosen size) for which 'auto' picks Winograd: each call transforms every
#: weight into 36 (or 16) positions, which only pays over this many tiles
WINOGRAD_MIN_TILES = 128


def winograd_tiles(p: ConvParams, direction: str, tile: int) -> int:
    """Tiles of one call: per sample (and output depth), ceil(H/m) x ceil(W/m) of the
    output plane (the image side for an input gradient); 1-D rows are 1 x m."""
    size = p.col_size if direction == "forward" else p.img_size
    n = p.N
    for i, o in enumerate(size):
        n *= o if (p.nd == 3 and i == 0) else -(-o // tile)
    return n


def winograd_tile(p: ConvParams, direction: str) -> int:
    """Outputs per tile side: 4 (F(4x4,3x3): 2.25 multiplies per output instead of 9)
    where the call has at least :data:`WINOGRAD_MIN_TILES` such tiles, else 2
    (F(2x2,3x3): 4 per output, but 16 transformed weights per pair of channels instead
    of 36, and less padding on small planes): with few tiles, transforming the weights
    dominates (ResNet 512 channels at 7x7, batch 8, 1 thread: F(4x4) 20 GFLOP/s,
    F(2x2) 44; ``benchmarks/results/winograd.md``)."""
    return 4 if winograd_tiles(p, direction, 4) >= WINOGRAD_MIN_TILES else 2


def winograd_workspace(p: ConvParams, tile: int, direction: str, itemsize: int,
                       n_threads: int) -> int:
    """Scratch bytes of a Winograd call (transformed weights, per-thread tile buffers,
    the channels-last input slab), or -1 when it cannot fit the workspace limit."""
    from ._ext import kernels
    geom = p.geometry() if direction == "forward" else input_grad_as_forward(p)
    return int(kernels("winograd").workspace_bytes(geom, p.N, itemsize, n_threads,
                                                   _runtime.get_workspace_limit(), tile))


def is_pointwise(p: ConvParams) -> bool:
    """1x1 kernel, stride 1, no padding: the image *is* the column matrix."""
    return (all(k == 1 for k in p.kernel_size) and all(s == 1 for s in p.stride)
            and all(pb == 0 and pa == 0 for pb, pa in p.padding))


def taps_as_gemms(p: ConvParams) -> bool:
    """A 1-D convolution with unit stride and 2 .. :data:`TAP_GEMMS_MAX` taps: each tap's
    column matrix is the input shifted (``im2col_taps``)."""
    return p.nd == 1 and p.stride == (1,) and 2 <= p.kernel_size[0] <= TAP_GEMMS_MAX


# -- 'auto' ---------------------------------------------------------------------------------

def select_algorithm(p: ConvParams, direction: str, itemsize: int, n_threads: int,
                     device: str = "cpu", isa: str | None = None,
                     winograd: bool = True) -> str:
    """'im2col', 'direct' or 'winograd' for one op in conv view (see
    :func:`auto_choice`)."""
    return auto_choice(p, direction, itemsize, n_threads, device, isa, winograd)[0]


def auto_choice(p: ConvParams, direction: str, itemsize: int, n_threads: int,
                device: str = "cpu", isa: str | None = None, winograd: bool = True) -> tuple:
    """``(algorithm, why)`` of ``algorithm='auto'``: a pure function of its arguments.

    Direct loops win where a GEMM has too little to reuse: depthwise and thin groups
    (few channels per group, so each group's GEMM is a sliver), and layers whose column
    matrix would have very few rows.  On the CPU the channel-blocked direct kernel also
    wins most dense layers with 3+ taps (:func:`_blocked_wins`) and the per-tap dot
    products thin weight gradients (:func:`_direct_wgrad_wins`).  Everything else goes
    to im2col + BLAS.  Dense 3x3 layers with enough channels go to Winograd
    (:func:`_winograd_wins`; ``winograd=False`` leaves it out).  The measurements behind
    each rule are in ``benchmarks/results/``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    if isa is None:
        from ._ext import ISA as isa
    if not im2col_feasible(p):
        return "direct", "a sample's column matrix would exceed 2**31 - 1 elements"
    if is_fully_connected(p):
        return "im2col", ("one output pixel whose window is the whole input: a linear "
                          "layer, one GEMM over the batch")
    cg = p.img_channels // p.G      # image channels per group
    kg = p.col_channels // p.G      # column channels per group
    if p.G > 1 and min(cg, kg) < 8:
        return "direct", (f"groups of {min(cg, kg)} channel(s) (< 8): each group's GEMM "
                          f"would be a sliver")
    if p.gemm_k < 8:
        return "direct", f"a GEMM depth of {p.gemm_k} (< 8) leaves BLAS nothing to reuse"
    if (device == "cpu" and direction != "backward_weight" and kg < 8
            and math.prod(p.kernel_size) >= 2):
        # MelGAN's 32 -> 1 k7 output layer: per-channel direct 0.22 (forward) and 0.19
        # (input gradient) of PyTorch's time, im2col 2.04 and 1.77
        # (benchmarks/results/kernels-2threads.md); a 1x1 layer's GEMM reads x in place
        # and stays ahead
        return "direct", (f"{kg} output channel(s) per group (< 8): im2col's GEMM "
                          f"would have {kg} row(s)")
    if device == "cpu" and outer_wins(p, direction):
        if p.G > 1:
            return "direct", (f"groups of {cg} input channels: each group's GEMM would be "
                              f"a sliver")
        if p.img_channels < 8:
            return "direct", (f"{p.img_channels} input channel(s) (< 8): a GEMM depth of "
                              f"{p.gemm_k} only")
        return "direct", (f"weight gradient of {p.img_channels} channels on {p.pixels}-pixel "
                          f"planes: per-sample GEMMs only a plane deep")
    if device == "cpu" and isa == "avx2":
        if winograd and _winograd_wins(p, direction, itemsize):
            return "winograd", (f"dense, 3 taps per dim, unit stride, "
                                f"{WINOGRAD_MIN_CHANNELS}+ channels and enough tiles: "
                                f"Winograd's fewer multiplies outweigh its transforms")
        if _blocked_wins(p, direction, itemsize):
            return "direct", ("dense layer with 3+ taps and a GEMM depth the L2 holds: the "
                              "channel-blocked kernel beats im2col + GEMM")
        if direction == "backward_weight" and _direct_wgrad_wins(p):
            return "direct", (f"{kg} output channels per group: the GEMM is too thin to "
                              f"pay for the column matrix")
    return "im2col", "im2col + GEMM: enough channels and taps for BLAS to reuse"


def _direct_wgrad_wins(p: ConvParams) -> bool:
    """Dense weight gradients where the direct kernel's per-tap dot products beat
    im2col + GEMM: the GEMM's row count is the output channels per group, and at 16 or
    fewer (32 for kernels of 27 or more taps, e.g. 3x3x3) it is too thin to pay for the
    column matrix (AVX2 machines, ``benchmarks/results/cpu-2threads.md``).  Not for 1x1
    kernels: their column matrix is the input itself, read in place by the GEMMs, where
    one dot product per weight re-reads the input for every output channel
    (``benchmarks/results/kernels-2threads.md``)."""
    kg = p.col_channels // p.G
    taps = math.prod(p.kernel_size)
    return taps > 1 and (kg <= 16 or (kg <= 32 and taps >= 27))


#: the fewest input and output channels for which 'auto' picks Winograd (AVX2)
WINOGRAD_MIN_CHANNELS = 8


#: the fewest F(2x2,3x3) tiles for which 'auto' picks Winograd when F(4x4) has too few
WINOGRAD_MIN_TILES_F2 = 192


def _winograd_wins(p: ConvParams, direction: str, itemsize: int) -> bool:
    """Dense 3-tap layers (3x3, 3x3x3 and 1-D k3; unit stride, no dilation) where
    Winograd beats the channel-blocked direct kernel and im2col (AVX2), forward and
    input gradient: at least :data:`WINOGRAD_MIN_CHANNELS` input and output channels
    (fewer leave the tile transforms nothing to amortise over) and enough tiles to
    amortise the transform of the weights over: :data:`WINOGRAD_MIN_TILES` of F(4x4), or
    else :data:`WINOGRAD_MIN_TILES_F2` of F(2x2) (ResNet's 28x28 planes at batch 1 win
    with F(2x2); its 7x7 planes at batch 8, 128 F(2x2) tiles, tie with the direct kernel
    and at batch 1 lose to everything).  Measurements (1 thread CPU time, and 2 threads
    wall time on a busy machine): ``benchmarks/results/winograd.md``.
    """
    if direction == "backward_weight" or not winograd_applies(p):
        return False
    if min(p.img_channels, p.col_channels) < WINOGRAD_MIN_CHANNELS:
        return False
    return (winograd_tiles(p, direction, 4) >= WINOGRAD_MIN_TILES
            or winograd_tiles(p, direction, 2) >= WINOGRAD_MIN_TILES_F2)


#: deepest channel reduction (channels x taps) of the channel-blocked kernel ('auto'):
#: two output blocks' weights, k x 64 bytes, fill half the 512 KiB L2 ...
BLOCKED_MAX_DEPTH = 4096
#: ... and, for kernels of 27 or more taps, the whole L2
BLOCKED_MAX_DEPTH_3D = 8191


def _blocked_wins(p: ConvParams, direction: str, itemsize: int) -> bool:
    """Dense layers where the channel-blocked direct kernel beats im2col + GEMM (AVX2).

    It wins unit-stride layers with at least 3 taps (ResNet 3x3, dilated, 1-D k9, 3-D,
    CIFAR's 8x8 planes at a training batch), forward and input gradient, and strided
    forward layers whose windows overlap (ResNet downsampling 3x3, DCGAN's 4x4 stride
    2).  im2col + GEMM stays ahead where a GEMM has the most to reuse and the blocked
    kernel the least: 1x1 and 2-tap kernels; channel reductions of GEMM depth k
    (channels x taps) over :data:`BLOCKED_MAX_DEPTH`, where a pair of output blocks'
    weights (k x 64 bytes) outgrows half the 512 KiB L2 -- or, for kernels of 27 or
    more taps (3x3x3), whose column matrix is 27 times the input, over
    :data:`BLOCKED_MAX_DEPTH_3D`, the whole L2 (3-D U-Net's 256-channel 6x6x6 layers,
    k = 6912: blocked 0.73-1.07 of PyTorch's time, im2col 1.37-1.59; C3D's 512-channel
    ones, k = 13824: blocked 1.6-3.2); and windows that do not overlap (ConvNeXt's 2x2
    stride-2 downsampling, patchify stems), whose column matrix is only a permutation
    of the input (``benchmarks/results/kernels-2threads.md``).  A strided input
    gradient (one conv per output phase) measured slower than im2col.
    """
    if direction == "backward_weight" or math.prod(p.kernel_size) < 3:
        return False
    if direction == "forward":
        overlap = any(k > s for k, s in zip(p.kernel_size, p.stride))
        ok, k = blocked_applies(p, itemsize) and overlap, p.gemm_k
    else:
        ok = blocked_applies(p, itemsize) and input_grad_is_forward(p)
        k = p.col_channels // p.G * math.prod(p.kernel_size)
    deepest = BLOCKED_MAX_DEPTH_3D if math.prod(p.kernel_size) >= 27 else BLOCKED_MAX_DEPTH
    return ok and k <= deepest


# -- planning -------------------------------------------------------------------------------

_PUBLIC = {"forward": "forward", "backward_input": "input", "backward_weight": "weight"}


def make_plan(op: str, p: ConvParams, conv_direction: str, dtype, algorithm: str,
              device: str = "cpu", public_direction: str | None = None) -> Plan:
    """The plan of one call: ``p`` checked, ``dtype`` the common dtype, ``algorithm`` the
    user's ('auto', 'im2col', 'direct'; already checked), ``conv_direction`` the conv-view
    direction.  Reads the thread count and the workspace limit (part of the cache key)."""
    dtype = np.dtype(dtype)
    if algorithm == "im2col" and not im2col_feasible(p):
        raise ValueError(
            f"{op}: algorithm='im2col' needs a column plane of at most 2**31 - 1 "
            f"elements; output {p.col_size} is too large, use algorithm='direct'")
    if device == "cpu":
        from ._ext import ISA, threads_for
        n_threads = threads_for(p.flops)
        isa = ISA
    else:
        n_threads, isa = 0, None
    if algorithm == "auto":
        alg, why = auto_choice(p, conv_direction, dtype.itemsize,
                               _runtime.get_num_threads() if device == "cpu" else 0,
                               device, isa)
        why = f"algorithm='auto': {why}"
    else:
        alg, why = algorithm, f"algorithm={algorithm!r} was asked for"
    if conv_direction == "forward":
        out = (p.N, p.col_channels) + p.col_size
    elif conv_direction == "backward_input":
        out = (p.N, p.img_channels) + p.img_size
    else:
        out = (p.col_channels, p.img_channels // p.G) + p.kernel_size
    if conv_direction != "backward_weight" and not p.batched:
        out = out[1:]
    common = dict(op=op, direction=public_direction or _PUBLIC[conv_direction],
                  out_shape=out, device=device, dtype=dtype.name,
                  conv_direction=conv_direction, params=p)
    if device == "cpu":
        alg, kernel, why, nonfinite = _cpu_kernel(p, conv_direction, alg, why,
                                                  dtype.itemsize, n_threads, isa)
    else:
        alg, kernel, why, nonfinite = _gpu_kernel(p, conv_direction, alg, why,
                                                  dtype.itemsize)
    fallback = None
    if nonfinite is not None:
        k2, why2 = nonfinite
        fallback = Plan(algorithm="im2col", kernel=k2, reason=why2, threads=n_threads,
                        workspace_bytes=_workspace(p, k2, conv_direction, dtype.itemsize,
                                                   n_threads, device),
                        geometry=p.geometry(), **common)
    return Plan(algorithm=alg, kernel=kernel, reason=why, threads=n_threads,
                workspace_bytes=_workspace(p, kernel, conv_direction, dtype.itemsize,
                                           n_threads, device),
                geometry=input_grad_as_forward(p) if kernel.endswith("_flipped")
                else p.geometry(),
                phases=input_grad_phases(p) if kernel == "blocked_phases" else None,
                nonfinite=fallback, **common)


_NONFINITE_WHY = ("NaN/Inf weights: the direct kernels add w * 0 for padded outputs, "
                  "which would put NaN where the exact sum has no such term")
_WINOGRAD_NONFINITE_WHY = ("NaN/Inf weights or input: Winograd's transforms would spread "
                           "them over whole tiles; im2col puts them where the exact sum does")


def _cpu_kernel(p, direction, alg, why, itemsize, n_threads=1, isa=None):
    """(algorithm, kernel, reason, (nonfinite kernel, reason) or None) on the CPU."""
    if alg == "winograd":
        if direction == "backward_weight":
            alg, why2 = auto_choice(p, direction, itemsize, n_threads, "cpu", isa, False)
            why += f"; the weight gradient has no Winograd kernel, so {why2}"
        else:
            tile = winograd_tile(p, direction)
            if winograd_workspace(p, tile, direction, itemsize, n_threads) >= 0:
                if direction == "forward":
                    return ("winograd", f"winograd_f{tile}",
                            why + f"; F({tile}x{tile},3x3) tiles", (
                                "im2col", _WINOGRAD_NONFINITE_WHY))
                return ("winograd", f"winograd_f{tile}_flipped",
                        why + f"; F({tile}x{tile},3x3) tiles of gy with flipped weights",
                        ("im2col", _WINOGRAD_NONFINITE_WHY))
            alg, why2 = auto_choice(p, direction, itemsize, n_threads, "cpu", isa, False)
            why += (f"; the workspace limit cannot hold Winograd's transformed weights and "
                    f"tile buffers, so {why2}")
    return (alg,) + _cpu_direct_or_im2col(p, direction, alg, why, itemsize)


def _cpu_direct_or_im2col(p, direction, alg, why, itemsize):
    """(kernel, reason, (nonfinite kernel, reason) or None) for 'direct' or 'im2col'."""
    if alg == "direct" and staging_too_big(p):
        why += ("; padding or dilation too wide for the direct kernels' staging planes: "
                "im2col instead")
        alg = "im2col"
    if alg == "im2col":
        if is_fully_connected(p):
            return ("im2col_fc", why + "; the window is the whole input: one GEMM over the "
                    "batch", None)
        if direction != "forward":
            return "im2col", why, None
        if is_pointwise(p):
            return "im2col_pointwise", why + "; 1x1, stride 1, unpadded: GEMM on x", None
        if taps_as_gemms(p):
            return ("im2col_taps", why + "; 1-D 2-tap: one GEMM per tap on shifted views",
                    ("im2col", "NaN/Inf weights must meet the padding's zeros: the column "
                               "matrix keeps them"))
        return "im2col", why, None
    for kernel, applies, what in (
            ("outer", outer_wins(p, direction), "each input value times a vector of 8 "
             "output channels' weights"),
            ("depthwise", depthwise_wins(p, direction, itemsize), "depthwise, strided or "
             "short rows: channel-interleaved blocks, one channel per vector lane")):
        if not applies:
            continue
        if _workspace(p, kernel, direction, itemsize, _runtime.get_num_threads(),
                      "cpu") <= _runtime.get_workspace_limit():
            return kernel, f"{why}; {what}", None
        why += f"; the {kernel} kernel's blocks would exceed the workspace limit"
    blocked = blocked_applies(p, itemsize)
    if direction == "forward":
        if blocked:
            return "blocked", why + "; full vectors of channels per group: blocked", None
        return "direct", why, None
    if direction == "backward_weight":
        return "direct", why, None
    nonfinite = ("im2col", _NONFINITE_WHY)
    if input_grad_is_forward(p):
        if blocked:
            return ("blocked_flipped", why + "; unit stride: a blocked forward convolution "
                    "of gy with flipped weights", nonfinite)
        return ("direct_flipped", why + "; unit stride: a forward convolution of gy with "
                "flipped weights", nonfinite)
    if blocked and input_grad_phases(p) is not None:
        return ("blocked_phases", why + "; strided: one blocked forward convolution per "
                "output phase", nonfinite)
    return "direct", why, nonfinite


def _gpu_kernel(p, direction, alg, why, itemsize):
    """(algorithm, kernel, reason, None) on the GPU."""
    if alg == "direct":
        return "direct", "direct", why, None
    if alg == "winograd":
        why += "; the GPU has no Winograd kernel yet: im2col + cuBLAS"
    return "im2col", "im2col", why + ("; direct when one sample's columns exceed the GPU "
                                      "workspace limit or an allocation fails"), None


def _workspace(p, kernel, direction, itemsize, n_threads, device) -> int:
    """Scratch bytes the kernel may take (an upper bound; im2col works within the limit)."""
    if device != "cpu":
        if kernel == "direct":
            return 0
        from . import _gpu
        return _gpu.get_workspace_limit()
    limit = _runtime.get_workspace_limit()
    if kernel.startswith("winograd"):
        tile = int(kernel[len("winograd_f")])
        return winograd_workspace(p, tile, direction, itemsize, n_threads)
    if kernel in ("im2col_pointwise", "im2col_fc"):
        return 0
    if kernel == "im2col_taps":
        return math.prod(p.kernel_size) * p.col_channels * (p.img_channels // p.G) * itemsize
    if kernel == "im2col":
        return min(limit, max(n_threads, 1) * p.gemm_k * p.pixels * itemsize)
    if kernel in ("depthwise", "outer"):
        from ._ext import kernels
        fn = kernels("depthwise").workspace_bytes if kernel == "depthwise" else \
            kernels("depthwise").outer_workspace_bytes
        return int(fn(p.geometry(), itemsize, direction, n_threads))
    if kernel in ("blocked", "blocked_flipped", "blocked_phases"):
        from ._ext import kernels
        geom = input_grad_as_forward(p) if kernel == "blocked_flipped" else p.geometry()
        return int(kernels("blocked").workspace_bytes(geom, itemsize))
    # per-channel direct: a zero-padded plane per thread (+ flipped weights)
    extra = p.col_channels * p.gemm_k * itemsize if kernel == "direct_flipped" else 0
    return max(n_threads, 1) * padded_plane(p) * itemsize + extra
