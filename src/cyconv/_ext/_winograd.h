/* Winograd minimal-filtering tile transforms F(4,3) and F(2,3) (Lavin & Gray,
 * arXiv:1509.09308), on vectors of L channels (GCC/Clang vector extensions: the same
 * source compiles to SSE2 in the baseline build and to AVX2+FMA in the avx2 build).
 *
 * A tile of A x A inputs (A = 6 for F(4x4,3x3), 4 for F(2x2,3x3); A x 1 rows for the
 * 1-D forms) gives M x M outputs (M = 4 or 2).  With the interpolation points 0, 1, -1,
 * 2, -2 and infinity (F(4,3)), or 0, 1, -1 and infinity (F(2,3)):
 *
 *   V = B^T d B   (input tile d, A x A)        input transform, exact small integers
 *   U = G g G^T   (3 x 3 kernel g)             weight transform, done in double
 *   y = A^T m A   (m = sum over channels of U * V, elementwise per position)
 *
 *   F(4,3):  B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   A^T = [1 1  1 1  1 0]
 *                  [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
 *                  [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
 *                  [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
 *                  [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
 *                  [0  4  0 -5 0 1]       [  0     0    1 ]
 *   F(2,3):  B^T = [1  0 -1  0]       G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *                  [0  1  1  0]     A^T = [1 1 1 0; 0 1 -1 -1]
 *                  [0 -1  1  0]
 *                  [0  1  0 -1]
 *
 * The 1-D transforms share their sub-expressions (t1 +- t2), as in Lavin's paper, so a
 * transform is a few adds and multiplies by small powers of two.
 *
 * cy_win_in_<S>:  gather one input tile of one block of L channels from a channels-last
 *                 slab (element (i, j) at src + (hoff + i) * rs + (woff + j) * ps, zero
 *                 outside rows [r0, r1) and columns [c0, c1)), transform it and store
 *                 position p = i * A + j at out + p * vs.
 * cy_win_out_<S>: load the A x A (or A x 1) products at m + p * ms, transform them back
 *                 and write the nr x nc valid outputs of nk (<= L) channels to
 *                 y + k * ks + i * ys + j, adding bias[k] (bias may be NULL).
 */
#ifndef CYCONV_WINOGRAD_H
#define CYCONV_WINOGRAD_H
#include <stddef.h>
#include <Python.h>
#include "_simd.h"

/* The 1-D transforms: in[i * is] -> out[i * os]. */
#define CY_WINO_1D(S, T, V)                                                            \
static inline __attribute__((always_inline)) void                                      \
cy_wbt6_##S(const V *d, int is, V *r, int os)                                          \
{                                                                                      \
    V d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is], d4 = d[4 * is],           \
      d5 = d[5 * is];                                                                  \
    V t1 = d4 - (T)4 * d2, t2 = d3 - (T)4 * d1;                                        \
    V t3 = d4 - d2, t4 = (T)2 * (d3 - d1);                                             \
    r[0] = (T)4 * d0 - (T)5 * d2 + d4;                                                 \
    r[os] = t1 + t2;                                                                   \
    r[2 * os] = t1 - t2;                                                               \
    r[3 * os] = t3 + t4;                                                               \
    r[4 * os] = t3 - t4;                                                               \
    r[5 * os] = (T)4 * d1 - (T)5 * d3 + d5;                                            \
}                                                                                      \
static inline __attribute__((always_inline)) void                                      \
cy_wat6_##S(const V *m, int is, V *o, int os)                                          \
{                                                                                      \
    V m1 = m[is], m2 = m[2 * is], m3 = m[3 * is], m4 = m[4 * is];                      \
    V s1 = m1 + m2, d1 = m1 - m2, s2 = m3 + m4, d2 = m3 - m4;                          \
    o[0] = m[0] + s1 + s2;                                                             \
    o[os] = d1 + (T)2 * d2;                                                            \
    o[2 * os] = s1 + (T)4 * s2;                                                        \
    o[3 * os] = d1 + (T)8 * d2 + m[5 * is];                                            \
}                                                                                      \
static inline __attribute__((always_inline)) void                                      \
cy_wbt4_##S(const V *d, int is, V *r, int os)                                          \
{                                                                                      \
    V d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is];                           \
    r[0] = d0 - d2;                                                                    \
    r[os] = d1 + d2;                                                                   \
    r[2 * os] = d2 - d1;                                                               \
    r[3 * os] = d1 - d3;                                                               \
}                                                                                      \
static inline __attribute__((always_inline)) void                                      \
cy_wat4_##S(const V *m, int is, V *o, int os)                                          \
{                                                                                      \
    V m1 = m[is], m2 = m[2 * is];                                                      \
    o[0] = m[0] + m1 + m2;                                                             \
    o[os] = m1 - m2 - m[3 * is];                                                       \
}

