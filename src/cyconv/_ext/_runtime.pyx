"""Run-time facts about this build and CPU: ISA support, OpenMP."""
from cython.parallel cimport parallel
from cyconv._ext._openmp cimport CYCONV_OPENMP, omp_get_thread_num, omp_get_max_threads

cdef extern from *:
    """
    static int cyconv_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    int cyconv_cpu_has_avx2_fma() noexcept nogil


def cpu_has_avx2_fma():
    """True when this CPU executes AVX2 and FMA instructions."""
    return bool(cyconv_cpu_has_avx2_fma())


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(CYCONV_OPENMP)


def threads_used(int n):
    """Start a parallel region of ``n`` threads and return how many actually ran."""
    cdef int seen = 0
    cdef int i
    cdef int[256] hit
    if n > 256:
        n = 256
    for i in range(256):
        hit[i] = 0
    with nogil, parallel(num_threads=n):
        hit[omp_get_thread_num()] = 1
    for i in range(256):
        seen += hit[i]
    return seen
