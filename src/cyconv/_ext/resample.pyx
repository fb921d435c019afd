"""Resampling kernels (``interpolate``: nearest and linear, any number of dims) and their
adjoints, float32 and float64.

Interpolation is separable: :mod:`cyconv._cpu_layers` resamples one spatial dim per
pass, viewing the array as ``(A, n_in, B)`` (A = everything before the dim, B = after,
so ``B == 1`` for the last dim) and passing per-output source maps (``i0``, ``i1``,
``w0``, ``w1``, PyTorch's ``compute_source_index_and_lambda``).  Nearest passes no
weights and copies.  Passes over the last dim first and the first dim last give
PyTorch's expression exactly, e.g. for bilinear
``h0 * (w0 * x[i0h, i0w] + w1 * x[i0h, i1w]) + h1 * (w0 * x[i1h, i0w] + w1 * x[i1h, i1w])``.

Nearest resampling of all dims at once (``nearest_forward``) is one pass per plane: each
output row gathers from its source row, and an output row (or slab) that reads the same
source as the previous one is a copy of it, so upsampling by k writes each distinct row
once and copies it k - 1 times.

Its adjoint (``nearest_backward``) adds each output gradient into its source element,
plane by plane in output order.  The linear modes' adjoint is a gather through the
transposed map in CSR form (input index ``i`` reads
the outputs ``src[ptr[i]:ptr[i + 1]]`` with weights ``wt[...]``), as the GPU twin does;
threads split ``A``, so every element is written by one thread and results do not depend
on the thread count.  The caller checks the maps (every index inside the input dim).

NumPy equivalents of one pass: forward
``y = w0[:, None] * x[:, i0, :] + w1[:, None] * x[:, i1, :]`` (``y = x[:, i0, :]`` for
nearest); adjoint ``gx[:, i, :] = sum(wt[k] * gy[:, src[k], :] for k in ptr[i]:ptr[i + 1])``.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp

cnp.import_array()

from cyconv._ext._types cimport floating


cdef void lerp_row(const floating* x, floating* y, const int64_t* i0, const int64_t* i1,
                   const floating* w0, const floating* w1, Py_ssize_t n_out,
                   Py_ssize_t B) noexcept nogil:
    """One a-slice: y (n_out, B) from x (n_in, B)."""
    cdef Py_ssize_t o, b
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* yr
    cdef floating a0, a1
    if B == 1:
        if w0 == NULL:
            for o in range(n_out):
                y[o] = x[i0[o]]
        else:
            for o in range(n_out):
                y[o] = w0[o] * x[i0[o]] + w1[o] * x[i1[o]]
        return
    for o in range(n_out):
        yr = y + o * B
        r0 = x + i0[o] * B
        if w0 == NULL:
            memcpy(yr, r0, B * sizeof(floating))
            continue
        r1 = x + i1[o] * B
        a0 = w0[o]
        a1 = w1[o]
        for b in range(B):
            yr[b] = a0 * r0[b] + a1 * r1[b]


cdef void gather_row(const floating* gy, floating* gx, const int64_t* ptr, const int64_t* src,
                     const floating* wt, Py_ssize_t n_in, Py_ssize_t B) noexcept nogil:
    """One a-slice of the adjoint: gx (n_in, B) from gy (n_out, B)."""
    cdef Py_ssize_t i, k, b
    cdef floating s, w
    cdef floating* gr
    cdef const floating* r
    if B == 1:
        for i in range(n_in):
            s = 0
            for k in range(ptr[i], ptr[i + 1]):
                s = s + wt[k] * gy[src[k]]
            gx[i] = s
        return
    for i in range(n_in):
        gr = gx + i * B
        for b in range(B):
            gr[b] = 0
        for k in range(ptr[i], ptr[i + 1]):
            r = gy + src[k] * B
            w = wt[k]
            for b in range(B):
                gr[b] = gr[b] + w * r[b]


def resample_forward(const floating[:, ::1] x, floating[:, ::1] y, const int64_t[::1] i0,
                     const int64_t[::1] i1, const floating[::1] w0, const floating[::1] w1,
                     Py_ssize_t B, Py_ssize_t n_threads):
    """One pass: ``y`` (A, n_out * B) from ``x`` (A, n_in * B); ``w0``/``w1`` None for
    nearest (a copy of row ``i0[o]``)."""
    cdef Py_ssize_t A = x.shape[0], n_out = i0.shape[0], a
    if B < 1 or x.shape[1] % B or y.shape[0] != A or y.shape[1] != n_out * B:
        raise ValueError("resample kernel: inconsistent shapes")
    cdef Py_ssize_t n_in = x.shape[1] // B
    if i1.shape[0] != n_out or (w0 is not None and (w0.shape[0] != n_out
                                                   or w1.shape[0] != n_out)):
        raise ValueError("resample kernel: source maps of different lengths")
    if A == 0 or n_out == 0:
        return
    if n_in == 0:
        raise ValueError("resample kernel: empty input dim")
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef const floating* w0p = &w0[0] if w0 is not None else NULL
    cdef const floating* w1p = &w1[0] if w0 is not None else NULL
    with nogil:
        if n_threads == 1:
            for a in range(A):
                lerp_row(xp + a * n_in * B, yp + a * n_out * B, &i0[0], &i1[0], w0p, w1p,
                         n_out, B)
        else:
            for a in prange(A, schedule="static", num_threads=n_threads):
                lerp_row(xp + a * n_in * B, yp + a * n_out * B, &i0[0], &i1[0], w0p, w1p,
                         n_out, B)


def resample_backward(const floating[:, ::1] gy, floating[:, ::1] gx, const int64_t[::1] ptr,
                      const int64_t[::1] src, const floating[::1] wt, Py_ssize_t B,
                      Py_ssize_t n_threads):
    """The adjoint of one pass: ``gx`` (A, n_in * B) from ``gy`` (A, n_out * B)."""
    cdef Py_ssize_t A = gy.shape[0], n_in = ptr.shape[0] - 1, a
    if B < 1 or gy.shape[1] % B or gx.shape[0] != A or gx.shape[1] != n_in * B:
        raise ValueError("resample kernel: inconsistent shapes")
    if src.shape[0] != wt.shape[0] or ptr[n_in] != src.shape[0]:
        raise ValueError("resample kernel: inconsistent CSR map")
    cdef Py_ssize_t n_out = gy.shape[1] // B
    if A == 0 or n_in == 0:
        return
    if n_out == 0:
        gx[:, :] = 0
        return
    cdef const floating* gyp = &gy[0, 0]
    cdef floating* gxp = &gx[0, 0]
    cdef const int64_t* sp = &src[0] if src.shape[0] else NULL
    cdef const floating* wp = &wt[0] if src.shape[0] else NULL
    with nogil:
        if n_threads == 1:
            for a in range(A):
                gather_row(gyp + a * n_out * B, gxp + a * n_in * B, &ptr[0], sp, wp, n_in, B)
        else:
            for a in prange(A, schedule="static", num_threads=n_threads):
                gather_row(gyp + a * n_out * B, gxp + a * n_in * B, &ptr[0], sp, wp, n_in, B)


cdef void nearest_plane(const floating* x, floating* y, const int64_t* md, const int64_t* mh,
                        const int64_t* mw, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OD,
                        Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """One plane: y[od, oh, ow] = x[md[od], mh[oh], mw[ow]]."""
    cdef Py_ssize_t od, oh, ow, slab = OH * OW
    cdef const floating* xr
    cdef floating* yr
    for od in range(OD):
        if od > 0 and md[od] == md[od - 1]:
            memcpy(y + od * slab, y + (od - 1) * slab, slab * sizeof(floating))
            continue
        for oh in range(OH):
            yr = y + od * slab + oh * OW
            if oh > 0 and mh[oh] == mh[oh - 1]:
                memcpy(yr, yr - OW, OW * sizeof(floating))
                continue
            xr = x + (md[od] * H + mh[oh]) * W
            for ow in range(OW):
                yr[ow] = xr[mw[ow]]


def nearest_forward(const floating[:, ::1] x, floating[:, ::1] y, const int64_t[::1] md,
                    const int64_t[::1] mh, const int64_t[::1] mw, tuple in_size,
                    Py_ssize_t n_threads):
    """Nearest resampling of every plane of ``x`` (planes, D*H*W) into ``y`` (planes,
    OD*OH*OW) through the per-dim source maps ``md``, ``mh``, ``mw`` (lengths OD, OH,
    OW; every entry inside its input dim, which the caller has checked)."""
    cdef Py_ssize_t D, H, W
    D, H, W = in_size
    cdef Py_ssize_t P = x.shape[0], OD = md.shape[0], OH = mh.shape[0], OW = mw.shape[0], a
    if x.shape[1] != D * H * W or y.shape[0] != P or y.shape[1] != OD * OH * OW:
        raise ValueError("resample kernel: inconsistent shapes")
    if P == 0 or OD * OH * OW == 0:
        return
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    with nogil:
        if n_threads == 1:
            for a in range(P):
                nearest_plane(xp + a * D * H * W, yp + a * OD * OH * OW, &md[0], &mh[0],
                              &mw[0], H, W, OD, OH, OW)
        else:
            for a in prange(P, schedule="static", num_threads=n_threads):
                nearest_plane(xp + a * D * H * W, yp + a * OD * OH * OW, &md[0], &mh[0],
                              &mw[0], H, W, OD, OH, OW)


cdef void nearest_grad_plane(const floating* gy, floating* gx, const int64_t* md,
                             const int64_t* mh, const int64_t* mw, Py_ssize_t D, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t OD, Py_ssize_t OH,
                             Py_ssize_t OW) noexcept nogil:
    """One plane: gx = 0, then gx[md[od], mh[oh], mw[ow]] += gy[od, oh, ow] in output
    order."""
    cdef Py_ssize_t od, oh, ow
    cdef const floating* gr
    cdef floating* xr
    memset(gx, 0, D * H * W * sizeof(floating))
    for od in range(OD):
        for oh in range(OH):
            gr = gy + (od * OH + oh) * OW
            xr = gx + (md[od] * H + mh[oh]) * W
            for ow in range(OW):
                xr[mw[ow]] += gr[ow]


def nearest_backward(const floating[:, ::1] gy, floating[:, ::1] gx, const int64_t[::1] md,
                     const int64_t[::1] mh, const int64_t[::1] mw, tuple in_size,
                     Py_ssize_t n_threads):
    """The adjoint of :func:`nearest_forward`: ``gx`` (planes, D*H*W) from ``gy``
    (planes, OD*OH*OW); ``gx`` is overwritten."""
    cdef Py_ssize_t D, H, W
    D, H, W = in_size
    cdef Py_ssize_t P = gy.shape[0], OD = md.shape[0], OH = mh.shape[0], OW = mw.shape[0], a
    if gx.shape[1] != D * H * W or gx.shape[0] != P or gy.shape[1] != OD * OH * OW:
        raise ValueError("resample kernel: inconsistent shapes")
    if P == 0 or D * H * W == 0:
        return
    if OD * OH * OW == 0:
        gx[:, :] = 0
        return
    cdef const floating* gyp = &gy[0, 0]
    cdef floating* gxp = &gx[0, 0]
    with nogil:
        if n_threads == 1:
            for a in range(P):
                nearest_grad_plane(gyp + a * OD * OH * OW, gxp + a * D * H * W, &md[0], &mh[0],
                                   &mw[0], D, H, W, OD, OH, OW)
        else:
            for a in prange(P, schedule="static", num_threads=n_threads):
                nearest_grad_plane(gyp + a * OD * OH * OW, gxp + a * D * H * W, &md[0], &mh[0],
                                   &mw[0], D, H, W, OD, OH, OW)
