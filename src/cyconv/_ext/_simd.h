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
 * taps_rows: y[r * ys + j] = (acc ? y[r * ys + j] : b) + sum_t wt[t] * src[r * ss + off[t] + j]
 *            for rows r in [0, R), columns j in [0, n), n >= one vector
 *
 * The forward kernel that writes output rows in place (no wide staging plane).  A
 * register block is up to 3 rows x 4 vectors (or 1 row x 8 vectors): 12 or 8
 * independent FMA chains, enough to hide the FMA latency that four chains could not.
 * A row's last vector starts at n - L, overlapping its neighbour: both compute the same
 * values from the same inputs in the same order, so there is no scalar tail, and the
 * overlapping pair always sits in one block (so, when accumulating, neither reads a
 * value the other has already updated).
 *
 * dw_rows:   y[r * ys + j] = b + sum_{kh < 3, kw} wt[kh * KW + kw] * src[(r + kh) * ss + kw * dw + j]
 *            for rows r in [0, R), columns j in [0, n), n >= one vector
 *
 * taps_rows for one channel, three kernel rows, unit row stride and dilation,
 * reorganised so that each loaded input vector serves every output row of the block
 * that reads it (up to three) instead of one: kw outermost with that column's three
 * weights held in registers, then the block's five input rows, each loaded once per kw.
 * Loads per multiply-add drop from 1 + 1/12 to 5/9 + 1/12: the kernel is bound by
 * loads (unaligned, many crossing a cache line: about one per cycle here), not by the
 * FMAs.  Measured on whole depthwise 3x3 layers: 0.90-0.94 of taps_rows' time (the
 * rest of the time goes to staging the planes from memory).  The sums run over kw, then
 * kh, so the result differs from taps_rows' order in the last bits only.  Five kernel
 * rows (two-row blocks to fit the registers) measured no faster than taps_rows.
 *
 * fill_check: a copy of rows that also reports NaN or Inf among the copied values;
 * all_finite: the report alone.
 *
 * gather2:   dst[j] = src[2 * j]   for j in [0, n)
 * scatter2:  dst[2 * j] += src[j]  for j in [0, n)
 *
 * The im2col rows of a width-stride-2 convolution (every stride-2 layer: stems,
 * downsampling blocks) and their col2im adjoint: two vector loads or stores and a few
 * lane shuffles per vector instead of a scalar access per element.
 *
 * taps_dot:  out[t] += sum_i g[i] * src[off[t] + i]          for every tap t, i in [0, m)
 *
 * The weight gradient of one plane: taps go up to CY_DOT_MAX at a time (a 3x3 kernel in
 * one pass), each with one vector partial sum, so one loaded g vector feeds that many
 * independent FMA chains and g is read once per pass.  The order of the sums is fixed
 * by m and KK alone: results do not depend on threads or alignment.
 */
#ifndef CYCONV_SIMD_H
#define CYCONV_SIMD_H
#include <stddef.h>
#include <Python.h>

/* Hint that p will be read (written) soon (a no-op where the compiler has no builtin). */
#if defined(__GNUC__) || defined(__clang__)
#define cy_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
#define cy_prefetchw(p) __builtin_prefetch((const void *)(p), 1, 3)
#else
#define cy_prefetch(p) ((void)(p))
#define cy_prefetchw(p) ((void)(p))
#endif

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

/* The register blocks of taps_rows and dw_rows along a row of nv vectors: the block
 * starting at vector i takes U vectors (at most umax, the last two of a row kept
 * together), and its last vector starts dl elements after the block, clamped so that
 * it ends at the row's end n. */
static inline Py_ssize_t cy_block_vectors(Py_ssize_t nv, Py_ssize_t i, Py_ssize_t umax)
{
    Py_ssize_t U = nv - i < umax ? nv - i : umax;
    return nv - i - U == 1 ? U - 1 : U;
}

static inline Py_ssize_t cy_block_tail(Py_ssize_t i, Py_ssize_t U, Py_ssize_t n, Py_ssize_t L)
{
    return (i + U - 1) * L < n - L ? (U - 1) * L : n - L - i * L;
}

/* The register-block shapes of the row kernels, R rows (3, 2, 1) x U vectors (4..1):
 * CASE(N, R, U) expands to the switch case(s) of one shape of kernel N. */
#define CY_BLOCK_CASES(CASE, N)                                                        \
    CASE(N, 3, 4) CASE(N, 3, 3) CASE(N, 3, 2) CASE(N, 3, 1)                           \
    CASE(N, 2, 4) CASE(N, 2, 3) CASE(N, 2, 2) CASE(N, 2, 1)                           \
    CASE(N, 1, 4) CASE(N, 1, 3) CASE(N, 1, 2) CASE(N, 1, 1)

/* One register block of taps_rows: R rows x U vectors, at columns c0 + u * L for
 * u < U - 1 and c0 + dl for the last one (dl <= (U - 1) * L: the clamped tail vector).
 * Inlined with constant R and U, so the accumulators live in registers and every load
 * is a row pointer plus a constant (or the one index dl). */
#define CY_DEFINE_TAPS_ROWS(NAME, T, V, L)                                             \
static inline __attribute__((always_inline)) void NAME##_blk(                          \
    T *y, Py_ssize_t ys, const T *src, Py_ssize_t ss, const T *wt,                    \
    const Py_ssize_t *off, Py_ssize_t KK, Py_ssize_t c0, Py_ssize_t dl, int acc, T b, \
    const int R, const int U)                                                         \
{                                                                                     \
    V a[3][8];                                                                        \
    int r, u;                                                                         \
    Py_ssize_t t;                                                                     \
    for (r = 0; r < R; r++)                                                           \
        for (u = 0; u < U; u++) {                                                     \
            const T *yp = y + r * ys + c0 + (u == U - 1 ? dl : u * L);                \
            if (acc)                                                                  \
                a[r][u] = *(const V *)yp;                                             \
            else                                                                      \
                a[r][u] = (V){0} + b;                                                 \
        }                                                                             \
    for (t = 0; t < KK; t++) {                                                        \
        const T *s = src + off[t] + c0;                                               \
        const T wv = wt[t];                                                           \
        V w = (V){0} + wv;                                                            \
        for (r = 0; r < R; r++) {                                                     \
            const T *sr = s + r * ss;                                                 \
            for (u = 0; u < U - 1; u++)                                               \
                a[r][u] += w * *(const V *)(sr + u * L);                              \
            a[r][U - 1] += w * *(const V *)(sr + dl);                                 \
        }                                                                             \
    }                                                                                 \
    for (r = 0; r < R; r++)                                                           \
        for (u = 0; u < U; u++)                                                       \
            *(V *)(y + r * ys + c0 + (u == U - 1 ? dl : u * L)) = a[r][u];            \
}                                                                                     \
                                                                                      \
