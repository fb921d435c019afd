"""CPU backend of pooling, padding, ReLU and linear: make inputs contiguous, allocate
outputs, call the compiled kernels of ``cyconv/_ext/pool.pyx``.

The GPU backend (:mod:`cyconv._gpu`) defines the same functions with the same
arguments.  Pooling arrays are batched ``(N, C, *spatial)``; the caller
(:mod:`cyconv._pool`) has checked every shape and dtype and handles unbatched inputs.
Every function returns new arrays and never writes to its inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ._ext import kernels, threads_for


def _contiguous(a):
    """``a`` as a C-contiguous array of the same shape (0-d stays 0-d, unlike
    ``np.ascontiguousarray``)."""
    if type(a) is np.ndarray and a.flags.c_contiguous and a.dtype.isnative:
        return a                                        # the common case, cheaply
    a = np.asarray(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a).reshape(np.shape(a))


def _planes(a, lead=2):
    """A contiguous 2-D view of ``a``: its first ``lead`` dims (N, C for a batched pooling
    array) as rows, the rest as columns."""
    a = _contiguous(a)
    return a.reshape(math.prod(a.shape[:lead]), math.prod(a.shape[lead:]))


# -- max pooling ---------------------------------------------------------------------------

def max_pool_forward(pp, x, return_indices):
    """Max pooling (``PoolParams`` ``pp``) of ``x`` (N, C, *in_size).

    Returns ``(y, indices)``: ``y`` (N, C, *out_size) in x's dtype and ``indices`` the
    int64 flat index of each maximum within its input plane, or None when
    ``return_indices`` is False.  NaN propagates; ties keep the first maximum.
    """
    x = _contiguous(x)                # native byte order: outputs are allocated in it
    y = np.empty((pp.N, pp.C) + pp.out_size, x.dtype)
    idx = np.empty(y.shape, np.int64) if return_indices else None
    work = y.size * math.prod(pp.kernel_size)
    kernels("pool").max_pool_forward(
        _planes(x), _planes(y),
        None if idx is None else _planes(idx), pp.geometry(), threads_for(work))
    return y, idx


def max_pool_backward(ps, gy, idx):
    """Gradient of max pooling (``PoolShape`` ``ps``): scatter-add ``gy`` (N, C, *out)
    into a zero (N, C, *in_size) array at the flat plane indices ``idx``.

    Raises ValueError when an index lies outside the input plane.
    """
    gy = _contiguous(gy)
    gx = np.empty((ps.N, ps.C) + ps.in_size, gy.dtype)
    plane = math.prod(ps.in_size)
    bad = kernels("pool").max_pool_backward(
        _planes(gy), _planes(np.asarray(idx, dtype=np.int64)),
        _planes(gx), threads_for(gx.size + gy.size))
    if bad:
        raise ValueError(f"{ps.op}: indices hold {bad} value(s) outside the input plane "
                         f"[0, {plane}) of input_size {ps.x_shape}")
    return gx


# -- average pooling -----------------------------------------------------------------------

def avg_pool_forward(pp, x):
    """Average pooling (``PoolParams`` ``pp``) of ``x`` (N, C, *in_size), with
    PyTorch's divisors (``count_include_pad``, ``divisor_override``, ceil-mode edges)."""
    x = _contiguous(x)
    y = np.empty((pp.N, pp.C) + pp.out_size, x.dtype)
    kernels("pool").avg_pool_forward(
        _planes(x), _planes(y), pp.geometry(), pp.count_include_pad,
        pp.divisor_override or 0, threads_for(y.size * math.prod(pp.kernel_size)))
    return y


def avg_pool_backward(pp, gy):
    """Gradient of :func:`avg_pool_forward` w.r.t. its input: (N, C, *in_size)."""
    gy = _contiguous(gy)
    gx = np.empty((pp.N, pp.C) + pp.in_size, gy.dtype)
    kernels("pool").avg_pool_backward(
        _planes(gy), _planes(gx), pp.geometry(), pp.count_include_pad,
        pp.divisor_override or 0,
        threads_for(gx.size + gy.size * math.prod(pp.kernel_size)))
    return gx


# -- adaptive average pooling --------------------------------------------------------------

def adaptive_avg_pool_forward(ps, x):
    """Adaptive average pooling (``PoolShape`` ``ps``) of ``x`` (N, C, *in_size) into
    (N, C, *out_size); windows [floor(o * in / out), ceil((o + 1) * in / out))."""
    x = _contiguous(x)
    y = np.empty((ps.N, ps.C) + ps.out_size, x.dtype)
    kernels("pool").adaptive_avg_pool_forward(
        _planes(x), _planes(y), ps.geometry(), threads_for(x.size))
    return y


