"""CPU backend: make inputs contiguous, allocate outputs, call the compiled kernels.

Kernel modules (``cyconv/_ext/im2col.pyx``, ``direct.pyx``, ``blocked.pyx``,
``pool.pyx``) are built twice on x86-64, for the baseline ISA and for AVX2+FMA; :data:`ISA` says which set this
process uses.  ``CYCONV_ISA=base`` forces the baseline, ``CYCONV_ISA=avx2`` insists on
AVX2 (and fails clearly on a CPU without it).

Every function here works in conv view (see :mod:`cyconv._params`): the *image* side is
a convolution's input / a transposed convolution's output, the *column* side the other.
Arrays are batched ``(N, C, *spatial)``; the caller has checked every shape.
"""
from __future__ import annotations

import importlib
import math
import os

import numpy as np

from . import _runtime
from ._ext import _runtime as _ext_runtime

try:
    from . import _build_info
except ImportError:  # pragma: no cover - a source tree that was never built
    _build_info = None

#: below this many FLOPs an op runs on one thread: thread start-up would cost more.
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


ISA = _choose_isa()
_PKG = "cyconv._ext.avx2" if ISA == "avx2" else "cyconv._ext"
_modules = {}


def kernels(name: str):
    """The kernel module ``name`` ('im2col', 'direct', 'pool') for this CPU's ISA."""
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = importlib.import_module(f"{_PKG}.{name}")
    return mod


def threads_for(flops: float) -> int:
    n = _runtime.get_num_threads()
    return 1 if flops < SERIAL_FLOPS else n


def _padded_plane(p) -> int:
    """Elements of the zero-padded image plane the direct kernels stage per channel."""
    g = p.geometry()
    img, col, k, st, pad, dil = g[3:6], g[6:9], g[9:12], g[12:15], g[15:18], g[18:21]
    n = 1
    for i, o, kk, s, pb, d in zip(img, col, k, st, pad, dil):
        n *= max(i + pb, (o - 1) * s + (kk - 1) * d + 1)
    return n


def _staging_too_big(p) -> bool:
    """Padding or dilation so large that the direct kernels' zero-padded staging planes
    would dwarf the data (taps that reach far into the padding read only zeros, which
    im2col never stores): 'direct' then hands over to im2col."""
    data = math.prod(p.img_size) + math.prod(p.col_size)
    return _padded_plane(p) > max(1 << 22, 16 * data)


def _kernel_module(p, algorithm):
    """The kernels for ``algorithm`` (see :func:`_staging_too_big`)."""
    if algorithm == "direct" and _staging_too_big(p):
        algorithm = "im2col"
    return kernels(algorithm)


def blocked_applies(p, itemsize: int) -> bool:
    """'direct' runs the channel-blocked kernel (``blocked.pyx``) rather than the
    per-channel one: every group has at least one full vector of input and of output
    channels (8 float32 / 4 float64), so blocking channels wastes little."""
    lanes = 32 // itemsize
    return (p.img_channels // p.G >= lanes and p.col_channels // p.G >= lanes
            and not _staging_too_big(p))


def input_grad_is_forward(p) -> bool:
    """The input gradient is a forward convolution of the output gradient (see
    :func:`_input_grad_as_forward`): unit stride, and padding no wider than the dilated
    kernel on either side."""
    g = p.geometry()
    k, st, pad, dil = g[9:12], g[12:15], g[15:18], g[18:21]
    return (all(s == 1 for s in st)
            and all(pb <= d * (kk - 1) for pb, d, kk in zip(pad, dil, k)))


def blocked_input_grad_applies(p, itemsize: int) -> bool:
    """The input gradient runs as blocked forward convolutions of the output gradient:
    one at unit stride, one per output phase when strided (:func:`_input_grad_phases`)."""
    return blocked_applies(p, itemsize) and (input_grad_is_forward(p)
                                             or _input_grad_phases(p) is not None)