static void NAME(T *y, Py_ssize_t ys, const T *src, Py_ssize_t ss, const T *wt,       \
                 const Py_ssize_t *off, Py_ssize_t KK, Py_ssize_t n, Py_ssize_t rows,  \
                 int acc, T b)                                                        \
{                                                                                     \
    const Py_ssize_t nv = (n + L - 1) / L;                                            \
    Py_ssize_t r0 = 0, i, R, U, umax, c0, dl;                                         \
    while (r0 < rows) {                                                               \
        R = rows - r0 >= 3 ? 3 : rows - r0;                                           \
        umax = R == 1 ? 8 : 4;                                                        \
        for (i = 0; i < nv; i += U) {                                                 \
            U = cy_block_vectors(nv, i, umax);                                        \
            c0 = i * L;                                                               \
            dl = cy_block_tail(i, U, n, L);                                           \
            T *yr = y + r0 * ys;                                                      \
            const T *sr = src + r0 * ss;                                              \
            switch (R * 16 + U) {                                                     \
            CY_BLOCK_CASES(CY_TAPS_ROWS_CASE, NAME)                                   \
            CY_TAPS_ROWS_CASE(NAME, 1, 5) CY_TAPS_ROWS_CASE(NAME, 1, 6)               \
            CY_TAPS_ROWS_CASE(NAME, 1, 7) CY_TAPS_ROWS_CASE(NAME, 1, 8)               \
            }                                                                         \
        }                                                                             \
        r0 += R;                                                                      \
    }                                                                                 \
}

#define CY_TAPS_ROWS_CASE(NAME, R_, U_)                                                \
    case R_ * 16 + U_:                                                                \
        NAME##_blk(yr, ys, sr, ss, wt, off, KK, c0, dl, acc, b, R_, U_); break;

CY_DEFINE_TAPS_ROWS(cy_taps_rows_f, float, cy_v8f, 8)
CY_DEFINE_TAPS_ROWS(cy_taps_rows_d, double, cy_v4d, 4)

/* One register block of dw_rows: R rows x U vectors (as in taps_rows); 12 sums, three
 * weights and the loaded vector fill the 16 vector registers. */
#define CY_DEFINE_DW_ROWS(NAME, T, V, L)                                               \
static inline __attribute__((always_inline)) void NAME##_blk(                          \
    T *y, Py_ssize_t ys, const T *src, Py_ssize_t ss, const T *wt, Py_ssize_t KW,     \
    Py_ssize_t dw, Py_ssize_t c0, Py_ssize_t dl, T b, const int R, const int U)       \
{                                                                                     \
    V a[3][4], w[3];                                                                  \
    int r, u, i, k;                                                                   \
    Py_ssize_t kw;                                                                    \
    _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                                   \
        _Pragma("GCC unroll 4") for (u = 0; u < U; u++)                               \
            a[r][u] = (V){0} + b;                                                     \
    for (kw = 0; kw < KW; kw++) {                                                     \
        const T *s = src + kw * dw + c0;                                              \
        _Pragma("GCC unroll 3") for (k = 0; k < 3; k++)                               \
            w[k] = (V){0} + wt[k * KW + kw];                                          \
        /* input row i feeds output rows r = i - kh */                                \
        _Pragma("GCC unroll 5") for (i = 0; i < R + 2; i++)                           \
            _Pragma("GCC unroll 4") for (u = 0; u < U; u++) {                         \
                V v = *(const V *)(s + i * ss + (u == U - 1 ? dl : u * L));           \
                _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                       \
                    if (i - r >= 0 && i - r < 3)                                      \
                        a[r][u] += w[i - r] * v;                                      \
            }                                                                         \
    }                                                                                 \
    _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                                   \
        _Pragma("GCC unroll 4") for (u = 0; u < U; u++)                               \
            *(V *)(y + r * ys + c0 + (u == U - 1 ? dl : u * L)) = a[r][u];            \
}                                                                                     \
                                                                                      \
static void NAME(T *y, Py_ssize_t ys, const T *src, Py_ssize_t ss, const T *wt,       \
                 Py_ssize_t KW, Py_ssize_t dw, Py_ssize_t n, Py_ssize_t rows, T b)    \
{                                                                                     \
    const Py_ssize_t nv = (n + L - 1) / L;                                            \
    Py_ssize_t r0 = 0, i, R, U, c0, dl;                                               \
    while (r0 < rows) {                                                               \
        R = rows - r0 >= 3 ? 3 : rows - r0;                                           \
        for (i = 0; i < nv; i += U) {                                                 \
            U = cy_block_vectors(nv, i, 4);                                           \
            c0 = i * L;                                                               \
            dl = cy_block_tail(i, U, n, L);                                           \
            T *yr = y + r0 * ys;                                                      \
            const T *sr = src + r0 * ss;                                              \
            switch (R * 16 + U) {                                                     \
            CY_BLOCK_CASES(CY_DW_ROWS_CASE, NAME)                                     \
            }                                                                         \
        }                                                                             \
        r0 += R;                                                                      \
    }                                                                                 \
}

#define CY_DW_ROWS_CASE(NAME, R_, U_)                                                  \
    case R_ * 16 + U_:                                                                \
        NAME##_blk(yr, ys, sr, ss, wt, KW, dw, c0, dl, b, R_, U_); break;

CY_DEFINE_DW_ROWS(cy_dw_rows_f, float, cy_v8f, 8)
CY_DEFINE_DW_ROWS(cy_dw_rows_d, double, cy_v4d, 4)

/* fill_check: dst[r * ds + i] = src[r * n + i] for rows r < R, i < n; nonzero when a
 * copied value is NaN or +-Inf.  v - v is 0 for every finite v and NaN otherwise: the
 * per-lane sums stay 0 or turn NaN (two vector operations per copied vector, one
 * reduction per call); tail elements are compared one by one (no dependent chain).
 * all_finite: the same test without the copy. */
