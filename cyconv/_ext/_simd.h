/* Register-blocked micro-kernels for the direct convolution path.
 *
 * Written with GCC/Clang vector extensions: the same source compiles to SSE2 in the
 * baseline build and to AVX2+FMA in the cyconv._ext.avx2 build.  The vector types are
 * declared with element alignment and may_alias so that loads from any float/double
 * address are legal.
 *
 * taps_acc:  y[j] (+)= sum_t wt[t] * src[j * sw + off[t]]   for j in [0, n)
 *            (accumulating into y when acc, else overwriting it: no memset needed)
 *
 * Four vectors of outputs stay in registers across all taps, so y is loaded and stored
 * once per call; each tap costs one broadcast and four multiply-adds per 4 vectors.
 *
 * taps_dot:  out[t] += sum_i g[i] * src[off[t] + i]          for every tap t, i in [0, m)
 *
 * The weight gradient of one plane: taps go four at a time, each with two vector partial
 * sums, so one loaded g vector feeds eight independent FMA chains (a single running sum
 * would wait on the FMA latency at every step).  The order of the sums is fixed by m
 * alone: results do not depend on threads or alignment.
 */
#ifndef CYCONV_SIMD_H
#define CYCONV_SIMD_H
#include <stddef.h>
#include <Python.h>

typedef float cy_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef double cy_v4d __attribute__((vector_size(32), aligned(8), may_alias));

#define CY_DEFINE_TAPS_ACC(NAME, T, V, L)                                              \
static void NAME(T *y, const T *src, const T *wt, const Py_ssize_t *off,              \
                 Py_ssize_t KK, Py_ssize_t n, Py_ssize_t sw, int acc)                 \
{                                                                                     \
    Py_ssize_t j = 0, t;                                                              \
    if (sw == 1) {                                                                    \
        for (; j + 4 * L <= n; j += 4 * L) {                                          \
            V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                 \
            if (acc) {                                                                \
                a0 = *(const V *)(y + j); a1 = *(const V *)(y + j + L);               \
                a2 = *(const V *)(y + j + 2 * L); a3 = *(const V *)(y + j + 3 * L);   \
            }                                                                         \
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
            V a0 = {0};                                                               \
            if (acc)                                                                  \
                a0 = *(const V *)(y + j);                                             \
            for (t = 0; t < KK; t++)                                                  \
                a0 += ((V){0} + wt[t]) * *(const V *)(src + off[t] + j);              \
            *(V *)(y + j) = a0;                                                       \
        }                                                                             \
    }                                                                                 \
    for (; j < n; j++) {                                                              \
        T a = acc ? y[j] : (T)0;                                                      \
        for (t = 0; t < KK; t++)                                                      \
            a += wt[t] * src[j * sw + off[t]];                                        \
        y[j] = a;                                                                     \
    }                                                                                 \
}

CY_DEFINE_TAPS_ACC(cy_taps_acc_f, float, cy_v8f, 8)
CY_DEFINE_TAPS_ACC(cy_taps_acc_d, double, cy_v4d, 4)

/* Horizontal sum of a vector, lanes added pairwise in a fixed order. */
#define CY_HSUM(T, L, v) ({                                                           \
    T h_[L]; int l_, s_;                                                              \
    *(__typeof__(v) *)h_ = (v);                                                       \
    for (s_ = L / 2; s_ > 0; s_ /= 2)                                                 \
        for (l_ = 0; l_ < s_; l_++)                                                   \
            h_[l_] += h_[l_ + s_];                                                    \
    h_[0]; })

#define CY_DEFINE_TAPS_DOT(NAME, T, V, L)                                             \
static void NAME(T *out, const T *g, const T *src, const Py_ssize_t *off,             \
                 Py_ssize_t KK, Py_ssize_t m)                                         \
{                                                                                     \
    Py_ssize_t t = 0, i, mv = m / (2 * L) * (2 * L);                                  \
    for (; t + 4 <= KK; t += 4) {                                                     \
        const T *s0 = src + off[t], *s1 = src + off[t + 1];                           \
        const T *s2 = src + off[t + 2], *s3 = src + off[t + 3];                       \
        V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}; \
        for (i = 0; i < mv; i += 2 * L) {                                             \
            V g0 = *(const V *)(g + i), g1 = *(const V *)(g + i + L);                 \
            a0 += g0 * *(const V *)(s0 + i); b0 += g1 * *(const V *)(s0 + i + L);     \
            a1 += g0 * *(const V *)(s1 + i); b1 += g1 * *(const V *)(s1 + i + L);     \
            a2 += g0 * *(const V *)(s2 + i); b2 += g1 * *(const V *)(s2 + i + L);     \
            a3 += g0 * *(const V *)(s3 + i); b3 += g1 * *(const V *)(s3 + i + L);     \
        }                                                                             \
        {                                                                             \
            T r0 = CY_HSUM(T, L, a0 + b0), r1 = CY_HSUM(T, L, a1 + b1);               \
            T r2 = CY_HSUM(T, L, a2 + b2), r3 = CY_HSUM(T, L, a3 + b3);               \
            for (i = mv; i < m; i++) {                                                \
                r0 += g[i] * s0[i]; r1 += g[i] * s1[i];                               \
                r2 += g[i] * s2[i]; r3 += g[i] * s3[i];                               \
            }                                                                         \
            out[t] += r0; out[t + 1] += r1; out[t + 2] += r2; out[t + 3] += r3;       \
        }                                                                             \
    }                                                                                 \
    for (; t < KK; t++) {                                                             \
        const T *s0 = src + off[t];                                                   \
        V a0 = {0}, b0 = {0};                                                         \
        T r0;                                                                         \
        for (i = 0; i < mv; i += 2 * L) {                                             \
            a0 += *(const V *)(g + i) * *(const V *)(s0 + i);                         \
            b0 += *(const V *)(g + i + L) * *(const V *)(s0 + i + L);                 \
        }                                                                             \
        r0 = CY_HSUM(T, L, a0 + b0);                                                  \
        for (i = mv; i < m; i++)                                                      \
            r0 += g[i] * s0[i];                                                       \
        out[t] += r0;                                                                 \
    }                                                                                 \
}

CY_DEFINE_TAPS_DOT(cy_taps_dot_f, float, cy_v8f, 8)
CY_DEFINE_TAPS_DOT(cy_taps_dot_d, double, cy_v4d, 4)

#endif
