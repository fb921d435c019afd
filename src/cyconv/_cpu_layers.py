"""CPU backend of batch normalisation, the activations, softmax, dropout, interpolate and
adaptive max pooling: make inputs contiguous, allocate outputs, call the compiled
kernels of ``cyconv/_ext/norm.pyx``, ``eltwise.pyx``, ``resample.pyx`` and
``pool.pyx``.

The GPU backend (:mod:`cyconv._gpu`) defines the same functions with the same
arguments.  The callers (:mod:`cyconv._norm`, :mod:`cyconv._activation`,
:mod:`cyconv._resample`) have checked every shape and dtype.  Per-channel statistics
are float64 here (the accumulation dtype of the GPU backend there).  Every function
returns new arrays and never writes to its inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ._cpu_pool import _contiguous, _planes
from ._ext import kernels, threads_for

#: activation name -> the kernels' code (eltwise.pyx and eltwise.cu).
ACTIVATIONS = {"leaky_relu": 0, "sigmoid": 1, "tanh": 2, "gelu": 3, "gelu_tanh": 4,
               "silu": 5}
#: work per element, in FLOP-like units, for :func:`cyconv._ext.threads_for`.
_COST = (1, 20, 20, 30, 30, 20)


# -- activations ----------------------------------------------------------------------------

def activation_forward(x, op, alpha):
    """``y = f(x)`` for activation code ``op`` (``alpha``: leaky_relu's slope)."""
    x = _contiguous(x)
    y = np.empty_like(x)
    kernels("eltwise").activation_forward(x, y, op, alpha, threads_for(x.size * _COST[op]))
    return y


def activation_backward(gy, s, op, alpha):
    """The gradient of activation ``op`` from ``gy`` and ``s`` (the forward input, or the
    output for sigmoid and tanh)."""
    gy = _contiguous(gy)
    s = _contiguous(s)
    gx = np.empty_like(gy)
    kernels("eltwise").activation_backward(gy, s, gx, op, alpha,
                                           threads_for(gy.size * _COST[op]))
    return gx


def softmax_forward(x, lines, log):
    """softmax (``log``: log_softmax) of ``x`` viewed as ``lines`` = (outer, D, inner),
    over D."""
    x = _contiguous(x)
    y = np.empty_like(x)
    kernels("eltwise").softmax_forward(x, y, *lines, log, threads_for(x.size * 20))
    return y


def softmax_backward(gy, y, lines, log):
    """The gradient of softmax (log_softmax) from its output ``y``, both viewed as
    ``lines`` = (outer, D, inner)."""
    gy = _contiguous(gy)
    y = _contiguous(y)
    gx = np.empty_like(gy)
    kernels("eltwise").softmax_backward(gy, y, gx, *lines, log, threads_for(gy.size * 20))
    return gx


def dropout_forward(x, p, rng):
    """``(y, mask)``: mask = uniform samples of ``rng`` >= p (bool), y = x * mask / (1 - p)
    (x * 0 where p = 1)."""
    x = _contiguous(x)
    u = rng.random(x.shape, dtype=x.dtype.newbyteorder("="))
    y = np.empty_like(x)
    mask = np.empty(x.shape, np.bool_)
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    kernels("eltwise").dropout_forward(x.reshape(-1), u.reshape(-1), y.reshape(-1),
                                       mask.view(np.uint8).reshape(-1), p, scale,
                                       threads_for(x.size))
    return y, mask


def dropout_backward(gy, mask, p):
    """``gy * mask / (1 - p)``."""
    gy = _contiguous(gy)
    mask = _contiguous(mask)
    gx = np.empty_like(gy)
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    kernels("eltwise").dropout_backward(gy.reshape(-1), mask.view(np.uint8).reshape(-1),
                                        gx.reshape(-1), scale, threads_for(gy.size))
    return gx


# -- batch normalisation ----------------------------------------------------------------------

def _stat(v):
    """A per-channel statistic as contiguous float64."""
    return np.ascontiguousarray(v, dtype=np.float64)


def _native(v):
    """A per-channel vector of the input's dtype, contiguous and native (None passes)."""
    return None if v is None else _contiguous(v)


def _nc_threads(x3):
    return threads_for(x3.size * 4) if x3.shape[1] > 1 else 1


def batch_norm_train(x3, w, b, eps, running_mean=None, running_var=None, momentum=0.0):
    """Training forward of ``x3`` (N, C, S): ``(y, mean, invstd)``, the statistics per
    channel over N and S (float64).  ``running_mean``/``running_var`` (or None) are
    updated in place: ``(1 - momentum) * r + momentum * stat``, the variance unbiased."""
    x3 = _contiguous(x3)
    y = np.empty_like(x3)
    stats = np.empty((3, x3.shape[1]))
    rm, rv = _native(running_mean), _native(running_var)
    kernels("norm").batch_norm_train(x3, y, _native(w), _native(b), stats, eps, rm, rv,
                                     momentum, _nc_threads(x3))
    if rm is not None and rm is not running_mean:      # a strided or byte-swapped buffer
        running_mean[...] = rm
        running_var[...] = rv
    return y, stats[0], stats[2]


def batch_norm_stats(x3, eps):
    """``(mean, invstd)`` of ``x3`` (N, C, S) per channel, as the training forward
    computes them (no output)."""
    x3 = _contiguous(x3)
    stats = np.empty((3, x3.shape[1]))
    kernels("norm").batch_norm_train(x3, None, None, None, stats, eps, None, None, 0.0,
                                     _nc_threads(x3))
    return stats[0], stats[2]


def running_invstd(running_var, eps):
    """``1 / sqrt(running_var + eps)`` in the statistics' dtype (float64)."""
    return 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)


