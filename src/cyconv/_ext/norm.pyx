"""Batch-normalisation kernels, forward and backward, float32 and float64.

Arrays are C-contiguous ``(N, C, S)`` (S = the product of the spatial dims; the caller,
:mod:`cyconv._cpu_layers`, reshapes and checks them); the per-channel statistics
(mean, invstd) are float64, the affine vectors, running statistics and parameter
gradients ``(C,)`` arrays of the input's dtype (None: no affine transform, no running
statistics).  Threads split the channels (``prange``): each channel's statistics
and outputs are computed by one thread, in a fixed order, so results are bit-identical
for any thread count.  Sums run in float64 (``_vmath.h``'s vectorised reductions).

Notes
-----
Training forward, per channel c over its n = N * S values (two passes over the
channel's data for the statistics, one to write; the channel stays in cache)::

    mean = sum(x) / n                var = sum((x - mean)**2) / n     (biased)
    invstd = 1 / sqrt(var + eps)     y = (x - mean) * (invstd * w) + b

Evaluation forward: the same last line with the caller's mean and invstd (from the
running statistics).  Backward, with xhat = (x - mean) * invstd::

    gb = sum(gy)        gw = sum(gy * xhat) = invstd * sum(gy * (x - mean))
    training:    gx = w * invstd * (gy - gb / n - xhat * gw / n)
    evaluation:  gx = w * invstd * gy

NumPy equivalent of the training forward:
``m = x.mean((0, 2))[:, None]; v = x.var((0, 2))[:, None]``,
``y = (x - m) / np.sqrt(v + eps) * w[:, None] + b[:, None]``.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np
cimport numpy as cnp

cnp.import_array()

from cyconv._ext._types cimport floating

cdef extern from "_vmath.h" nogil:
    double cy_f_sum(const float* a, Py_ssize_t n)
    double cy_d_sum(const double* a, Py_ssize_t n)
    double cy_f_sqdev(const float* a, Py_ssize_t n, double m)
    double cy_d_sqdev(const double* a, Py_ssize_t n, double m)
    void cy_f_sum_dot(const float* g, const float* a, Py_ssize_t n, double m, double* sg,
                      double* sgx)
    void cy_d_sum_dot(const double* g, const double* a, Py_ssize_t n, double m, double* sg,
                      double* sgx)


cdef inline double vsum(const floating* a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cy_f_sum(a, n)
    else:
        return cy_d_sum(a, n)


cdef inline double vsqdev(const floating* a, Py_ssize_t n, double m) noexcept nogil:
    if floating is float:
        return cy_f_sqdev(a, n, m)
    else:
        return cy_d_sqdev(a, n, m)


cdef inline void vsum_dot(const floating* g, const floating* a, Py_ssize_t n, double m,
                          double* sg, double* sgx) noexcept nogil:
    if floating is float:
        cy_f_sum_dot(g, a, n, m, sg, sgx)
    else:
        cy_d_sum_dot(g, a, n, m, sg, sgx)


cdef inline void affine_row(const floating* x, floating* y, Py_ssize_t n, floating m,
                            floating scale, floating shift) noexcept nogil:
    """y = (x - m) * scale + shift."""
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = (x[i] - m) * scale + shift


cdef void channel_stats(const floating* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                        double* mean, double* var) noexcept nogil:
    """Mean and biased variance of one channel (x points at its first row)."""
    cdef Py_ssize_t n
    cdef double s = 0, q = 0, m
    for n in range(N):
        s += vsum(x + n * C * S, S)
    m = s / (N * S)
    for n in range(N):
        q += vsqdev(x + n * C * S, S, m)
    mean[0] = m
    var[0] = q / (N * S)


cdef void channel_forward(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                          Py_ssize_t S, double m, double invstd, double w,
                          double b) noexcept nogil:
    cdef Py_ssize_t n
    for n in range(N):
        affine_row(x + n * C * S, y + n * C * S, S, <floating> m, <floating> (invstd * w),
                   <floating> b)


cdef inline double at(const floating* v, Py_ssize_t c, double fill) noexcept nogil:
    """v[c] in double, ``fill`` for a NULL vector."""
    return fill if v == NULL else <double> v[c]


cdef void channel_train(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, Py_ssize_t c, double eps, const floating* w,
                        const floating* b, double* stats, floating* rm, floating* rv,
                        double momentum) noexcept nogil:
    """Channel c: statistics into stats[c], stats[C + c], stats[2C + c] (mean, var,
    invstd), the output, and the running statistics' update (unbiased variance)."""
    cdef double n = <double> (N * S)
    channel_stats(x, N, C, S, &stats[c], &stats[C + c])
    stats[2 * C + c] = 1 / sqrt(stats[C + c] + eps)
    if y != NULL:
        channel_forward(x, y, N, C, S, stats[c], stats[2 * C + c], at(w, c, 1), at(b, c, 0))
    if rm != NULL:
        rm[c] = <floating> (momentum * stats[c] + (1 - momentum) * rm[c])
        rv[c] = <floating> (momentum * stats[C + c] * n / (n - 1) + (1 - momentum) * rv[c])


