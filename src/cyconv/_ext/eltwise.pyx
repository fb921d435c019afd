"""Activation, softmax and dropout kernels, forward and backward, float32 and float64.

Element-wise kernels (``activation_*``, ``dropout_*``) view their arrays as flat,
C-contiguous vectors of one native dtype (the callers, :mod:`cyconv._cpu_layers`, make
them so) and split them into blocks of ``BLOCK`` elements; softmax views its input as
``(outer, D, inner)`` (the reduced dim in the middle) and splits rows (``inner == 1``) or
``(outer, column chunk)`` items.  Every output element is computed by one thread from
its own inputs, so results are bit-identical for any thread count.

The element math is in ``_vmath.h`` (branch-free float32 polynomials that the compiler
vectorises; libm for float64); the formulas are PyTorch's (see that header).

NumPy equivalents: ``activation_forward(x, y, SIGMOID, 0, t)`` is
``y[...] = 1 / (1 + np.exp(-x))``; ``softmax_forward(x, y, False, t)`` is
``e = np.exp(x - x.max(1, keepdims=True)); y[...] = e / e.sum(1, keepdims=True)``.
"""
from cython.parallel cimport prange
from libc.math cimport log, INFINITY
from libc.stdint cimport uint8_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

from cyconv._ext._types cimport floating

cdef extern from "_vmath.h" nogil:
    float cy_expf(float x)
    float cy_tanhf(float x)
    double cy_expd(double x)
    double cy_tanhd(double x)
    float cy_sigmoid_f(float x)
    double cy_sigmoid_d(double x)
    float cy_gelu_f(float x)
    double cy_gelu_d(double x)
    float cy_gelu_tanh_f(float x)
    double cy_gelu_tanh_d(double x)
    float cy_silu_f(float x)
    double cy_silu_d(double x)
    float cy_gelu_grad_f(float gy, float x)
    double cy_gelu_grad_d(double gy, double x)
    float cy_gelu_tanh_grad_f(float gy, float x)
    double cy_gelu_tanh_grad_d(double gy, double x)
    float cy_silu_grad_f(float gy, float x)
    double cy_silu_grad_d(double gy, double x)
    float cy_f_max(const float* a, Py_ssize_t n)
    double cy_d_max(const double* a, Py_ssize_t n)
    float cy_f_exp_sum(const float* x, float* y, Py_ssize_t n, float m)
    double cy_d_exp_sum(const double* x, double* y, Py_ssize_t n, double m)
    float cy_f_dotf(const float* a, const float* b, Py_ssize_t n)
    double cy_d_dotf(const double* a, const double* b, Py_ssize_t n)
    void cy_f_max_into(float* m, const float* x, Py_ssize_t n)
    void cy_d_max_into(double* m, const double* x, Py_ssize_t n)
    void cy_f_exp_acc(const float* x, const float* m, float* s, float* y, Py_ssize_t n)
    void cy_d_exp_acc(const double* x, const double* m, double* s, double* y, Py_ssize_t n)

cdef enum:
    # Elements per work item of the element-wise kernels, and columns per softmax item.
    BLOCK = 16384
    CHUNK = 256

# activation codes (cyconv._cpu_layers.ACTIVATIONS)
cdef enum:
    LEAKY_RELU = 0
    SIGMOID = 1
    TANH = 2
    GELU = 3
    GELU_TANH = 4
    SILU = 5
    N_ACTIVATIONS = 6


# ---------------------------------------------------------------------------------------
# Element math, dispatched on the element type
# ---------------------------------------------------------------------------------------

cdef inline floating f_exp(floating x) noexcept nogil:
    if floating is float:
        return cy_expf(x)
    else:
        return cy_expd(x)