#define CY_DEFINE_FILL_CHECK(NAME, T, V, L)                                            \
static int NAME##_fill_check(T *dst, Py_ssize_t ds, const T *src, Py_ssize_t R,       \
                             Py_ssize_t n)                                            \
{                                                                                     \
    V z = {0};                                                                        \
    int bad = 0;                                                                      \
    Py_ssize_t r, i;                                                                  \
    for (r = 0; r < R; r++, dst += ds, src += n) {                                    \
        for (i = 0; i + L <= n; i += L) {                                             \
            V v = *(const V *)(src + i);                                              \
            *(V *)(dst + i) = v;                                                      \
            z += v - v;                                                               \
        }                                                                             \
        for (; i < n; i++) {                                                          \
            T v = src[i];                                                             \
            dst[i] = v;                                                               \
            bad |= v - v != 0;                                                        \
        }                                                                             \
    }                                                                                 \
    for (i = 0; i < L; i++)                                                           \
        bad |= z[i] != 0;                                                             \
    return bad;                                                                       \
}                                                                                     \
                                                                                      \
static int NAME##_all_finite(const T *a, Py_ssize_t n)                                \
{                                                                                     \
    V z = {0}, z1 = {0}, z2 = {0}, z3 = {0};   /* four chains: not latency-bound */   \
    int bad = 0;                                                                      \
    Py_ssize_t i;                                                                     \
    for (i = 0; i + 4 * L <= n; i += 4 * L) {                                         \
        V v0 = *(const V *)(a + i), v1 = *(const V *)(a + i + L);                     \
        V v2 = *(const V *)(a + i + 2 * L), v3 = *(const V *)(a + i + 3 * L);         \
        z += v0 - v0; z1 += v1 - v1; z2 += v2 - v2; z3 += v3 - v3;                    \
    }                                                                                 \
    z += z1 + z2 + z3;                                                                \
    for (; i + L <= n; i += L)                                                        \
        z += *(const V *)(a + i) - *(const V *)(a + i);                               \
    for (; i < n; i++)                                                                \
        bad |= a[i] - a[i] != 0;                                                      \
    for (i = 0; i < L; i++)                                                           \
        bad |= z[i] != 0;                                                             \
    return !bad;                                                                      \
}

CY_DEFINE_FILL_CHECK(cy_f, float, cy_v8f, 8)
CY_DEFINE_FILL_CHECK(cy_d, double, cy_v4d, 4)

/* Lane shuffles of two vectors (indices into their concatenation). */
typedef int cy_v8i __attribute__((vector_size(32)));
typedef long long cy_v4l __attribute__((vector_size(32)));
#if defined(__clang__)
#define CY_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#define CY_SHUF4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define CY_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shuffle(a, b, (cy_v8i){i0, i1, i2, i3, i4, i5, i6, i7})
#define CY_SHUF4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (cy_v4l){i0, i1, i2, i3})
#endif
/* even lanes of a:b; c's lanes doubled (low and high half); even lanes of s, odd of a */
/* In-register transposes of an L x L block (rows in r0..): three rounds of two-vector
 * shuffles for float32 (unpack, pair, halves), two for float64. */
#define CY_T8(r0, r1, r2, r3, r4, r5, r6, r7) do {                                          \
    cy_v8f t0 = CY_SHUF8(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);                                 \
    cy_v8f t1 = CY_SHUF8(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);                               \
    cy_v8f t2 = CY_SHUF8(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);                                 \
    cy_v8f t3 = CY_SHUF8(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);                               \
    cy_v8f t4 = CY_SHUF8(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13);                                 \
    cy_v8f t5 = CY_SHUF8(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);                               \
    cy_v8f t6 = CY_SHUF8(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13);                                 \
    cy_v8f t7 = CY_SHUF8(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);                               \
    cy_v8f s0 = CY_SHUF8(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);                                 \
    cy_v8f s1 = CY_SHUF8(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);                               \
    cy_v8f s2 = CY_SHUF8(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);                                 \
    cy_v8f s3 = CY_SHUF8(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);                               \
    cy_v8f s4 = CY_SHUF8(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);                                 \
    cy_v8f s5 = CY_SHUF8(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);                               \
    cy_v8f s6 = CY_SHUF8(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);                                 \
    cy_v8f s7 = CY_SHUF8(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);                               \
    r0 = CY_SHUF8(s0, s4, 0, 1, 2, 3, 8, 9, 10, 11);                                        \
    r1 = CY_SHUF8(s1, s5, 0, 1, 2, 3, 8, 9, 10, 11);                                        \
    r2 = CY_SHUF8(s2, s6, 0, 1, 2, 3, 8, 9, 10, 11);                                        \
    r3 = CY_SHUF8(s3, s7, 0, 1, 2, 3, 8, 9, 10, 11);                                        \
    r4 = CY_SHUF8(s0, s4, 4, 5, 6, 7, 12, 13, 14, 15);                                      \
    r5 = CY_SHUF8(s1, s5, 4, 5, 6, 7, 12, 13, 14, 15);                                      \
    r6 = CY_SHUF8(s2, s6, 4, 5, 6, 7, 12, 13, 14, 15);                                      \
    r7 = CY_SHUF8(s3, s7, 4, 5, 6, 7, 12, 13, 14, 15);                                      \
} while (0)

#define CY_T4(r0, r1, r2, r3) do {                                                          \
    cy_v4d t0 = CY_SHUF4(r0, r1, 0, 4, 2, 6), t1 = CY_SHUF4(r0, r1, 1, 5, 3, 7);            \
    cy_v4d t2 = CY_SHUF4(r2, r3, 0, 4, 2, 6), t3 = CY_SHUF4(r2, r3, 1, 5, 3, 7);            \
    r0 = CY_SHUF4(t0, t2, 0, 1, 4, 5); r1 = CY_SHUF4(t1, t3, 0, 1, 4, 5);                   \
    r2 = CY_SHUF4(t0, t2, 2, 3, 6, 7); r3 = CY_SHUF4(t1, t3, 2, 3, 6, 7);                   \
} while (0)

#define CY_EVEN_f(a, b) CY_SHUF8(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define CY_DUPLO_f(c) CY_SHUF8(c, c, 0, 0, 1, 1, 2, 2, 3, 3)
#define CY_DUPHI_f(c) CY_SHUF8(c, c, 4, 4, 5, 5, 6, 6, 7, 7)
#define CY_MIX_f(s, a) CY_SHUF8(s, a, 0, 9, 2, 11, 4, 13, 6, 15)
#define CY_EVEN_d(a, b) CY_SHUF4(a, b, 0, 2, 4, 6)
#define CY_DUPLO_d(c) CY_SHUF4(c, c, 0, 0, 1, 1)
#define CY_DUPHI_d(c) CY_SHUF4(c, c, 2, 2, 3, 3)
#define CY_MIX_d(s, a) CY_SHUF4(s, a, 0, 5, 2, 7)