cdef int check_nc(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"batch_norm kernel: {name} has shape {got}, expected {want}")
    return 0


cdef inline const floating* ptr_or_null(const floating[::1] v, Py_ssize_t C,
                                        str name) except? NULL:
    if v is None:
        return NULL
    check_nc(name, (v.shape[0],), (C,))
    return &v[0]


def batch_norm_train(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     const floating[::1] w, const floating[::1] b, double[:, ::1] stats,
                     double eps, floating[::1] running_mean, floating[::1] running_var,
                     double momentum, Py_ssize_t n_threads):
    """Training forward: per channel c the batch mean, biased variance and invstd
    (written to ``stats[0:3, c]``) and, unless ``y`` is None,
    y = (x - mean) * invstd * w + b (w, b None: 1 and 0).  ``running_mean`` and
    ``running_var`` (or None) are updated in place with ``momentum`` and the unbiased
    variance; N * S must be >= 2 then."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    if y is not None:
        check_nc("y", (y.shape[0], y.shape[1], y.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    check_nc("stats", (stats.shape[0], stats.shape[1]), (3, C))
    cdef const floating* wp = ptr_or_null(w, C, "w")
    cdef const floating* bp = ptr_or_null(b, C, "b")
    cdef floating* rmp = <floating*> ptr_or_null(running_mean, C, "running_mean")
    cdef floating* rvp = <floating*> ptr_or_null(running_var, C, "running_var")
    if (rmp == NULL) != (rvp == NULL):
        raise ValueError("batch_norm kernel: give both running statistics or neither")
    if N * S == 0 or C == 0:
        return
    if rmp != NULL and N * S < 2:
        raise ValueError("batch_norm kernel: the unbiased variance needs N * S >= 2")
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0] if y is not None else NULL
    cdef double* sp = &stats[0, 0]
    with nogil:
        if n_threads == 1:
            for c in range(C):
                channel_train(xp + c * S, (yp + c * S) if yp != NULL else NULL, N, C, S, c,
                              eps, wp, bp, sp, rmp, rvp, momentum)
        else:
            for c in prange(C, schedule="dynamic", num_threads=n_threads):
                channel_train(xp + c * S, (yp + c * S) if yp != NULL else NULL, N, C, S, c,
                              eps, wp, bp, sp, rmp, rvp, momentum)


cdef void channel_apply(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, Py_ssize_t c, const double* mean, const double* invstd,
                        const floating* w, const floating* b) noexcept nogil:
    channel_forward(x, y, N, C, S, mean[c], invstd[c], at(w, c, 1), at(b, c, 0))


def batch_norm_apply(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     const double[::1] mean, const double[::1] invstd, const floating[::1] w,
                     const floating[::1] b, Py_ssize_t n_threads):
    """Evaluation forward: y = (x - mean) * invstd * w + b with the given statistics."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    check_nc("y", (y.shape[0], y.shape[1], y.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    check_nc("mean", (mean.shape[0],), (C,))
    check_nc("invstd", (invstd.shape[0],), (C,))
    cdef const floating* wp = ptr_or_null(w, C, "w")
    cdef const floating* bp = ptr_or_null(b, C, "b")
    if N * S == 0 or C == 0:
        return
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    with nogil:
        if n_threads == 1:
            for c in range(C):
                channel_apply(xp + c * S, yp + c * S, N, C, S, c, &mean[0], &invstd[0], wp, bp)
        else:
            for c in prange(C, schedule="dynamic", num_threads=n_threads):
                channel_apply(xp + c * S, yp + c * S, N, C, S, c, &mean[0], &invstd[0], wp, bp)


