"""CPU backend: execute a plan (:mod:`cyconv._plan`): make inputs contiguous, allocate
outputs, call the compiled kernel the plan names.  Nothing is chosen here: the one
data-dependent switch, NaN/Inf weights (for Winograd also NaN/Inf inputs, which its
kernel reports), takes the plan's own ``nonfinite`` plan.

Every function here works in conv view (see :mod:`cyconv._params`): the *image* side is
a convolution's input / a transposed convolution's output, the *column* side the other.
Arrays are batched ``(N, C, *spatial)``; the caller has checked every shape.
"""
from __future__ import annotations

import numpy as np

from . import _runtime
# Pooling, padding, ReLU and linear: the rest of the CPU backend.
from ._cpu_pool import (adaptive_avg_pool_backward, adaptive_avg_pool_forward,  # noqa: F401
                        avg_pool_backward, avg_pool_forward, linear_forward,
                        max_pool_backward, max_pool_forward, pad_backward, pad_forward,
                        relu_backward, relu_forward)
# Batch norm, activations, softmax, dropout, interpolate, adaptive max pooling.
from ._cpu_layers import (activation_backward, activation_forward,  # noqa: F401
                          adaptive_max_pool_forward, batch_norm_apply, batch_norm_backward,
                          batch_norm_stats, batch_norm_train, dropout_backward,
                          dropout_forward, interpolate_backward, interpolate_forward,
                          running_invstd, softmax_backward, softmax_forward)
from ._ext import kernels, native
from ._params import Geometry

#: when a list, every executed convolution kernel's name is appended (tests compare it
#: with the plans).
trace = None


def _bias_or_empty(b, dtype):
    if b is None:
        return np.empty(0, dtype)
    return np.ascontiguousarray(b, dtype=np.dtype(dtype).newbyteorder("="))


def _finite_weights(plan, w):
    """The plan itself, or its ``nonfinite`` plan when ``w`` holds NaN or Inf."""
    if plan.nonfinite is not None and not kernels("direct").all_finite(w.reshape(-1)):
        plan = plan.nonfinite
    return _traced(plan)


def _traced(plan):
    if trace is not None:
        trace.append(plan.kernel)
    return plan


_IM2COL_PATH = {"im2col": 0, "im2col_pointwise": 1, "im2col_taps": 2}


def conv_forward(plan, x, w, b):
    """Column side from image side: a convolution's output (+ bias)."""
    p = plan.params
    x = native(x)
    w = native(w)
    N = x.shape[0]
    y = np.empty((N, p.col_channels) + p.col_size, x.dtype)
    if N == 0 or y.size == 0:
        return y
    plan = _finite_weights(plan, w)
    if plan.kernel == "im2col_fc":
        y2 = y.reshape(N, -1)
        np.matmul(x.reshape(N, -1), w.reshape(w.shape[0], -1).T, out=y2)
        if b is not None:
            y2 += b
        return y
    _runtime.pin_blas()
    args = (x.reshape(N, -1), w.reshape(w.shape[0], -1), _bias_or_empty(b, x.dtype),
            y.reshape(N, -1), plan.geometry, plan.threads, _runtime.get_workspace_limit())
    kernel = plan.kernel
    if kernel.startswith("winograd"):
        if not kernels("winograd").conv_forward(*args, int(kernel[10])):
            return conv_forward(plan.nonfinite, x, w, b)        # NaN or Inf in x
    elif kernel == "blocked" or kernel == "direct" or kernel == "depthwise":
        kernels(kernel).conv_forward(*args)
    elif kernel == "outer":
        kernels("depthwise").outer_forward(*args)
    else:
        kernels("im2col").conv_forward(*args, _IM2COL_PATH[kernel])
    return y


