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

/* cy_win_pack_<S>: one row of W pixels of n (<= L) channels, channels last:
 * dst[i * ds + c] = src[c * cs + i] for c < n, 0 for n <= c < L; returns nonzero when a
 * copied value is NaN or Inf.  L x L blocks are transposed in registers (three rounds of
 * lane shuffles, as _MM_TRANSPOSE8_PS would), the check riding along as v - v sums. */
/* the shared in-register transposes (_simd.h) on arrays r (in) and o (out) */
#define CY_TRANSPOSE8(r, o)                                                            \
    do {                                                                               \
        cy_v8f q0 = r[0], q1 = r[1], q2 = r[2], q3 = r[3];                             \
        cy_v8f q4 = r[4], q5 = r[5], q6 = r[6], q7 = r[7];                             \
        CY_T8(q0, q1, q2, q3, q4, q5, q6, q7);                                         \
        o[0] = q0; o[1] = q1; o[2] = q2; o[3] = q3;                                    \
        o[4] = q4; o[5] = q5; o[6] = q6; o[7] = q7;                                    \
    } while (0)
#define CY_TRANSPOSE4(r, o)                                                            \
    do {                                                                               \
        cy_v4d q0 = r[0], q1 = r[1], q2 = r[2], q3 = r[3];                             \
        CY_T4(q0, q1, q2, q3);                                                         \
        o[0] = q0; o[1] = q1; o[2] = q2; o[3] = q3;                                    \
    } while (0)

#define CY_WINO_PACK(S, T, V, L, TRANSPOSE)                                            \
static int cy_win_pack_##S(const T *src, Py_ssize_t cs, int n, Py_ssize_t W, T *dst,   \
                           Py_ssize_t ds)                                              \
{                                                                                      \
    V z = {0}, r[L], o[L];                                                             \
    Py_ssize_t i;                                                                      \
    int c, bad = 0;                                                                    \
    for (c = n; c < L; c++)                                                            \
        r[c] = (V){0};                                                                 \
    for (i = 0; i + L <= W; i += L) {                                                  \
        for (c = 0; c < n; c++) {                                                      \
            r[c] = *(const V *)(src + c * cs + i);                                     \
            z += r[c] - r[c];                                                          \
        }                                                                              \
        TRANSPOSE(r, o);                                                               \
        for (c = 0; c < L; c++)                                                        \
            *(V *)(dst + (i + c) * ds) = o[c];                                         \
    }                                                                                  \
    for (; i < W; i++)                                                                 \
        for (c = 0; c < L; c++) {                                                      \
            T v = c < n ? src[c * cs + i] : (T)0;                                      \
            dst[i * ds + c] = v;                                                       \
            bad |= v - v != 0;                                                         \
        }                                                                              \
    for (c = 0; c < L; c++)                                                            \
        bad |= z[c] != 0;                                                              \
    return bad;                                                                        \
}

/* cy_win_rows4_<S>: nr output rows of 4 pixels for all L channels of a block (o[i][j]:
 * row i, pixel j, one lane per channel), bias added, transposed in registers and stored
 * as 4-pixel runs y[k * ks + i * ys + 0..3]; returns 1 (0: not handled). */
static inline __attribute__((always_inline)) int
cy_win_rows4_f(const cy_v8f *o, int nr, float *y, Py_ssize_t ks, Py_ssize_t ys,
               const float *bias)
{
    cy_v8f b = {0}, r[8], t[8];
    int i, k;
    if (bias)
        b = *(const cy_v8f *)bias;
    for (i = 0; i < nr; i++) {
        for (k = 0; k < 4; k++) {
            r[k] = o[i * 4 + k] + b;
            r[k + 4] = r[k];
        }
        CY_TRANSPOSE8(r, t);
        for (k = 0; k < 8; k++)
            __builtin_memcpy(y + k * ks + i * ys, &t[k], 4 * sizeof(float));
    }
    return 1;
}
static inline __attribute__((always_inline)) int
cy_win_rows4_d(const cy_v4d *o, int nr, double *y, Py_ssize_t ks, Py_ssize_t ys,
               const double *bias)
{
    cy_v4d b = {0}, r[4], t[4];
    int i, k;
    if (bias)
        b = *(const cy_v4d *)bias;
    for (i = 0; i < nr; i++) {
        for (k = 0; k < 4; k++)
            r[k] = o[i * 4 + k] + b;
        CY_TRANSPOSE4(r, t);
        for (k = 0; k < 4; k++)
            *(cy_v4d *)(y + k * ks + i * ys) = t[k];
    }
    return 1;
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
    if (r0 == 0 && r1 == AH && c0 == 0 && c1 == A) {   /* interior: no test */       \
        const T *s_ = src + hoff * rs + woff * ps;                                     \
        for (i = 0; i < AH; i++)                                                       \
            for (j = 0; j < A; j++)                                                    \
                d[i][j] = *(const V *)(s_ + i * rs + j * ps);                          \
    } else {                                                                           \
        for (i = 0; i < AH; i++)                                                       \
            for (j = 0; j < A; j++)                                                    \
                d[i][j] = (i >= r0 && i < r1 && j >= c0 && j < c1)                     \
                    ? *(const V *)(src + (hoff + i) * rs + (woff + j) * ps) : (V){0};  \
    }                                                                                  \
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
    for (i = 0; i < MH; i++)                                                           \
        cy_wat##A##_##S(&t[i][0], 1, &o[i][0], 1);                                      \
    if (MO == 4 && nc == 4 && nk == L && cy_win_rows4_##S(&o[0][0], nr, y, ks, ys, bias)) \
        return;                                                                        \
    for (i = 0; i < MH; i++)                                                           \
        for (j = 0; j < MO; j++)                                                       \
            *(V *)tile[i][j] = o[i][j];                                                \
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

/* The tile GEMM, one position at a time: for UR (1 .. 6) tiles and one panel of NB * L
 * (NB = 1 or 2) output channels,
 *
 *   m[u * mt + k] = sum_{r < R} v[u * vt + r] * w[r * NB * L + k]     k < NB * L
 *
 * with the transformed weights packed by panel (w[r][k], NB * L wide, once per call),
 * so no operand is repacked per call as a BLAS GEMM would.  The 2 x 6 accumulators stay
 * in registers (the 6 x 16 float shape of BLIS's Haswell sgemm kernel): each step is 2
 * weight loads, UR broadcasts and 2 * UR FMAs.  Every sum runs over r in order, so the
 * result does not depend on how tiles are blocked. */
#define CY_WGEMM_UR(S, T, V, L, BC, NB, UR)                                            \
static inline __attribute__((always_inline)) void                                      \
cy_wgemm_##S##_##NB##_##UR(const T *v, Py_ssize_t vt, const T *w, Py_ssize_t R, T *m,  \
                           Py_ssize_t mt)                                              \
{                                                                                      \
    V acc[NB][UR];                                                                     \
    Py_ssize_t r;                                                                      \
    _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                            \
        _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++)                        \
            acc[b_][u_] = (V){0};                                                      \
    for (r = 0; r < R; r++) {                                                          \
        V wv[NB];                                                                      \
        _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                        \
            wv[b_] = *(const V *)(w + r * NB * L + b_ * L);                            \
        _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++) {                      \
            V bc = BC(v[u_ * vt + r]);                                                 \
            _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                    \
                acc[b_][u_] += bc * wv[b_];                                            \
        }                                                                              \
    }                                                                                  \
    _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                            \
        _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++)                        \
            *(V *)(m + u_ * mt + b_ * L) = acc[b_][u_];                                \
}