/* gather2 and scatter2: a vector of src (dst) values spans 2L of dst (src), the last
 * one unused, so the vector loops stop one element early and the scalar loops finish:
 * nothing beyond [0, 2n - 1) of the strided side is ever read or written.  scatter2
 * writes the odd lanes back unchanged (a blend, not an add of zero: -0 stays -0). */
#define CY_DEFINE_STRIDE2(S, T, V, L)                                                  \
static void cy_gather2_##S(T *dst, const T *src, Py_ssize_t n)                        \
{                                                                                     \
    Py_ssize_t j = 0;                                                                 \
    for (; j + L < n; j += L)                                                         \
        *(V *)(dst + j) = CY_EVEN_##S(*(const V *)(src + 2 * j),                      \
                                      *(const V *)(src + 2 * j + L));                 \
    for (; j < n; j++)                                                                \
        dst[j] = src[2 * j];                                                          \
}                                                                                     \
                                                                                      \
static void cy_scatter2_##S(T *dst, const T *src, Py_ssize_t n)                       \
{                                                                                     \
    Py_ssize_t j = 0;                                                                 \
    for (; j + L < n; j += L) {                                                       \
        V c = *(const V *)(src + j);                                                  \
        V a = *(const V *)(dst + 2 * j), b = *(const V *)(dst + 2 * j + L);           \
        V sa = a + (V)CY_DUPLO_##S(c), sb = b + (V)CY_DUPHI_##S(c);                   \
        *(V *)(dst + 2 * j) = CY_MIX_##S(sa, a);                                      \
        *(V *)(dst + 2 * j + L) = CY_MIX_##S(sb, b);                                  \
    }                                                                                 \
    for (; j < n; j++)                                                                \
        dst[2 * j] += src[j];                                                         \
}

CY_DEFINE_STRIDE2(f, float, cy_v8f, 8)
CY_DEFINE_STRIDE2(d, double, cy_v4d, 4)

/* dw_same3: one depthwise 3x3 "same" plane (unit strides and dilation, padding 1 on
 * every side, H x W in, H x W out), read straight from x with no staged copy:
 *     y[h, j] = b + sum_{kh, kw < 3} wt[kh * 3 + kw] * x[h + kh - 1, j + kw - 1]
 * Blocks as in dw_rows (up to 3 rows x 4 vectors, kw outermost, each input vector
 * loaded once for every output row it feeds).  The padding is never stored: input rows
 * above and below the plane are the zero row `zero` (W elements), and the columns -1
 * and W are shifted in as zero lanes (CY_SHR1_* / CY_SHL1_*: the first vector's kw = 0
 * input is x[0:L] moved one lane up, the last vector's kw = 2 input is x[W-L:W] moved
 * one lane down), so nothing outside x's rows is ever read.  W >= L. */
#define CY_SHR1_f(v, z) CY_SHUF8(z, v, 0, 8, 9, 10, 11, 12, 13, 14)
#define CY_SHL1_f(v, z) CY_SHUF8(v, z, 1, 2, 3, 4, 5, 6, 7, 8)
#define CY_SHR1_d(v, z) CY_SHUF4(z, v, 0, 4, 5, 6)
#define CY_SHL1_d(v, z) CY_SHUF4(v, z, 1, 2, 3, 4)

#ifndef CY_DW_AHEAD
#define CY_DW_AHEAD 2048
#endif
/* x[r, c + kw - 1 : c + kw - 1 + L] for the vector at column c of a row (s = x + r * W
 * + c), the padding column shifted in as a zero lane by the first vector (LEFT, kw = 0)
 * and the last (RIGHT, kw = 2): the input vector of every 3x3 'same' row kernel. */
#define CY_DEFINE_DW3_IN(S, T, V)                                                      \
static inline __attribute__((always_inline)) V cy_dw3_in_##S(                          \
    const T *s, int kw, const int LEFT, const int RIGHT)                              \
{                                                                                     \
    V z = {0};                                                                        \
    if (LEFT && kw == 0)                                                              \
        return CY_SHR1_##S(*(const V *)s, z);                                         \
    if (RIGHT && kw == 2)                                                             \
        return CY_SHL1_##S(*(const V *)s, z);                                         \
    return *(const V *)(s + kw - 1);                                                  \
}

CY_DEFINE_DW3_IN(f, float, cy_v8f)
CY_DEFINE_DW3_IN(d, double, cy_v4d)

#define CY_DEFINE_DW_SAME3(S, T, V, L)                                                 \
static inline __attribute__((always_inline)) void cy_dw_same3_blk_##S(                 \
    T *y, Py_ssize_t ys, const T *const *row, const T *wt, Py_ssize_t c0,             \
    Py_ssize_t dl, T b, const int R, const int U, const int LEFT, const int RIGHT)    \
{                                                                                     \
    V a[3][4], w[3];                                                                  \
    int r, u, i, k, kw;                                                               \
    _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                                   \
        _Pragma("GCC unroll 4") for (u = 0; u < U; u++)                               \
            a[r][u] = (V){0} + b;                                                     \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++) {                              \
        _Pragma("GCC unroll 3") for (k = 0; k < 3; k++)                               \
            w[k] = (V){0} + wt[k * 3 + kw];                                           \
        _Pragma("GCC unroll 5") for (i = 0; i < R + 2; i++)                           \
            _Pragma("GCC unroll 4") for (u = 0; u < U; u++) {                         \
                V v = cy_dw3_in_##S(row[i] + c0 + (u == U - 1 ? dl : u * L), kw,      \
                                    LEFT && u == 0, RIGHT && u == U - 1);             \
                _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                       \
                    if (i - r >= 0 && i - r < 3)                                      \
                        a[r][u] += w[i - r] * v;                                      \
            }                                                                         \
    }                                                                                 \
    _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                                   \
        _Pragma("GCC unroll 4") for (u = 0; u < U; u++)                               \
            *(V *)(y + r * ys + c0 + (u == U - 1 ? dl : u * L)) = a[r][u];            \
}                                                                                     \
                                                                                      \