def _axis_phases(n, k, s, pad):
    """One axis of :func:`_input_grad_phases`: (r, positions, taps, padding before) per
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


def _input_grad_phases(p):
    """A strided input gradient (a transposed convolution) as unit-stride ones.

    Image positions i = s*m + r of one phase r (per axis) receive gy[o] through the
    taps t = t0, t0 + s, ... only (t0 = (r + pad) mod s), with o = m + off - j for tap
    t0 + j*s, off = (r + pad - t0) / s: a unit-stride correlation of gy with those taps
    flipped, padded J - 1 - off before (J taps).  Per axis, a list of (r, positions,
    taps, padding before); None where this does not apply: dilation other than 1, or a
    phase that would need negative padding (padding wider than the kernel).  Computed
    once per ConvParams."""
    if "_input_grad_phases" not in p.__dict__:
        g = p.geometry()
        axes = None
        if all(d == 1 for d in g[18:21]):
            axes = [_axis_phases(*a) for a in zip(g[3:6], g[9:12], g[12:15], g[15:18])]
            if any(a is None for a in axes):
                axes = None
        p.__dict__["_input_grad_phases"] = axes
    return p.__dict__["_input_grad_phases"]


def _input_grad_by_phases(p, gy, w, b, gx, nt, ws):
    """gx of a strided convolution from one blocked forward convolution per output phase
    (:func:`_input_grad_phases`), each copied into its strided slice of gx (writing the
    slices straight from the kernel measured slower: each cache line of gx is then
    written by every phase).  The kernel reads each phase's taps flipped and
    transposed from a slice of w."""
    G, C_img, C_col = p.G, p.img_channels, p.col_channels
    N = gy.shape[0]
    g = p.geometry()
    SD, SH, SW = g[12:15]
    gx5 = gx.reshape((N, C_img) + g[3:6])
    w5 = w.reshape((C_col, C_img // G) + g[9:12])
    bias = _bias_or_empty(b, gy.dtype)
    blk = kernels("blocked")
    pd, ph, pw = _input_grad_phases(p)
    for rd, nd_, td, bd in pd:
        for rh, nh, th, bh in ph:
            for rw, nw, tw, bw in pw:
                out = gx5[:, :, rd::SD, rh::SH, rw::SW]
                if not (td and th and tw):      # no tap reaches these positions
                    out[...] = 0 if b is None else np.reshape(b, (1, -1, 1, 1, 1))
                    continue
                # the phase's taps t0, t0 + s, ...: one strided slice per axis
                wp = np.ascontiguousarray(w5[:, :, td[0]::SD, th[0]::SH, tw[0]::SW])
                geom = ((G, C_col, C_img) + g[6:9] + (nd_, nh, nw)
                        + (len(td), len(th), len(tw)) + (1, 1, 1) + (bd, bh, bw) + (1, 1, 1))
                tmp = np.empty((N, C_img, nd_, nh, nw), gy.dtype)
                blk.conv_forward(gy.reshape(N, -1), wp.reshape(C_col, -1), bias,
                                 tmp.reshape(N, -1), geom, nt, ws, flip=True)
                out[...] = tmp


def _input_grad_as_forward(p):
    """Geometry of gx = conv(gy, w') for a unit-stride convolution: the image and column
    sides swap and the padding before becomes ``d*(k-1) - pad``."""
    g = p.geometry()
    G, C_img, C_col = g[0:3]
    k, pad, dil = g[9:12], g[15:18], g[18:21]
    flipped = tuple(d * (kk - 1) - pb for d, kk, pb in zip(dil, k, pad))
    return (G, C_col, C_img) + g[6:9] + g[3:6] + k + (1, 1, 1) + flipped + dil


def _flipped_weights(p, w):
    """w'[g*Cg + c, k, taps] = w[g*Kg + k, c, flipped taps]: the weights of
    :func:`_input_grad_as_forward` (the blocked kernel reads them from w directly)."""
    G = p.G
    Kg, Cg = p.col_channels // G, p.img_channels // G
    wf = w.reshape(G, Kg, Cg, -1)[..., ::-1].transpose(0, 2, 1, 3)
    return np.ascontiguousarray(wf).reshape(p.img_channels, -1)


def _launch_args(p, dtype):
    _runtime.pin_blas()
    nt = threads_for(p.flops)
    return p.geometry(), nt, _runtime.get_workspace_limit()


def native(a):
    """C-contiguous, native byte order (inputs are never modified: this copies if needed)."""
    a = np.ascontiguousarray(a)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _bias_or_empty(b, dtype):
    if b is None:
        return np.empty(0, dtype)
    return np.ascontiguousarray(b, dtype=np.dtype(dtype).newbyteorder("="))


def conv_forward(p, x, w, b, algorithm):
    """Column side from image side: a convolution's output (+ bias)."""
    x = native(x)
    w = native(w)
    N = x.shape[0]
    y = np.empty((N, p.col_channels) + p.col_size, x.dtype)
    if N == 0 or y.size == 0:
        return y
    geom, nt, ws = _launch_args(p, x.dtype)
    if algorithm == "direct" and blocked_applies(p, x.dtype.itemsize):
        algorithm = "blocked"
    _kernel_module(p, algorithm).conv_forward(x.reshape(N, -1), w.reshape(w.shape[0], -1),
                                    _bias_or_empty(b, x.dtype), y.reshape(N, -1),
                                    geom, nt, ws)
    return y


def conv_backward_input(p, gy, w, b, algorithm):
    """Image side from column side: a convolution's input gradient, or a transposed
    convolution's output (+ bias)."""
    gy = native(gy)
    w = native(w)
    N = gy.shape[0]
    gx = np.empty((N, p.img_channels) + p.img_size, gy.dtype)
    if N == 0 or gx.size == 0:
        if b is not None:
            gx[...] = np.reshape(b, (1, -1) + (1,) * p.nd)
        return gx
    geom, nt, ws = _launch_args(p, gy.dtype)
    if algorithm == "direct" and not kernels("direct").all_finite(w.reshape(-1)):
        # the direct kernels add w * 0 for outputs beyond the real ones (a zero-padded
        # output gradient, a wide grid): with a NaN or Inf weight that is NaN where the
        # exact sum has no such term.  im2col sums over real outputs only.
        algorithm = "im2col"
    if (algorithm == "direct" and input_grad_is_forward(p)
            and not _staging_too_big(p)):
        # the forward kernels are the faster ones: run gx = conv(gy, flipped w)
        # (the blocked kernel packs its weights from w as it is: no flipped copy)
        geom = _input_grad_as_forward(p)
        src, dst, bias = gy.reshape(N, -1), gx.reshape(N, -1), _bias_or_empty(b, gy.dtype)
        if blocked_applies(p, gy.dtype.itemsize):
            kernels("blocked").conv_forward(src, w.reshape(w.shape[0], -1), bias, dst, geom,
                                            nt, ws, flip=True)
        else:
            kernels("direct").conv_forward(src, _flipped_weights(p, w), bias, dst, geom, nt,
                                           ws)
        return gx
    if algorithm == "direct" and blocked_input_grad_applies(p, gy.dtype.itemsize):
        _input_grad_by_phases(p, gy, w, b, gx, nt, ws)
        return gx
    _kernel_module(p, algorithm).conv_backward_input(gy.reshape(N, -1), w.reshape(w.shape[0], -1),
                                           _bias_or_empty(b, gy.dtype), gx.reshape(N, -1),
                                           geom, nt, ws)
    return gx


def conv_backward_weight(p, x, gy, algorithm):
    """Weight gradient (conv-view weight shape (C_col, C_img/G, *kernel))."""
    x = native(x)
    gy = native(gy)
    N = x.shape[0]
    gw = np.empty((p.col_channels, p.img_channels // p.G) + p.kernel_size, x.dtype)
    if N == 0:
        gw[...] = 0
        return gw
    geom, nt, ws = _launch_args(p, x.dtype)
    _kernel_module(p, algorithm).conv_backward_weight(x.reshape(N, -1), gy.reshape(N, -1),
                                            gw.reshape(gw.shape[0], -1), geom, nt, ws)
    return gw


def bias_grad(gy, axes):
    """Sum over ``axes`` in float64 blocks, returned in gy's dtype."""
    return np.add.reduce(gy, axis=axes, dtype=np.float64).astype(gy.dtype, copy=False)


# Pooling, padding, ReLU and linear: the rest of the CPU backend (after the helpers above,
# which they use).
from ._cpu_pool import (adaptive_avg_pool_backward, adaptive_avg_pool_forward,  # noqa: E402
                        avg_pool_backward, avg_pool_forward, linear_forward,
                        max_pool_backward, max_pool_forward, pad_backward, pad_forward,
                        relu_backward, relu_forward)