cdef void channel_backward(const floating* gy, const floating* x, floating* gx, Py_ssize_t N,
                           Py_ssize_t C, Py_ssize_t S, Py_ssize_t c, const double* mean,
                           const double* invstd_v, const floating* wv, bint train,
                           floating* grads) noexcept nogil:
    """Channel c: grads[c] = sum(gy * xhat), grads[C + c] = sum(gy), and gx."""
    cdef Py_ssize_t n, i, off
    cdef double sg = 0, sgx = 0, cnt = <double> (N * S), m = mean[c], invstd = invstd_v[c]
    cdef double w = at(wv, c, 1)
    cdef floating k1, k2, k3, fm = <floating> m
    cdef const floating* g
    cdef const floating* a
    cdef floating* o
    for n in range(N):
        vsum_dot(gy + n * C * S, x + n * C * S, S, m, &sg, &sgx)
    grads[c] = <floating> (sgx * invstd)
    grads[C + c] = <floating> sg
    # gx = gy * k1 - (x - m) * k2 - k3
    k1 = <floating> (w * invstd)
    if train:
        k2 = <floating> (w * invstd * invstd * invstd * sgx / cnt)
        k3 = <floating> (w * invstd * sg / cnt)
    for n in range(N):
        off = n * C * S
        g = gy + off
        a = x + off
        o = gx + off
        if train:
            for i in range(S):
                o[i] = g[i] * k1 - (a[i] - fm) * k2 - k3
        else:
            for i in range(S):
                o[i] = g[i] * k1


def batch_norm_backward(const floating[:, :, ::1] gy, const floating[:, :, ::1] x,
                        floating[:, :, ::1] gx, const double[::1] mean,
                        const double[::1] invstd, const floating[::1] w, bint train,
                        floating[:, ::1] grads, Py_ssize_t n_threads):
    """``grads[0] = sum(gy * xhat)`` and ``grads[1] = sum(gy)`` per channel, and the input
    gradient ``gx`` (``train``: through the batch statistics; else with the statistics
    held constant).  ``mean``/``invstd`` are those the forward used; w None is 1."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    check_nc("gy", (gy.shape[0], gy.shape[1], gy.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    check_nc("gx", (gx.shape[0], gx.shape[1], gx.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    check_nc("grads", (grads.shape[0], grads.shape[1]), (2, C))
    check_nc("mean", (mean.shape[0],), (C,))
    check_nc("invstd", (invstd.shape[0],), (C,))
    cdef const floating* wp = ptr_or_null(w, C, "w")
    if C == 0:
        return
    if N * S == 0:
        grads[:, :] = 0
        return
    cdef const floating* gyp = &gy[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* gxp = &gx[0, 0, 0]
    with nogil:
        if n_threads == 1:
            for c in range(C):
                channel_backward(gyp + c * S, xp + c * S, gxp + c * S, N, C, S, c, &mean[0],
                                 &invstd[0], wp, train, &grads[0, 0])
        else:
            for c in prange(C, schedule="dynamic", num_threads=n_threads):
                channel_backward(gyp + c * S, xp + c * S, gxp + c * S, N, C, S, c, &mean[0],
                                 &invstd[0], wp, train, &grads[0, 0])