static void cy_dw_same3_##S(T *y, const T *x, const T *zero, Py_ssize_t H,            \
                            Py_ssize_t W, const T *wt, T b)                           \
{                                                                                     \
    const Py_ssize_t nv = (W + L - 1) / L;                                            \
    const T *row[5];                                                                  \
    Py_ssize_t r0, i, R, U, c0, dl, h;                                                \
    for (r0 = 0; r0 < H; r0 += R) {                                                   \
        R = H - r0 >= 3 ? 3 : H - r0;                                                 \
        for (i = 0; i < R + 2; i++) {                                                 \
            h = r0 + i - 1;                                                           \
            row[i] = h >= 0 && h < H ? x + h * W : zero;                              \
        }                                                                             \
        /* the rows CY_DW_AHEAD bytes on (into the next plane near the end) */       \
        for (i = 0; i < R * W * (Py_ssize_t)sizeof(T); i += 64) {                     \
            cy_prefetch((const char *)(x + (r0 + 2) * W) + CY_DW_AHEAD + i);          \
            cy_prefetchw((char *)(y + r0 * W) + CY_DW_AHEAD + i);                     \
        }                                                                             \
        for (i = 0; i < nv; i += U) {                                                 \
            U = cy_block_vectors(nv, i, 4);                                           \
            c0 = i * L;                                                               \
            dl = cy_block_tail(i, U, W, L);                                           \
            T *yr = y + r0 * W;                                                       \
            switch ((R * 16 + U) * 4 + (i == 0) * 2 + (i + U == nv)) {                \
            CY_BLOCK_CASES(CY_DW_SAME3_EDGES, S)                                      \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
}

/* the four edge variants of one (R, U) block shape */
#define CY_DW_SAME3_EDGES(S, R_, U_)                                                   \
    case (R_ * 16 + U_) * 4 + 0:                                                      \
        cy_dw_same3_blk_##S(yr, W, row, wt, c0, dl, b, R_, U_, 0, 0); break;          \
    case (R_ * 16 + U_) * 4 + 1:                                                      \
        cy_dw_same3_blk_##S(yr, W, row, wt, c0, dl, b, R_, U_, 0, 1); break;          \
    case (R_ * 16 + U_) * 4 + 2:                                                      \
        cy_dw_same3_blk_##S(yr, W, row, wt, c0, dl, b, R_, U_, 1, 0); break;          \
    case (R_ * 16 + U_) * 4 + 3:                                                      \
        cy_dw_same3_blk_##S(yr, W, row, wt, c0, dl, b, R_, U_, 1, 1); break;

CY_DEFINE_DW_SAME3(f, float, cy_v8f, 8)
CY_DEFINE_DW_SAME3(d, double, cy_v4d, 4)

/* dw_same3_strips: the plane of dw_same3, for planes of at most CY_DW_STRIPS_MAX bytes
 * (MobileNet's 14x14 and 28x28 layers), as rolling rows: a strip of one or two vectors
 * of columns walks down the plane one input row at a time.  Each input row is loaded
 * once per kw (three loads per output vector, dw_same3 needs five) and feeds the three
 * output rows that read it, whose sums stay in registers: A (row r - 1, tap kh = 2:
 * then complete and stored), B (row r, kh = 1), C (row r + 1, kh = 0, started from the
 * bias).  The nine weights stay in registers too: 9 + 3U + 1 of the 16 vector
 * registers, where dw_same3's 3-row blocks spill.  Interleaved on whole layers (float32,
 * batch 8, 2 threads) it takes 0.56-0.65 of dw_same3's time at 14x14 to 32x32, 0.83 at
 * 40x40, 0.89 at 48x48, 0.99 at 56x56 and 1.12 at 64x64: once x's and y's planes
 * outgrow L1 the strips' column order loses to dw_same3's row-major streaming, hence
 * the limit.  The first strip prefetches whole rows CY_DW_STRIPS_AHEAD rows down, for
 * the strips after it (near the end: the next plane's first rows).
 *
 * The padding is never stored: rows -1 and H are a zero vector, multiplied in like any
 * row (a non-finite weight meets the padding as 0 * Inf = NaN, as in the reference),
 * and the columns -1 and W are zero lanes shifted in as in dw_same3.  Sums run
 * kh-major (bias, the kh = 0 taps, kh = 1, kh = 2; kw ascending in each), not in
 * dw_same3's order: the two differ in the last bits.  W >= L. */
#ifndef CY_DW_STRIPS_MAX
#define CY_DW_STRIPS_MAX 10240
#endif
#ifndef CY_DW_STRIPS_AHEAD
#define CY_DW_STRIPS_AHEAD 4
#endif
#define CY_DEFINE_DW_STRIPS3(S, T, V, L)                                               \
/* one input row xr (the zero row when ZERO) into the sums that read it: A (kh = 2),   \
 * B (kh = 1), C (kh = 0, started from the bias), each only when DA / DB / DC */      \
static inline __attribute__((always_inline)) void cy_dw_strips3_row_##S(               \
    V *A, V *B, V *C, const T *xr, Py_ssize_t c0, Py_ssize_t dl, const V *w, V bv,    \
    const int U, const int LEFT, const int RIGHT, const int DA, const int DB,         \
    const int DC, const int ZERO)                                                     \
{                                                                                     \
    int u, kw;                                                                        \
    if (DC)                                                                           \
        _Pragma("GCC unroll 2") for (u = 0; u < U; u++)                               \
            C[u] = bv;                                                                \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++)                                \
        _Pragma("GCC unroll 2") for (u = 0; u < U; u++) {                             \
            V v = {0};                                                                \
            if (!ZERO)                                                                \
                v = cy_dw3_in_##S(xr + c0 + (u == U - 1 ? dl : u * L), kw,            \
                                  LEFT && u == 0, RIGHT && u == U - 1);               \
            if (DA)                                                                   \
                A[u] += w[6 + kw] * v;                                                \
            if (DB)                                                                   \
                B[u] += w[3 + kw] * v;                                                \
            if (DC)                                                                   \
                C[u] += w[kw] * v;                                                    \
        }                                                                             \
}                                                                                     \
                                                                                      \