def conv_backward_input(plan, gy, w, b):
    """Image side from column side: a convolution's input gradient, or a transposed
    convolution's output (+ bias)."""
    p = plan.params
    gy = native(gy)
    w = native(w)
    N = gy.shape[0]
    gx = np.empty((N, p.img_channels) + p.img_size, gy.dtype)
    if N == 0 or gx.size == 0:
        if b is not None:
            gx[...] = np.reshape(b, (1, -1) + (1,) * p.nd)
        return gx
    plan = _finite_weights(plan, w)
    if plan.kernel == "im2col_fc":        # gx[n] = w^T gy[n] for the whole batch at once
        np.matmul(gy.reshape(N, -1), w.reshape(w.shape[0], -1), out=gx.reshape(N, -1))
        if b is not None:
            gx += np.reshape(b, (1, -1) + (1,) * p.nd)
        return gx
    _runtime.pin_blas()
    nt, ws, kernel = plan.threads, _runtime.get_workspace_limit(), plan.kernel
    if kernel == "blocked_phases":
        _input_grad_by_phases(plan, gy, w, b, gx, nt, ws)
        return gx
    src, dst, bias = gy.reshape(N, -1), gx.reshape(N, -1), _bias_or_empty(b, gy.dtype)
    if kernel.startswith("winograd"):   # transforms its weights from w, flipped: no copy
        if not kernels("winograd").conv_forward(src, w.reshape(w.shape[0], -1), bias, dst,
                                                plan.geometry, nt, ws, int(kernel[10]),
                                                flip=True):
            return conv_backward_input(plan.nonfinite, gy, w, b)    # NaN or Inf in gy
    elif kernel == "blocked_flipped":   # packs its weights from w as it is: no flipped copy
        kernels("blocked").conv_forward(src, w.reshape(w.shape[0], -1), bias, dst,
                                        plan.geometry, nt, ws, flip=True)
    elif kernel == "direct_flipped":
        kernels("direct").conv_forward(src, _flipped_weights(p, w), bias, dst,
                                       plan.geometry, nt, ws)
    else:
        kernels(kernel).conv_backward_input(src, w.reshape(w.shape[0], -1), bias, dst,
                                            plan.geometry, nt, ws)
    return gx


def conv_backward_weight(plan, x, gy):
    """Weight gradient (conv-view weight shape (C_col, C_img/G, *kernel))."""
    p = plan.params
    x = native(x)
    gy = native(gy)
    N = x.shape[0]
    gw = np.empty((p.col_channels, p.img_channels // p.G) + p.kernel_size, x.dtype)
    if N == 0:
        gw[...] = 0
        return gw
    _traced(plan)
    if plan.kernel == "im2col_fc":        # gw = gy^T x over the whole batch
        np.matmul(gy.reshape(N, -1).T, x.reshape(N, -1), out=gw.reshape(gw.shape[0], -1))
        return gw
    _runtime.pin_blas()
    fn = (kernels("depthwise").outer_backward_weight if plan.kernel == "outer"
          else kernels(plan.kernel).conv_backward_weight)
    fn(x.reshape(N, -1), gy.reshape(N, -1), gw.reshape(gw.shape[0], -1), plan.geometry,
       plan.threads, _runtime.get_workspace_limit())
    return gw


def _input_grad_by_phases(plan, gy, w, b, gx, nt, ws):
    """gx of a strided convolution from one blocked forward convolution per output phase
    (:func:`cyconv._plan.input_grad_phases`), each copied into its strided slice of gx
    (writing the slices straight from the kernel measured slower: each cache line of gx
    is then written by every phase).  The kernel reads each phase's taps flipped and
    transposed from a slice of w."""
    g = plan.params.geom
    G, C_img, C_col = g.G, g.C_img, g.C_col
    N = gy.shape[0]
    SD, SH, SW = g.stride
    gx5 = gx.reshape((N, C_img) + g.img)
    w5 = w.reshape((C_col, C_img // G) + g.kernel)
    bias = _bias_or_empty(b, gy.dtype)
    blk = kernels("blocked")
    pd, ph, pw = plan.phases
    for rd, nd_, td, bd in pd:
        for rh, nh, th, bh in ph:
            for rw, nw, tw, bw in pw:
                out = gx5[:, :, rd::SD, rh::SH, rw::SW]
                if not (td and th and tw):      # no tap reaches these positions
                    out[...] = 0 if b is None else np.reshape(b, (1, -1, 1, 1, 1))
                    continue
                # the phase's taps t0, t0 + s, ...: one strided slice per axis
                wp = np.ascontiguousarray(w5[:, :, td[0]::SD, th[0]::SH, tw[0]::SW])
                geom = Geometry(G, C_col, C_img, g.col, (nd_, nh, nw),
                                (len(td), len(th), len(tw)), (1, 1, 1), (bd, bh, bw),
                                (1, 1, 1)).flat()
                tmp = np.empty((N, C_img, nd_, nh, nw), gy.dtype)
                blk.conv_forward(gy.reshape(N, -1), wp.reshape(C_col, -1), bias,
                                 tmp.reshape(N, -1), geom, nt, ws, flip=True)
                out[...] = tmp


def _flipped_weights(p, w):
    """w'[g*Cg + c, k, taps] = w[g*Kg + k, c, flipped taps]: the weights of the input
    gradient as a forward convolution (the blocked kernel reads them from w directly)."""
    G = p.G
    Kg, Cg = p.col_channels // G, p.img_channels // G
    wf = w.reshape(G, Kg, Cg, -1)[..., ::-1].transpose(0, 2, 1, 3)
    return np.ascontiguousarray(wf).reshape(p.img_channels, -1)


def bias_grad(gy, axes):
    """Sum over ``axes`` in float64 blocks, returned in gy's dtype."""
    return np.add.reduce(gy, axis=axes, dtype=np.float64).astype(gy.dtype, copy=False)

