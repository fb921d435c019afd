/* Register-blocked micro-kernels for the direct convolution path.
 *
 * Written with GCC/Clang vector extensions: the same source compiles to SSE2 in the
 * baseline build and to AVX2+FMA in the cyconv._ext.avx2 build.  The vector types are
 * declared with element alignment and may_alias so that loads from any float/double
 * address are legal.
 *
 * taps_acc:  y[j] += sum_t wt[t] * src[j * sw + off[t]]   for j in [0, n)
 *
 * Four vectors of outputs stay in registers across all taps, so y is loaded and stored
 * once per call; each tap costs one broadcast and four multiply-adds per 4 vectors.
 */
#ifndef CYCONV_SIMD_H
#define CYCONV_SIMD_H
#include <stddef.h>
#include <Python.h>

typedef float cy_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef double cy_v4d __attribute__((vector_size(32), aligned(8), may_alias));

#define CY_DEFINE_TAPS_ACC(NAME, T, V, L)                                              \
static void NAME(T *y, const T *src, const T *wt, const Py_ssize_t *off,              \
                 Py_ssize_t KK, Py_ssize_t n, Py_ssize_t sw)                          \
{                                                                                     \
    Py_ssize_t j = 0, t;                                                              \
    if (sw == 1) {                                                                    \
        for (; j + 4 * L <= n; j += 4 * L) {                                          \
            V a0 = *(const V *)(y + j), a1 = *(const V *)(y + j + L);                 \
            V a2 = *(const V *)(y + j + 2 * L), a3 = *(const V *)(y + j + 3 * L);     \
            for (t = 0; t < KK; t++) {                                                \
                const T *s = src + off[t] + j;                                        \
                V w = (V){0} + wt[t];                                                 \
                a0 += w * *(const V *)(s);                                            \
                a1 += w * *(const V *)(s + L);                                        \
                a2 += w * *(const V *)(s + 2 * L);                                    \
                a3 += w * *(const V *)(s + 3 * L);                                    \
            }                                                                         \
            *(V *)(y + j) = a0;                                                       \
            *(V *)(y + j + L) = a1;                                                   \
            *(V *)(y + j + 2 * L) = a2;                                               \
            *(V *)(y + j + 3 * L) = a3;                                               \
        }                                                                             \
        for (; j + L <= n; j += L) {                                                  \
            V a0 = *(const V *)(y + j);                                               \
            for (t = 0; t < KK; t++)                                                  \
                a0 += ((V){0} + wt[t]) * *(const V *)(src + off[t] + j);              \
            *(V *)(y + j) = a0;                                                       \
        }                                                                             \
    }                                                                                 \
    for (; j < n; j++) {                                                              \
        T a = y[j];                                                                   \
        for (t = 0; t < KK; t++)                                                      \
            a += wt[t] * src[j * sw + off[t]];                                        \
        y[j] = a;                                                                     \
    }                                                                                 \
}

CY_DEFINE_TAPS_ACC(cy_taps_acc_f, float, cy_v8f, 8)
CY_DEFINE_TAPS_ACC(cy_taps_acc_d, double, cy_v4d, 4)

#endif