/* the strip of U vectors at columns c0 (+ L), its last one at c0 + dl */             \
static inline __attribute__((always_inline)) void cy_dw_strips3_strip_##S(             \
    T *y, const T *x, Py_ssize_t H, Py_ssize_t W, const V *w, V bv, Py_ssize_t c0,    \
    Py_ssize_t dl, const int U, const int LEFT, const int RIGHT)                      \
{                                                                                     \
    V A[2], B[2], C[2];                                                               \
    Py_ssize_t r, j;                                                                  \
    int u;                                                                            \
    T *yr;                                                                            \
    /* row -1 (zeros) starts output row 0; row 0 adds to it and starts row 1 */       \
    cy_dw_strips3_row_##S(A, B, C, x, c0, dl, w, bv, U, LEFT, RIGHT, 0, 0, 1, 1);     \
    _Pragma("GCC unroll 2") for (u = 0; u < U; u++)                                   \
        B[u] = C[u];                                                                  \
    cy_dw_strips3_row_##S(A, B, C, x, c0, dl, w, bv, U, LEFT, RIGHT, 0, 1, 1, 0);     \
    _Pragma("GCC unroll 2") for (u = 0; u < U; u++) {                                 \
        A[u] = B[u];                                                                  \
        B[u] = C[u];                                                                  \
    }                                                                                 \
    for (r = 1; r < H; r++) {                                                         \
        cy_dw_strips3_row_##S(A, B, C, x + r * W, c0, dl, w, bv, U, LEFT, RIGHT,      \
                              1, 1, 1, 0);                                            \
        yr = y + (r - 1) * W + c0;                                                    \
        _Pragma("GCC unroll 2") for (u = 0; u < U; u++) {                             \
            *(V *)(yr + (u == U - 1 ? dl : u * L)) = A[u];                            \
            A[u] = B[u];                                                              \
            B[u] = C[u];                                                              \
        }                                                                             \
        if (LEFT)                                                                     \
            for (j = 0; j < W * (Py_ssize_t)sizeof(T); j += 64) {                     \
                cy_prefetch((const char *)(x + (r + CY_DW_STRIPS_AHEAD) * W) + j);    \
                cy_prefetchw((char *)(y + (r + CY_DW_STRIPS_AHEAD) * W) + j);         \
            }                                                                         \
    }                                                                                 \
    /* row H (zeros) completes output row H - 1 */                                    \
    cy_dw_strips3_row_##S(A, B, C, x, c0, dl, w, bv, U, LEFT, RIGHT, 1, 0, 0, 1);     \
    yr = y + (H - 1) * W + c0;                                                        \
    _Pragma("GCC unroll 2") for (u = 0; u < U; u++)                                   \
        *(V *)(yr + (u == U - 1 ? dl : u * L)) = A[u];                                \
}                                                                                     \
                                                                                      \
static void cy_dw_strips3_##S(T *y, const T *x, Py_ssize_t H, Py_ssize_t W,            \
                              const T *wt, T b)                                       \
{                                                                                     \
    const Py_ssize_t nv = (W + L - 1) / L;                                            \
    V w[9], bv = (V){0} + b;                                                          \
    Py_ssize_t i, U, c0, dl;                                                          \
    int k;                                                                            \
    for (k = 0; k < 9; k++)                                                           \
        w[k] = (V){0} + wt[k];                                                        \
    for (i = 0; i < nv; i += U) {                                                     \
        U = nv - i >= 2 ? 2 : 1;                                                      \
        c0 = i * L;                                                                   \
        dl = cy_block_tail(i, U, W, L);                                               \
        switch (U * 4 + (i == 0) * 2 + (i + U == nv)) {                               \
        CY_DW_STRIPS3_EDGES(S, 1) CY_DW_STRIPS3_EDGES(S, 2)                           \
        }                                                                             \
    }                                                                                 \
}

/* the four edge variants of a strip of U_ vectors */
#define CY_DW_STRIPS3_EDGES(S, U_)                                                     \
    case U_ * 4 + 0:                                                                  \
        cy_dw_strips3_strip_##S(y, x, H, W, w, bv, c0, dl, U_, 0, 0); break;          \
    case U_ * 4 + 1:                                                                  \
        cy_dw_strips3_strip_##S(y, x, H, W, w, bv, c0, dl, U_, 0, 1); break;          \
    case U_ * 4 + 2:                                                                  \
        cy_dw_strips3_strip_##S(y, x, H, W, w, bv, c0, dl, U_, 1, 0); break;          \
    case U_ * 4 + 3:                                                                  \
        cy_dw_strips3_strip_##S(y, x, H, W, w, bv, c0, dl, U_, 1, 1); break;

CY_DEFINE_DW_STRIPS3(f, float, cy_v8f, 8)
CY_DEFINE_DW_STRIPS3(d, double, cy_v4d, 4)



/* Horizontal sum of a vector, lanes added pairwise in a fixed order. */
#define CY_HSUM(T, L, v) ({                                                           \
    T h_[L]; int l_, s_;                                                              \
    *(__typeof__(v) *)h_ = (v);                                                       \
    for (s_ = L / 2; s_ > 0; s_ /= 2)                                                 \
        for (l_ = 0; l_ < s_; l_++)                                                   \
            h_[l_] += h_[l_ + s_];                                                    \
    h_[0]; })

/* dw_same3_dot: the weight gradient of one dw_same3 plane,
 *     out[kh * 3 + kw] += sum_{h, j} g[h, j] * x[h + kh - 1, j + kw - 1]  (zero outside)
 * with the same zero row and shifted-in zero lanes for the padding.  A block is up to 3
 * rows of g by one vector: its g vectors stay in registers while each input vector is
 * loaded once per kw and multiplied into every tap sum it belongs to (9 vector sums).
 * The row's last vector overlaps the one before it (W not a multiple of L): its first
 * ov lanes are cleared in g *and* in x (a bit mask), so they add exactly +0 even where
 * x holds Inf or NaN.  The order of the sums depends on H and W only. */
#define CY_DEFINE_DW_SAME3_DOT(S, T, V, VI, L)                                         \
/* lanes kept in a row's overlapping last vector: all but its first ov (all if 0) */  \
static inline VI cy_dw_keep_##S(Py_ssize_t ov)                                        \
{                                                                                     \
    VI lane, keep;                                                                    \
    int i;                                                                            \
    for (i = 0; i < L; i++) {                                                         \
        lane[i] = i;                                                                  \
        keep[i] = ov;                                                                 \
    }                                                                                 \
    return lane >= keep;                                                              \
}                                                                                     \
                                                                                      \
