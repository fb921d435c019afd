# OpenMP queries that also compile without OpenMP (the scikit-learn `_openmp_helpers` shim).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CYCONV_OPENMP 1
    #else
    #define CYCONV_OPENMP 0
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    bint CYCONV_OPENMP
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil
