"""Batch-normalisation kernels, forward and backward, float32 and float64.

Arrays are C-contiguous ``(N, C, S)`` (S = the product of the spatial dims; the caller,
:mod:`cyconv._cpu_layers`, reshapes and checks them); per-channel vectors are
``(C,)`` float64.  Threads split the channels (``prange``): each channel's statistics
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
``m = x.mean((0, 2)); v = x.var((0, 2)); y = (x - m[:, None]) / np.sqrt(v + eps)[:, None] * w[:, None] + b[:, None]``.
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


cdef void channel_train(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, double eps, double w, double b, double* mean,
                        double* var, double* invstd) noexcept nogil:
    channel_stats(x, N, C, S, mean, var)
    invstd[0] = 1 / sqrt(var[0] + eps)
    if y != NULL:
        channel_forward(x, y, N, C, S, mean[0], invstd[0], w, b)


cdef int check_nc(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"batch_norm kernel: {name} has shape {got}, expected {want}")
    return 0


def batch_norm_train(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     const double[::1] w, const double[::1] b, double[::1] mean,
                     double[::1] var, double[::1] invstd, double eps,
                     Py_ssize_t n_threads):
    """Training forward: per channel, the batch ``mean``, biased ``var`` and ``invstd``
    (written) and, unless ``y`` is None, y = (x - mean) * invstd * w + b."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    if y is not None:
        check_nc("y", (y.shape[0], y.shape[1], y.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    for name, v in (("w", w), ("b", b), ("mean", mean), ("var", var), ("invstd", invstd)):
        check_nc(name, (v.shape[0],), (C,))
    if N * S == 0 or C == 0:
        return
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0] if y is not None else NULL
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            channel_train(xp + c * S, (yp + c * S) if yp != NULL else NULL, N, C, S, eps, w[c], b[c], &mean[c],
                          &var[c], &invstd[c])


def batch_norm_apply(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     const double[::1] mean, const double[::1] invstd, const double[::1] w,
                     const double[::1] b, Py_ssize_t n_threads):
    """Evaluation forward: y = (x - mean) * invstd * w + b with the given statistics."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    check_nc("y", (y.shape[0], y.shape[1], y.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    for name, v in (("w", w), ("b", b), ("mean", mean), ("invstd", invstd)):
        check_nc(name, (v.shape[0],), (C,))
    if N * S == 0 or C == 0:
        return
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            channel_forward(xp + c * S, yp + c * S, N, C, S, mean[c], invstd[c], w[c], b[c])


cdef void channel_backward(const floating* gy, const floating* x, floating* gx, Py_ssize_t N,
                           Py_ssize_t C, Py_ssize_t S, double m, double invstd, double w,
                           bint train, double* gw, double* gb) noexcept nogil:
    cdef Py_ssize_t n, i, off
    cdef double sg = 0, sgx = 0, cnt = <double> (N * S)
    cdef floating k1, k2, k3, fm = <floating> m
    cdef const floating* g
    cdef const floating* a
    cdef floating* o
    for n in range(N):
        vsum_dot(gy + n * C * S, x + n * C * S, S, m, &sg, &sgx)
    gb[0] = sg
    gw[0] = sgx * invstd
    if gx == NULL:
        return
    # gx = gy * k1 - (x - m) * k2 - k3
    k1 = <floating> (w * invstd)
    if train:
        k2 = <floating> (w * invstd * invstd * invstd * sgx / cnt)
        k3 = <floating> (w * invstd * sg / cnt)
    else:
        k2 = 0
        k3 = 0
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
                        const double[::1] invstd, const double[::1] w, bint train,
                        double[::1] gw, double[::1] gb, Py_ssize_t n_threads):
    """gb = sum(gy), gw = sum(gy * xhat) per channel (written to ``gw``, ``gb``) and,
    unless ``gx`` is None, the input gradient (``train``: through the batch statistics;
    else with the statistics held constant).  ``mean``/``invstd`` are those the forward
    used."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    check_nc("gy", (gy.shape[0], gy.shape[1], gy.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    if gx is not None:
        check_nc("gx", (gx.shape[0], gx.shape[1], gx.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    for name, v in (("w", w), ("gw", gw), ("gb", gb), ("mean", mean), ("invstd", invstd)):
        check_nc(name, (v.shape[0],), (C,))
    if C == 0:
        return
    if N * S == 0:
        gw[:] = 0
        gb[:] = 0
        return
    cdef const floating* gyp = &gy[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* gxp = &gx[0, 0, 0] if gx is not None else NULL
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            channel_backward(gyp + c * S, xp + c * S,
                             (gxp + c * S) if gxp != NULL else NULL, N, C, S, mean[c],
                             invstd[c], w[c], train, &gw[c], &gb[c])