static inline __attribute__((always_inline)) void cy_dw_same3_dot_blk_##S(             \
    V *acc, const T *g, Py_ssize_t W, const T *const *row, Py_ssize_t p, VI keep,     \
    const int R, const int LEFT, const int RIGHT, const int MASK)                     \
{                                                                                     \
    V G[3];                                                                           \
    int r, i, kw;                                                                     \
    _Pragma("GCC unroll 3") for (r = 0; r < R; r++) {                                 \
        G[r] = *(const V *)(g + r * W + p);                                           \
        if (MASK)                                                                     \
            G[r] = (V)((VI)G[r] & keep);                                              \
    }                                                                                 \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++)                                \
        _Pragma("GCC unroll 5") for (i = 0; i < R + 2; i++) {                         \
            V v = cy_dw3_in_##S(row[i] + p, kw, LEFT, RIGHT);                         \
            if (MASK)                                                                 \
                v = (V)((VI)v & keep);                                                \
            _Pragma("GCC unroll 3") for (r = 0; r < R; r++)                           \
                if (i - r >= 0 && i - r < 3)                                          \
                    acc[(i - r) * 3 + kw] += G[r] * v;                                \
        }                                                                             \
}                                                                                     \
                                                                                      \
static void cy_dw_same3_dot_##S(T *out, const T *g, const T *x, const T *zero,        \
                                Py_ssize_t H, Py_ssize_t W)                           \
{                                                                                     \
    const Py_ssize_t nv = (W + L - 1) / L, ov = nv * L - W;                           \
    const VI keep = cy_dw_keep_##S(ov);                                                \
    V a[9];                                                                           \
    const T *row[5];                                                                  \
    Py_ssize_t r0, i, u, R, p, h;                                                     \
    for (i = 0; i < 9; i++)                                                           \
        a[i] = (V){0};                                                                \
    for (r0 = 0; r0 < H; r0 += R) {                                                   \
        R = H - r0 >= 3 ? 3 : H - r0;                                                 \
        for (i = 0; i < R + 2; i++) {                                                 \
            h = r0 + i - 1;                                                           \
            row[i] = h >= 0 && h < H ? x + h * W : zero;                              \
        }                                                                             \
        for (i = 0; i < R * W * (Py_ssize_t)sizeof(T); i += 64) {                     \
            cy_prefetch((const char *)(x + (r0 + 2) * W) + CY_DW_AHEAD + i);          \
            cy_prefetch((const char *)(g + r0 * W) + CY_DW_AHEAD + i);                \
        }                                                                             \
        const T *gr = g + r0 * W;                                                     \
        for (u = 0; u < nv; u++) {                                                    \
            p = u < nv - 1 ? u * L : W - L;                                           \
            switch (R * 8 + (u == 0) * 4 + (u == nv - 1) * 2 + (u == nv - 1 && ov > 0)) { \
            CY_DW_SAME3_DOT_EDGES(S, 3) CY_DW_SAME3_DOT_EDGES(S, 2)                    \
            CY_DW_SAME3_DOT_EDGES(S, 1)                                               \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    for (i = 0; i < 9; i++)                                                           \
        out[i] += CY_HSUM(T, L, a[i]);                                                \
}

/* the five edge variants (interior, left, right, right with overlap, both) of R rows */
#define CY_DW_SAME3_DOT_EDGES(S, R_)                                                   \
    case R_ * 8 + 0: cy_dw_same3_dot_blk_##S(a, gr, W, row, p, keep, R_, 0, 0, 0); break; \
    case R_ * 8 + 4: cy_dw_same3_dot_blk_##S(a, gr, W, row, p, keep, R_, 1, 0, 0); break; \
    case R_ * 8 + 2: cy_dw_same3_dot_blk_##S(a, gr, W, row, p, keep, R_, 0, 1, 0); break; \
    case R_ * 8 + 3: cy_dw_same3_dot_blk_##S(a, gr, W, row, p, keep, R_, 0, 1, 1); break; \
    case R_ * 8 + 6: cy_dw_same3_dot_blk_##S(a, gr, W, row, p, keep, R_, 1, 1, 0); break;

CY_DEFINE_DW_SAME3_DOT(f, float, cy_v8f, cy_v8i, 8)
CY_DEFINE_DW_SAME3_DOT(d, double, cy_v4d, cy_v4l, 4)

/* dw_same3_strips_dot: the weight gradient of a dw_same3_strips plane (at most
 * CY_DW_STRIPS_MAX bytes), in the same rolling order: one vector column walks down the
 * plane, each input row loaded once per kw and multiplied into the three tap sums that
 * read it, against the output-gradient rows r + 1 (kh = 0), r (kh = 1) and r - 1
 * (kh = 2), which roll through three registers: 4 loads per 9 multiply-adds where
 * dw_same3_dot's 3-row blocks need 6.  The padding rows and columns are multiplied in as
 * zeros (an Inf in g meets them as NaN, as in the reference), and the overlapping last
 * vector's shared lanes are cleared in g and x as in dw_same3_dot.  The order of the
 * sums depends on H and W only. */
#define CY_DEFINE_DW_STRIPS3_DOT(S, T, V, VI, L)                                       \
/* input row r against g rows r + 1 (when D0), r and r - 1 (when D2) */               \
static inline __attribute__((always_inline)) void cy_dw_strips3_dot_row_##S(           \
    V *a, const T *s, V Gp, V G0, V Gm, VI keep, const int LEFT, const int RIGHT,     \
    const int MASK, const int D0, const int D2)                                       \
{                                                                                     \
    int kw;                                                                           \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++) {                              \
        V v = cy_dw3_in_##S(s, kw, LEFT, RIGHT);                                      \
        if (MASK)                                                                     \
            v = (V)((VI)v & keep);                                                    \
        if (D0)                                                                       \
            a[kw] += Gp * v;                                                          \
        a[3 + kw] += G0 * v;                                                          \
        if (D2)                                                                       \
            a[6 + kw] += Gm * v;                                                      \
    }                                                                                 \
}                                                                                     \
                                                                                      \
static inline __attribute__((always_inline)) void cy_dw_strips3_dot_col_##S(           \
    V *a, const T *g, const T *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t p, VI keep,  \
    const int LEFT, const int RIGHT, const int MASK)                                  \
{                                                                                     \
    V z = {0}, Gm, G0, Gp;                                                            \
    Py_ssize_t r;                                                                     \
    int kw;                                                                           \
    G0 = *(const V *)(g + p);                                                         \
    if (MASK)                                                                         \
        G0 = (V)((VI)G0 & keep);                                                      \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++)     /* row -1: padding */      \
        a[kw] += G0 * z;                                                              \
    if (H == 1) {                                                                     \
        cy_dw_strips3_dot_row_##S(a, x + p, z, G0, z, keep, LEFT, RIGHT, MASK, 0, 0); \
        Gm = G0;                                                                      \
    } else {                                                                          \
        Gp = *(const V *)(g + W + p);                                                 \
        if (MASK)                                                                     \
            Gp = (V)((VI)Gp & keep);                                                  \
        cy_dw_strips3_dot_row_##S(a, x + p, Gp, G0, z, keep, LEFT, RIGHT, MASK, 1, 0); \
        Gm = G0;                                                                      \
        G0 = Gp;                                                                      \
        for (r = 1; r < H - 1; r++) {                                                 \
            Gp = *(const V *)(g + (r + 1) * W + p);                                   \
            if (MASK)                                                                 \
                Gp = (V)((VI)Gp & keep);                                              \
            cy_dw_strips3_dot_row_##S(a, x + r * W + p, Gp, G0, Gm, keep, LEFT, RIGHT, \
                                      MASK, 1, 1);                                    \
            Gm = G0;                                                                  \
            G0 = Gp;                                                                  \
        }                                                                             \
        cy_dw_strips3_dot_row_##S(a, x + (H - 1) * W + p, z, G0, Gm, keep, LEFT,      \
                                  RIGHT, MASK, 0, 1);                                 \
        Gm = G0;                                                                      \
    }                                                                                 \
    _Pragma("GCC unroll 3") for (kw = 0; kw < 3; kw++)     /* row H: padding */       \
        a[6 + kw] += Gm * z;                                                          \
}                                                                                     \
                                                                                      \
