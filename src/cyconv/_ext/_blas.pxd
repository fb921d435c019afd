# Row-major GEMM on top of the Fortran BLAS that SciPy exports to Cython (32-bit ints).
#
# Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the operands are
# swapped (the scikit-learn `_cython_blas` convention).  Callers have checked every
# dimension and leading dimension against 2**31 - 1 (cyconv._params / cyconv._cpu).
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cyconv._ext._types cimport floating


cdef inline void gemm_rm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                         const floating* A, int lda, const floating* B, int ldb,
                         floating beta, floating* C, int ldc) noexcept nogil:
    """C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C, all row-major."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*> B, &ldb, <float*> A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*> B, &ldb, <double*> A, &lda,
              &beta, C, &ldc)
