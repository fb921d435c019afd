# One vectorised NaN/Inf scan (_simd.h) for either element type, shared by the kernels.
from cyconv._ext._types cimport floating

cdef extern from "_simd.h" nogil:
    int cy_f_all_finite(const float* a, Py_ssize_t n)
    int cy_d_all_finite(const double* a, Py_ssize_t n)


cdef inline bint all_finite_n(const floating* a, Py_ssize_t n) noexcept nogil:
    """No NaN or Inf among a[0:n] (n may be 0)."""
    if n == 0:
        return True
    if floating is float:
        return cy_f_all_finite(a, n) != 0
    else:
        return cy_d_all_finite(a, n) != 0