/* One tile size: A inputs, MO outputs per axis, AH rows (A, or 1 for 1-D). */
#define CY_WINO_TILE(S, T, V, L, A, MO, AH)                                            \
static inline __attribute__((always_inline)) void                                      \
cy_win_in_##S##_##A##_##AH(const T *src, Py_ssize_t rs, Py_ssize_t ps, Py_ssize_t hoff, \
                           Py_ssize_t woff, int r0, int r1, int c0, int c1, T *out,    \
                           Py_ssize_t vs)                                              \
{                                                                                      \
    V d[AH][A], t[AH][A];                                                              \
    int i, j;                                                                          \
    for (i = 0; i < AH; i++)                                                           \
        for (j = 0; j < A; j++)                                                        \
            d[i][j] = (i >= r0 && i < r1 && j >= c0 && j < c1)                         \
                ? *(const V *)(src + (hoff + i) * rs + (woff + j) * ps) : (V){0};      \
    if (AH > 1) {                                                                      \
        for (j = 0; j < A; j++)                                                        \
            cy_wbt##A##_##S(&d[0][j], A, &t[0][j], A);                                  \
        for (i = 0; i < AH; i++)                                                       \
            cy_wbt##A##_##S(&t[i][0], 1, &d[i][0], 1);                                  \
    } else {                                                                           \
        cy_wbt##A##_##S(&d[0][0], 1, &t[0][0], 1);                                      \
        for (j = 0; j < A; j++)                                                        \
            d[0][j] = t[0][j];                                                         \
    }                                                                                  \
    for (i = 0; i < AH; i++)                                                           \
        for (j = 0; j < A; j++)                                                        \
            *(V *)(out + (i * A + j) * vs) = d[i][j];                                  \
}                                                                                      \
static inline __attribute__((always_inline)) void                                      \
cy_win_out_##S##_##A##_##AH(const T *m, Py_ssize_t ms, T *y, Py_ssize_t ks,            \
                            Py_ssize_t ys, int nr, int nc, int nk, const T *bias)      \
{                                                                                      \
    enum { MH = AH > 1 ? MO : 1 };                                                     \
    V a[AH][A], t[MH][A], o[MH][MO];                                                   \
    T tile[MH][MO][L];                                                                 \
    int i, j, k;                                                                       \
    for (i = 0; i < AH; i++)                                                           \
        for (j = 0; j < A; j++)                                                        \
            a[i][j] = *(const V *)(m + (i * A + j) * ms);                              \
    if (AH > 1) {                                                                      \
        for (j = 0; j < A; j++)                                                        \
            cy_wat##A##_##S(&a[0][j], A, &t[0][j], A);                                  \
    } else {                                                                           \
        for (j = 0; j < A; j++)                                                        \
            t[0][j] = a[0][j];                                                         \
    }                                                                                  \
    for (i = 0; i < MH; i++) {                                                         \
        cy_wat##A##_##S(&t[i][0], 1, &o[i][0], 1);                                      \
        for (j = 0; j < MO; j++)                                                       \
            *(V *)tile[i][j] = o[i][j];                                                \
    }                                                                                  \
    for (k = 0; k < nk; k++) {                                                         \
        T bv = bias ? bias[k] : (T)0;                                                  \
        T *yk = y + k * ks;                                                            \
        for (i = 0; i < nr; i++)                                                       \
            for (j = 0; j < nc; j++)                                                   \
                yk[i * ys + j] = tile[i][j][k] + bv;                                   \
    }                                                                                  \
}

/* Dispatchers on (A, AH), kept out of line. */
#define CY_WINO_DEFINE(S, T, V, L)                                                     \
CY_WINO_1D(S, T, V)                                                                    \
CY_WINO_TILE(S, T, V, L, 6, 4, 6)                                                      \
CY_WINO_TILE(S, T, V, L, 6, 4, 1)                                                      \
CY_WINO_TILE(S, T, V, L, 4, 2, 4)                                                      \
CY_WINO_TILE(S, T, V, L, 4, 2, 1)                                                      \
static __attribute__((noinline)) void                                                  \
cy_win_in_##S(int A, int AH, const T *src, Py_ssize_t rs, Py_ssize_t ps,               \
              Py_ssize_t hoff, Py_ssize_t woff, int r0, int r1, int c0, int c1, T *out, \
              Py_ssize_t vs)                                                           \
{                                                                                      \
    if (A == 6) {                                                                      \
        if (AH > 1)                                                                    \
            cy_win_in_##S##_6_6(src, rs, ps, hoff, woff, r0, r1, c0, c1, out, vs);     \
        else                                                                           \
            cy_win_in_##S##_6_1(src, rs, ps, hoff, woff, r0, r1, c0, c1, out, vs);     \
    } else {                                                                           \
        if (AH > 1)                                                                    \
            cy_win_in_##S##_4_4(src, rs, ps, hoff, woff, r0, r1, c0, c1, out, vs);     \
        else                                                                           \
            cy_win_in_##S##_4_1(src, rs, ps, hoff, woff, r0, r1, c0, c1, out, vs);     \
    }                                                                                  \
}                                                                                      \
static __attribute__((noinline)) void                                                  \
cy_win_out_##S(int A, int AH, const T *m, Py_ssize_t ms, T *y, Py_ssize_t ks,          \
               Py_ssize_t ys, int nr, int nc, int nk, const T *bias)                   \
{                                                                                      \
    if (A == 6) {                                                                      \
        if (AH > 1)                                                                    \
            cy_win_out_##S##_6_6(m, ms, y, ks, ys, nr, nc, nk, bias);                  \
        else                                                                           \
            cy_win_out_##S##_6_1(m, ms, y, ks, ys, nr, nc, nk, bias);                  \
    } else {                                                                           \
        if (AH > 1)                                                                    \
            cy_win_out_##S##_4_4(m, ms, y, ks, ys, nr, nc, nk, bias);                  \
        else                                                                           \
            cy_win_out_##S##_4_1(m, ms, y, ks, ys, nr, nc, nk, bias);                  \
    }                                                                                  \
}

CY_WINO_DEFINE(f, float, cy_v8f, 8)
CY_WINO_DEFINE(d, double, cy_v4d, 4)

#endif