def batch_norm_apply(x3, mean, invstd, w, b):
    """Evaluation forward: ``(x3 - mean) * invstd * w + b`` per channel."""
    x3 = _contiguous(x3)
    y = np.empty_like(x3)
    kernels("norm").batch_norm_apply(x3, y, _stat(mean), _stat(invstd), _native(w),
                                     _native(b), _nc_threads(x3))
    return y


def batch_norm_backward(gy3, x3, mean, invstd, w, train):
    """``(gx, gw, gb)`` of batch norm from ``gy3`` and ``x3`` (N, C, S) and the
    statistics the forward used (None: 0 and 1, for an empty batch); ``train``: through
    the batch statistics.  ``gw``, ``gb`` have the input's dtype."""
    gy3 = _contiguous(gy3)
    x3 = _contiguous(x3)
    C = x3.shape[1]
    gx = np.empty_like(gy3)
    grads = np.empty((2, C), x3.dtype)
    mean = np.zeros(C) if mean is None else _stat(mean)
    invstd = np.ones(C) if invstd is None else _stat(invstd)
    kernels("norm").batch_norm_backward(gy3, x3, gx, mean, invstd, _native(w), train, grads,
                                        _nc_threads(x3))
    return gx, grads[0], grads[1]


# -- interpolate -------------------------------------------------------------------------------

def _passes(shape, dim, n_new):
    """(A, B, new shape) of a resampling pass over ``dim`` of an array of ``shape``."""
    A = math.prod(shape[:dim])
    B = math.prod(shape[dim + 1:])
    new = shape[:dim] + (n_new,) + shape[dim + 1:]
    return A, B, new


_ZERO = np.zeros(1, np.int64)


def interpolate_forward(rp, x):
    """``interpolate`` (``ResampleParams`` ``rp``) of ``x`` (N, C, *in_size): nearest in
    one pass over every plane, the linear modes one pass per dim, the last dim first."""
    if rp.mode == "nearest":
        x = _contiguous(x)
        y = np.empty(rp.y_shape, x.dtype)
        lead = 3 - rp.nd
        maps = [_ZERO] * lead + [m.i0 for m in rp.maps]
        kernels("resample").nearest_forward(_planes(x), _planes(y), *maps,
                                            (1,) * lead + rp.in_size,
                                            threads_for(y.size * 2))
        return y
    cur = _contiguous(x)
    mod = kernels("resample")
    for d in reversed(range(rp.nd)):
        m = rp.maps[d]
        A, B, new = _passes(cur.shape, 2 + d, m.n_out)
        y = np.empty(new, cur.dtype)
        mod.resample_forward(cur.reshape(A, m.n_in * B), y.reshape(A, m.n_out * B), m.i0,
                             m.i1, m.w0, m.w1, B,
                             threads_for(y.size * 4))
        cur = y
    return cur


def interpolate_backward(rp, gy):
    """The adjoint of :func:`interpolate_forward`: nearest in one pass over every plane,
    the linear modes one pass per dim, the first dim first."""
    if rp.mode == "nearest":
        gy = _contiguous(gy)
        gx = np.empty(rp.x_shape, gy.dtype)
        lead = 3 - rp.nd
        maps = [_ZERO] * lead + [m.i0 for m in rp.maps]
        kernels("resample").nearest_backward(_planes(gy), _planes(gx), *maps,
                                             (1,) * lead + rp.in_size,
                                             threads_for(gy.size * 2))
        return gx
    cur = _contiguous(gy)
    mod = kernels("resample")
    for d in range(rp.nd):
        m = rp.maps[d]
        A, B, new = _passes(cur.shape, 2 + d, m.n_in)
        gx = np.empty(new, cur.dtype)
        mod.resample_backward(cur.reshape(A, m.n_out * B), gx.reshape(A, m.n_in * B), m.ptr,
                              m.src, m.wt, B,
                              threads_for(cur.size * 4))
        cur = gx
    return cur


# -- adaptive max pooling ----------------------------------------------------------------------

def adaptive_max_pool_forward(ps, x):
    """Adaptive max pooling (``PoolShape`` ``ps``) of ``x`` (N, C, *in_size):
    ``(y, indices)``, the indices int64 flat positions within each input plane."""
    x = _contiguous(x)
    y = np.empty((ps.N, ps.C) + ps.out_size, x.dtype)
    idx = np.empty(y.shape, np.int64)
    kernels("pool").adaptive_max_pool_forward(_planes(x), _planes(y), _planes(idx),
                                              ps.geometry(), threads_for(x.size))
    return y, idx