def adaptive_avg_pool_backward(ps, gy):
    """Gradient of :func:`adaptive_avg_pool_forward` w.r.t. its input."""
    gy = _contiguous(gy)
    gx = np.empty((ps.N, ps.C) + ps.in_size, gy.dtype)
    kernels("pool").adaptive_avg_pool_backward(
        _planes(gy), _planes(gx), ps.geometry(), threads_for(gx.size + gy.size))
    return gx


# -- ReLU ----------------------------------------------------------------------------------

def relu_forward(x):
    """max(x, 0) element-wise, any shape; NaN and -0.0 pass through (as in PyTorch)."""
    x = _contiguous(x)
    y = np.empty_like(x)
    kernels("pool").relu_forward(x, y, threads_for(x.size))
    return y


def relu_backward(gy, y):
    """ReLU gradient from its output ``y``: ``gy`` where ``y > 0`` (or NaN), else 0."""
    gy = _contiguous(gy)
    y = _contiguous(y)
    gx = np.empty_like(gy)
    kernels("pool").relu_backward(gy, y, gx, threads_for(gy.size))
    return gx


# -- pad -----------------------------------------------------------------------------------

def _pad_passes(pp):
    """Groups of at most 3 consecutive dims covering every padded dim, innermost first:
    the kernels pad three dims per pass (the op is separable, one dim at a time)."""
    dims = pp.padded_dims
    passes = []
    hi = dims[-1] if dims else -1
    while dims and hi >= dims[0]:
        lo = max(hi - 2, 0)
        passes.append(tuple(range(lo, hi + 1)))
        hi = lo - 1
    return passes


def _preimage(src, n_in):
    """CSR of a source map: input index i is read by the outputs
    ``order[ptr[i]:ptr[i + 1]]``, in increasing order."""
    valid = np.flatnonzero(src >= 0)
    order = valid[np.argsort(src[valid], kind="stable")].astype(np.int64)
    ptr = np.zeros(n_in + 1, np.int64)
    np.cumsum(np.bincount(src[valid], minlength=n_in), out=ptr[1:])
    return ptr, order


def pad_forward(pp, x):
    """``pad`` (``PadParams`` ``pp``) of ``x`` (any shape): constant, reflect,
    replicate or circular; negative amounts crop."""
    cur = _contiguous(x)
    if not _pad_passes(pp):
        return cur.copy()
    mod = kernels("pool")
    for dims in _pad_passes(pp):
        B = math.prod(cur.shape[dims[-1] + 1:])
        lead = (1,) * (3 - len(dims))
        maps = [np.zeros(1, np.int64)] * len(lead) + [pp.source_map(d) for d in dims]
        in3 = lead + tuple(cur.shape[d] for d in dims)
        out_shape = list(cur.shape)
        for d in dims:
            out_shape[d] = pp.out_shape[d]
        y = np.empty(out_shape, cur.dtype)
        mod.pad_forward(_planes(cur, dims[0]), _planes(y, dims[0]),
                        *maps, in3, B, pp.value, threads_for(y.size))
        cur = y
    return cur


def pad_backward(pp, gy):
    """Gradient of :func:`pad_forward` w.r.t. its input (shape ``pp.in_shape``): each
    input element receives the sum of the gradients of every output that reads it."""
    cur = _contiguous(gy)
    if not _pad_passes(pp):
        return cur.copy()
    mod = kernels("pool")
    for dims in _pad_passes(pp):
        B = math.prod(cur.shape[dims[-1] + 1:])
        lead = (1,) * (3 - len(dims))
        csr = []
        for _ in lead:
            csr += [np.array([0, 1], np.int64), np.zeros(1, np.int64)]
        for d in dims:
            csr += list(_preimage(pp.source_map(d), pp.in_shape[d]))
        out3 = lead + tuple(cur.shape[d] for d in dims)
        in_shape = list(cur.shape)
        for d in dims:
            in_shape[d] = pp.in_shape[d]
        gx = np.empty(in_shape, cur.dtype)
        mod.pad_backward(_planes(cur, dims[0]), _planes(gx, dims[0]),
                         *csr, out3, B, threads_for(cur.size))
        cur = gx
    return cur


# -- linear --------------------------------------------------------------------------------

def linear_forward(lp, x, w, b):
    """``x @ w.T + b`` for ``x`` (*, in_features), ``w`` (out_features, in_features):
    one GEMM through NumPy's BLAS over all leading dims."""
    M = math.prod(lp.lead_shape)
    y = np.matmul(np.reshape(x, (M, lp.in_features)), w.T)
    if b is not None:
        y += b
    return y.reshape(lp.y_shape)