static void cy_dw_strips3_dot_##S(T *out, const T *g, const T *x, Py_ssize_t H,        \
                                  Py_ssize_t W)                                       \
{                                                                                     \
    const Py_ssize_t nv = (W + L - 1) / L, ov = nv * L - W;                           \
    const VI keep = cy_dw_keep_##S(ov);                                                \
    V a[9];                                                                           \
    Py_ssize_t i, u, p;                                                               \
    for (i = 0; i < 9; i++)                                                           \
        a[i] = (V){0};                                                                \
    for (u = 0; u < nv; u++) {                                                        \
        p = u < nv - 1 ? u * L : W - L;                                               \
        switch ((u == 0) * 4 + (u == nv - 1) * 2 + (u == nv - 1 && ov > 0)) {         \
        case 0: cy_dw_strips3_dot_col_##S(a, g, x, H, W, p, keep, 0, 0, 0); break;    \
        case 4: cy_dw_strips3_dot_col_##S(a, g, x, H, W, p, keep, 1, 0, 0); break;    \
        case 2: cy_dw_strips3_dot_col_##S(a, g, x, H, W, p, keep, 0, 1, 0); break;    \
        case 3: cy_dw_strips3_dot_col_##S(a, g, x, H, W, p, keep, 0, 1, 1); break;    \
        case 6: cy_dw_strips3_dot_col_##S(a, g, x, H, W, p, keep, 1, 1, 0); break;    \
        }                                                                             \
    }                                                                                 \
    for (i = 0; i < 9; i++)                                                           \
        out[i] += CY_HSUM(T, L, a[i]);                                                \
}

CY_DEFINE_DW_STRIPS3_DOT(f, float, cy_v8f, cy_v8i, 8)
CY_DEFINE_DW_STRIPS3_DOT(d, double, cy_v4d, cy_v4l, 4)

#define CY_DOT_MAX 12    /* taps per pass: 12 sums + g + a product in 16 registers */

#define CY_DEFINE_TAPS_DOT(NAME, T, V, L)                                             \
static inline __attribute__((always_inline)) void                                     \
NAME##_pass(T *out, const T *g, const T *src, const Py_ssize_t *off, int nt,          \
            Py_ssize_t m)                                                             \
{                                                                                     \
    V a[CY_DOT_MAX];                                                                  \
    const T *s[CY_DOT_MAX];                                                           \
    Py_ssize_t i, mv = m / L * L;                                                     \
    int t;                                                                            \
    for (t = 0; t < nt; t++) {                                                        \
        a[t] = (V){0};                                                                \
        s[t] = src + off[t];                                                          \
    }                                                                                 \
    for (i = 0; i < mv; i += L) {                                                     \
        V gv = *(const V *)(g + i);                                                   \
        for (t = 0; t < nt; t++)                                                      \
            a[t] += gv * *(const V *)(s[t] + i);                                      \
    }                                                                                 \
    for (t = 0; t < nt; t++) {                                                        \
        T r = CY_HSUM(T, L, a[t]);                                                    \
        for (i = mv; i < m; i++)                                                      \
            r += g[i] * s[t][i];                                                      \
        out[t] += r;                                                                  \
    }                                                                                 \
}                                                                                     \
                                                                                      \
static void NAME(T *out, const T *g, const T *src, const Py_ssize_t *off,             \
                 Py_ssize_t KK, Py_ssize_t m)                                         \
{                                                                                     \
    Py_ssize_t npass = (KK + CY_DOT_MAX - 1) / CY_DOT_MAX, t = 0;                     \
    for (; npass > 0; npass--) {                                                      \
        int nt = (int)((KK - t + npass - 1) / npass);    /* passes of even size */    \
        switch (nt) {                                                                 \
        case 1: NAME##_pass(out + t, g, src, off + t, 1, m); break;                   \
        case 2: NAME##_pass(out + t, g, src, off + t, 2, m); break;                   \
        case 3: NAME##_pass(out + t, g, src, off + t, 3, m); break;                   \
        case 4: NAME##_pass(out + t, g, src, off + t, 4, m); break;                   \
        case 5: NAME##_pass(out + t, g, src, off + t, 5, m); break;                   \
        case 6: NAME##_pass(out + t, g, src, off + t, 6, m); break;                   \
        case 7: NAME##_pass(out + t, g, src, off + t, 7, m); break;                   \
        case 8: NAME##_pass(out + t, g, src, off + t, 8, m); break;                   \
        case 9: NAME##_pass(out + t, g, src, off + t, 9, m); break;                   \
        case 10: NAME##_pass(out + t, g, src, off + t, 10, m); break;                 \
        case 11: NAME##_pass(out + t, g, src, off + t, 11, m); break;                 \
        default: NAME##_pass(out + t, g, src, off + t, 12, m); break;                 \
        }                                                                             \
        t += nt;                                                                      \
    }                                                                                 \
}

CY_DEFINE_TAPS_DOT(cy_taps_dot_f, float, cy_v8f, 8)
CY_DEFINE_TAPS_DOT(cy_taps_dot_d, double, cy_v4d, 4)

#endif