#define CY_WGEMM_CASE(S, NB, UR)                                                       \
    case UR: cy_wgemm_##S##_##NB##_##UR(v, vt, w, R, m, mt); break;

#define CY_WGEMM_NB(S, T, V, L, BC, NB)                                                \
CY_WGEMM_UR(S, T, V, L, BC, NB, 1)                                                     \
CY_WGEMM_UR(S, T, V, L, BC, NB, 2)                                                     \
CY_WGEMM_UR(S, T, V, L, BC, NB, 3)                                                     \
CY_WGEMM_UR(S, T, V, L, BC, NB, 4)                                                     \
CY_WGEMM_UR(S, T, V, L, BC, NB, 5)                                                     \
CY_WGEMM_UR(S, T, V, L, BC, NB, 6)                                                     \
static __attribute__((noinline)) void                                                  \
cy_wgemm_##S##_##NB(int ur, const T *v, Py_ssize_t vt, const T *w, Py_ssize_t R, T *m, \
                    Py_ssize_t mt)                                                     \
{                                                                                      \
    switch (ur) {                                                                      \
    CY_WGEMM_CASE(S, NB, 1)                                                            \
    CY_WGEMM_CASE(S, NB, 2)                                                            \
    CY_WGEMM_CASE(S, NB, 3)                                                            \
    CY_WGEMM_CASE(S, NB, 4)                                                            \
    CY_WGEMM_CASE(S, NB, 5)                                                            \
    default:                                                                           \
    CY_WGEMM_CASE(S, NB, 6)                                                            \
    }                                                                                  \
}

/* m[t * mt + k] = sum_r v[t * vt + r] * U[r][k] for t < nt and k < Kp, U packed in
 * panels of 2L channels (the last one L wide when Kp is an odd number of vectors):
 * panel j at u + j * 2L * R, row r of it at + r * width. */
#define CY_WGEMM(S, T, V, L)                                                           \
static void cy_wgemm_##S(Py_ssize_t nt, Py_ssize_t Kp, Py_ssize_t R, const T *v,       \
                         Py_ssize_t vt, const T *u, T *m, Py_ssize_t mt)               \
{                                                                                      \
    Py_ssize_t j, t;                                                                   \
    for (j = 0; j * 2 * L < Kp; j++) {                                                 \
        const T *w = u + j * 2 * L * R;                                                \
        int two = Kp - j * 2 * L >= 2 * L;                                             \
        for (t = 0; t < nt; t += 6) {                                                  \
            int ur = nt - t < 6 ? (int)(nt - t) : 6;                                   \
            if (two)                                                                   \
                cy_wgemm_##S##_2(ur, v + t * vt, vt, w, R, m + t * mt + j * 2 * L, mt); \
            else                                                                       \
                cy_wgemm_##S##_1(ur, v + t * vt, vt, w, R, m + t * mt + j * 2 * L, mt); \
        }                                                                              \
    }                                                                                  \
}

#define cy_wbc_f(s) ({ float s_ = (s); (cy_v8f){s_, s_, s_, s_, s_, s_, s_, s_}; })
#define cy_wbc_d(s) ({ double s_ = (s); (cy_v4d){s_, s_, s_, s_}; })
CY_WGEMM_NB(f, float, cy_v8f, 8, cy_wbc_f, 1)
CY_WGEMM_NB(f, float, cy_v8f, 8, cy_wbc_f, 2)
CY_WGEMM(f, float, cy_v8f, 8)
CY_WGEMM_NB(d, double, cy_v4d, 4, cy_wbc_d, 1)
CY_WGEMM_NB(d, double, cy_v4d, 4, cy_wbc_d, 2)
CY_WGEMM(d, double, cy_v4d, 4)

CY_WINO_PACK(f, float, cy_v8f, 8, CY_TRANSPOSE8)
CY_WINO_PACK(d, double, cy_v4d, 4, CY_TRANSPOSE4)

#endif