cdef inline floating f_max(const floating* a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cy_f_max(a, n)
    else:
        return cy_d_max(a, n)


cdef inline floating exp_sum(const floating* x, floating* y, Py_ssize_t n,
                             floating m) noexcept nogil:
    """sum(exp(x - m)), storing the exponentials in y unless it is NULL."""
    if floating is float:
        return cy_f_exp_sum(x, y, n, m)
    else:
        return cy_d_exp_sum(x, y, n, m)


cdef inline floating dotf(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum(a * b), or sum(a) for b NULL."""
    if floating is float:
        return cy_f_dotf(a, b, n)
    else:
        return cy_d_dotf(a, b, n)


cdef inline void max_into(floating* m, const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        cy_f_max_into(m, x, n)
    else:
        cy_d_max_into(m, x, n)


cdef inline void exp_acc(const floating* x, const floating* m, floating* s, floating* y,
                         Py_ssize_t n) noexcept nogil:
    if floating is float:
        cy_f_exp_acc(x, m, s, y, n)
    else:
        cy_d_exp_acc(x, m, s, y, n)


cdef void act_block(const floating* x, floating* y, Py_ssize_t n, int op,
                    floating alpha) noexcept nogil:
    """y[0:n] = f(x[0:n]) for activation ``op`` (one tight loop per op)."""
    cdef Py_ssize_t i
    cdef floating v
    if op == LEAKY_RELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > 0 else v * alpha
    elif op == SIGMOID:
        for i in range(n):
            y[i] = cy_sigmoid_f(x[i]) if floating is float else cy_sigmoid_d(x[i])
    elif op == TANH:
        for i in range(n):
            y[i] = cy_tanhf(x[i]) if floating is float else cy_tanhd(x[i])
    elif op == GELU:
        for i in range(n):
            y[i] = cy_gelu_f(x[i]) if floating is float else cy_gelu_d(x[i])
    elif op == GELU_TANH:
        for i in range(n):
            y[i] = cy_gelu_tanh_f(x[i]) if floating is float else cy_gelu_tanh_d(x[i])
    elif op == SILU:
        for i in range(n):
            y[i] = cy_silu_f(x[i]) if floating is float else cy_silu_d(x[i])


cdef void act_grad_block(const floating* gy, const floating* s, floating* gx, Py_ssize_t n,
                         int op, floating alpha) noexcept nogil:
    """gx[0:n] = the gradient of activation ``op`` from ``gy`` and ``s``: the forward
    input (leaky_relu, gelu, gelu_tanh, silu) or its output (sigmoid, tanh)."""
    cdef Py_ssize_t i
    cdef floating v
    if op == LEAKY_RELU:
        for i in range(n):
            gx[i] = gy[i] if s[i] > 0 else gy[i] * alpha
    elif op == SIGMOID:
        for i in range(n):
            v = s[i]
            gx[i] = gy[i] * (1 - v) * v
    elif op == TANH:
        for i in range(n):
            v = s[i]
            gx[i] = gy[i] * (1 - v * v)
    elif op == GELU:
        for i in range(n):
            gx[i] = (cy_gelu_grad_f(gy[i], s[i]) if floating is float
                     else cy_gelu_grad_d(gy[i], s[i]))
    elif op == GELU_TANH:
        for i in range(n):
            gx[i] = (cy_gelu_tanh_grad_f(gy[i], s[i]) if floating is float
                     else cy_gelu_tanh_grad_d(gy[i], s[i]))
    elif op == SILU:
        for i in range(n):
            gx[i] = (cy_silu_grad_f(gy[i], s[i]) if floating is float
                     else cy_silu_grad_d(gy[i], s[i]))


cdef int check_flat(str op, cnp.ndarray a, cnp.ndarray out) except -1:
    """A kernel's input ``a`` and its output ``out``: C-contiguous, native float32 or
    float64 (both the same), of one size, ``out`` writeable."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE:
        raise TypeError(f"{op} kernel: float32 or float64 arrays, got {a.dtype}")
    if (cnp.PyArray_TYPE(out) != t or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_IS_C_CONTIGUOUS(out) or not cnp.PyArray_ISNOTSWAPPED(a)
            or not cnp.PyArray_ISNOTSWAPPED(out)
            or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(out)):
        raise ValueError(f"{op} kernel: arrays must be C-contiguous, of one native dtype "
                         f"and size; got {a.dtype.str} {(<object> a).shape} and "
                         f"{out.dtype.str} {(<object> out).shape}")
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError(f"{op} kernel: the output array is read-only")
    return 0


cdef void act_flat(const floating* x, floating* y, Py_ssize_t n, int op, floating alpha,
                   Py_ssize_t n_threads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK, b
    if n_threads == 1:           # no parallel region for a serial call (small ops)
        act_block(x, y, n, op, alpha)
        return
    for b in prange(nb, schedule="dynamic", num_threads=n_threads):
        act_block(x + b * BLOCK, y + b * BLOCK, min(BLOCK, n - b * BLOCK), op, alpha)


cdef void act_grad_flat(const floating* gy, const floating* s, floating* gx, Py_ssize_t n,
                        int op, floating alpha, Py_ssize_t n_threads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK, b
    if n_threads == 1:
        act_grad_block(gy, s, gx, n, op, alpha)
        return
    for b in prange(nb, schedule="dynamic", num_threads=n_threads):
        act_grad_block(gy + b * BLOCK, s + b * BLOCK, gx + b * BLOCK,
                       min(BLOCK, n - b * BLOCK), op, alpha)


cdef int check_op(int op) except -1:
    if op < 0 or op >= N_ACTIVATIONS:
        raise ValueError(f"activation kernel: unknown activation code {op}")
    return 0


def activation_forward(cnp.ndarray x, cnp.ndarray y, int op, double alpha,
                       Py_ssize_t n_threads):
    """y = f(x) element-wise for activation code ``op`` (``alpha``: leaky_relu's slope).

    Takes ndarrays rather than typed memoryviews: a small activation's cost is its call
    overhead, and acquiring two buffers costs as much as the arithmetic.
    """
    check_op(op)
    check_flat("activation", x, y)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        with nogil:
            act_flat(<const float*> cnp.PyArray_DATA(x), <float*> cnp.PyArray_DATA(y), n, op,
                     <float> alpha, n_threads)
    else:
        with nogil:
            act_flat(<const double*> cnp.PyArray_DATA(x), <double*> cnp.PyArray_DATA(y), n,
                     op, alpha, n_threads)


def activation_backward(cnp.ndarray gy, cnp.ndarray s, cnp.ndarray gx, int op, double alpha,
                        Py_ssize_t n_threads):
    """gx = the gradient of activation ``op`` from ``gy`` and ``s`` (the forward input,
    or its output for sigmoid and tanh)."""
    check_op(op)
    check_flat("activation", gy, gx)
    check_flat("activation", s, gx)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(gy)
    if cnp.PyArray_TYPE(gy) == cnp.NPY_FLOAT:
        with nogil:
            act_grad_flat(<const float*> cnp.PyArray_DATA(gy), <const float*> cnp.PyArray_DATA(s),
                          <float*> cnp.PyArray_DATA(gx), n, op, <float> alpha, n_threads)
    else:
        with nogil:
            act_grad_flat(<const double*> cnp.PyArray_DATA(gy),
                          <const double*> cnp.PyArray_DATA(s),
                          <double*> cnp.PyArray_DATA(gx), n, op, alpha, n_threads)


# ---------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------

cdef void dropout_block(const floating* x, const floating* u, floating* y, uint8_t* mask,
                        Py_ssize_t n, floating p, floating scale) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint keep
    for i in range(n):
        keep = u[i] >= p
        mask[i] = keep
        y[i] = x[i] * (scale if keep else 0)


cdef void dropout_grad_block(const floating* gy, const uint8_t* mask, floating* gx,
                             Py_ssize_t n, floating scale) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = gy[i] * (scale if mask[i] else 0)


def dropout_forward(const floating[::1] x, const floating[::1] u, floating[::1] y,
                    uint8_t[::1] mask, double p, double scale, Py_ssize_t n_threads):
    """mask = u >= p; y = x * (mask * scale) (PyTorch's ``input * noise``: a dropped NaN
    or Inf gives NaN).  ``u`` holds uniform samples from [0, 1)."""
    cdef Py_ssize_t n = x.shape[0], nb = (n + BLOCK - 1) // BLOCK, b
    if u.shape[0] != n or y.shape[0] != n or mask.shape[0] != n:
        raise ValueError("dropout kernel: arrays of different sizes")
    if n == 0:
        return
    cdef floating fp = <floating> p, fs = <floating> scale
    with nogil:
        for b in prange(nb, schedule="dynamic", num_threads=n_threads):
            dropout_block(&x[b * BLOCK], &u[b * BLOCK], &y[b * BLOCK], &mask[b * BLOCK],
                          min(BLOCK, n - b * BLOCK), fp, fs)


def dropout_backward(const floating[::1] gy, const uint8_t[::1] mask, floating[::1] gx,
                     double scale, Py_ssize_t n_threads):
    """gx = gy * (mask * scale)."""
    cdef Py_ssize_t n = gy.shape[0], nb = (n + BLOCK - 1) // BLOCK, b
    if mask.shape[0] != n or gx.shape[0] != n:
        raise ValueError("dropout kernel: arrays of different sizes")
    if n == 0:
        return
    cdef floating fs = <floating> scale
    with nogil:
        for b in prange(nb, schedule="dynamic", num_threads=n_threads):
            dropout_grad_block(&gy[b * BLOCK], &mask[b * BLOCK], &gx[b * BLOCK],
                               min(BLOCK, n - b * BLOCK), fs)


# ---------------------------------------------------------------------------------------
# Softmax and log-softmax over the middle dim of (outer, D, inner)
# ---------------------------------------------------------------------------------------

cdef void softmax_row(const floating* x, floating* y, Py_ssize_t D, bint logsm) noexcept nogil:
    """One row (inner == 1): y = softmax(x) or log_softmax(x) over D contiguous values."""
    cdef Py_ssize_t d
    cdef floating m = f_max(x, D), s, c
    if logsm:
        c = m + <floating> log(exp_sum(x, <floating*> NULL, D, m))
        for d in range(D):
            y[d] = x[d] - c
    else:
        c = 1 / exp_sum(x, y, D, m)
        for d in range(D):
            y[d] = y[d] * c


cdef void softmax_cols(const floating* x, floating* y, Py_ssize_t D, Py_ssize_t inner,
                       Py_ssize_t w, bint logsm) noexcept nogil:
    """``w`` <= CHUNK adjacent columns of one (D, inner) slab; x, y point at the first.
    Three sweeps over the D rows: column maxima, sums of exponentials (stored in y for
    softmax), the output."""
    cdef floating m[CHUNK]
    cdef floating s[CHUNK]
    cdef Py_ssize_t d, j
    cdef const floating* xr
    cdef floating* yr
    for j in range(w):
        m[j] = -INFINITY
        s[j] = 0
    for d in range(D):
        max_into(m, x + d * inner, w)
    for d in range(D):
        exp_acc(x + d * inner, m, s, <floating*> NULL if logsm else y + d * inner, w)
    for j in range(w):
        s[j] = (m[j] + <floating> log(s[j])) if logsm else (1 / s[j])
    for d in range(D):
        xr = x + d * inner
        yr = y + d * inner
        if logsm:
            for j in range(w):
                yr[j] = xr[j] - s[j]
        else:
            for j in range(w):
                yr[j] = yr[j] * s[j]


cdef void softmax_grad_row(const floating* gy, const floating* y, floating* gx, Py_ssize_t D,
                           bint logsm) noexcept nogil:
    cdef Py_ssize_t d
    cdef floating s
    if logsm:
        s = dotf(gy, <const floating*> NULL, D)
        for d in range(D):
            gx[d] = gy[d] - f_exp(y[d]) * s
    else:
        s = dotf(gy, y, D)
        for d in range(D):
            gx[d] = y[d] * (gy[d] - s)


cdef void softmax_grad_cols(const floating* gy, const floating* y, floating* gx, Py_ssize_t D,
                            Py_ssize_t inner, Py_ssize_t w, bint logsm) noexcept nogil:
    cdef floating s[CHUNK]
    cdef Py_ssize_t d, j, o
    for j in range(w):
        s[j] = 0
    if logsm:
        for d in range(D):
            o = d * inner
            for j in range(w):
                s[j] = s[j] + gy[o + j]
        for d in range(D):
            o = d * inner
            for j in range(w):
                gx[o + j] = gy[o + j] - f_exp(y[o + j]) * s[j]
    else:
        for d in range(D):
            o = d * inner
            for j in range(w):
                s[j] = s[j] + gy[o + j] * y[o + j]
        for d in range(D):
            o = d * inner
            for j in range(w):
                gx[o + j] = y[o + j] * (gy[o + j] - s[j])


cdef void softmax_item(const floating* a, const floating* b, floating* out, Py_ssize_t it,
                       Py_ssize_t D, Py_ssize_t inner, Py_ssize_t per, bint logsm,
                       bint backward) noexcept nogil:
    """Work item ``it``: a row when inner == 1, else a chunk of columns of one slab.
    Forward: a = x, out = y.  Backward: a = gy, b = y, out = gx."""
    cdef Py_ssize_t o, j0, w, off
    if inner == 1:
        off = it * D
        if backward:
            softmax_grad_row(a + off, b + off, out + off, D, logsm)
        else:
            softmax_row(a + off, out + off, D, logsm)
        return
    o = it // per
    j0 = (it % per) * CHUNK
    w = min(<Py_ssize_t> CHUNK, inner - j0)
    off = o * D * inner + j0
    if backward:
        softmax_grad_cols(a + off, b + off, out + off, D, inner, w, logsm)
    else:
        softmax_cols(a + off, out + off, D, inner, w, logsm)


cdef void softmax_run(const floating* a, const floating* b, floating* out, Py_ssize_t outer,
                      Py_ssize_t D, Py_ssize_t inner, bint logsm, bint backward,
                      Py_ssize_t n_threads) noexcept nogil:
    cdef Py_ssize_t per = (inner + CHUNK - 1) // CHUNK
    cdef Py_ssize_t items = outer * inner if inner == 1 else outer * per, it
    if outer == 0 or D == 0 or inner == 0:
        return
    if n_threads == 1:
        for it in range(items):
            softmax_item(a, b, out, it, D, inner, per, logsm, backward)
    else:
        for it in prange(items, schedule="dynamic", num_threads=n_threads):
            softmax_item(a, b, out, it, D, inner, per, logsm, backward)


cdef int check_lines(cnp.ndarray a, Py_ssize_t outer, Py_ssize_t D,
                     Py_ssize_t inner) except -1:
    if outer < 0 or D < 0 or inner < 0 or cnp.PyArray_SIZE(a) != outer * D * inner:
        raise ValueError(f"softmax kernel: ({outer}, {D}, {inner}) does not describe an array "
                         f"of {cnp.PyArray_SIZE(a)} elements")
    return 0


def softmax_forward(cnp.ndarray x, cnp.ndarray y, Py_ssize_t outer, Py_ssize_t D,
                    Py_ssize_t inner, bint logsm, Py_ssize_t n_threads):
    """y = softmax (or log_softmax with ``logsm``) of ``x``, viewed as (outer, D, inner),
    over D.  A NaN in a slice makes the whole slice NaN; an all -inf slice gives NaN (as
    PyTorch).  ndarrays, not memoryviews: small softmaxes are dominated by the call."""
    check_flat("softmax", x, y)
    check_lines(x, outer, D, inner)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        with nogil:
            softmax_run(<const float*> cnp.PyArray_DATA(x), <const float*> NULL,
                        <float*> cnp.PyArray_DATA(y), outer, D, inner, logsm, False, n_threads)
    else:
        with nogil:
            softmax_run(<const double*> cnp.PyArray_DATA(x), <const double*> NULL,
                        <double*> cnp.PyArray_DATA(y), outer, D, inner, logsm, False,
                        n_threads)


def softmax_backward(cnp.ndarray gy, cnp.ndarray y, cnp.ndarray gx, Py_ssize_t outer,
                     Py_ssize_t D, Py_ssize_t inner, bint logsm, Py_ssize_t n_threads):
    """gx = y * (gy - sum(gy * y)) (softmax) or gy - exp(y) * sum(gy) (log_softmax), the
    sums over D of the (outer, D, inner) view, from the forward output ``y``."""
    check_flat("softmax", gy, gx)
    check_flat("softmax", y, gx)
    check_lines(gy, outer, D, inner)
    if cnp.PyArray_TYPE(gy) == cnp.NPY_FLOAT:
        with nogil:
            softmax_run(<const float*> cnp.PyArray_DATA(gy), <const float*> cnp.PyArray_DATA(y),
                        <float*> cnp.PyArray_DATA(gx), outer, D, inner, logsm, True, n_threads)
    else:
        with nogil:
            softmax_run(<const double*> cnp.PyArray_DATA(gy),
                        <const double*> cnp.PyArray_DATA(y), <double*> cnp.PyArray_DATA(gx),
                        outer, D, inner, logsm, True, n_threads)
