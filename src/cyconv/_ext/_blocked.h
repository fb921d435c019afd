/* Channel-blocked direct convolution micro-kernels (the nChw8c layout of oneDNN's
 * jit:avx2 convolution, written with GCC/Clang vector extensions).
 *
 * Layouts, with L lanes per vector (8 floats or 4 doubles in 32 bytes):
 *   input   x[cb][d][h][w][ci]            ci = channel within block cb (L of them)
 *   weight  w[cb][tap][ci][co]            for one block of L output channels
 *
 * One call computes UR (3 .. 6) consecutive output pixels of one output row for one or
 * two blocks of output channels, summing over every input-channel block and every
 * kernel tap:
 *
 *   acc[u][co] = sum_{cb, t, ci} x[cb*xcs + toff[t] + u*xs + ci] * w[cb*wcs + woff[t] + ci*L + co]
 *
 * over the KK taps listed in toff (input offsets) and woff (weight offsets; NULL for
 * taps 0 .. KK-1 in order, t*L*L): a caller may list only the taps that reach real
 * input for these pixels.
 *
 * The 2 x UR accumulators (12 at most) stay in vector registers (of the 16 ymm registers
 * with AVX2, two more hold weights and one the broadcast input), each step of the inner
 * loop being 2 weight loads, UR broadcasts and 2*UR fused multiply-adds.  A row of OW
 * pixels is covered by calls of 6 and a last one or two of 3 .. 5 (see blocked.pyx), so
 * no pixel past the row's end is computed: per pixel, 3 .. 5 ran at 0.80 / 0.89 / 0.92
 * of the rate of 6 (1 thread, 64-512 channels; with fewer than 8 accumulators the
 * 4-cycle FMA latency shows), where rounding a 14-pixel row up to 18 costs 0.78.  The
 * result is transposed back to channel-major order through a small stack tile and
 * written for the nk valid channels and the pixels j + u < jend only.
 *
 * Every listed tap is multiplied out, padding zeros included.  Leaving out a tap that
 * reads only padding changes no bit of the result while the weights are finite (each
 * product is a zero, and acc + 0 == acc; acc starts at +0 and never becomes -0): the
 * caller lists every tap when a weight is NaN or Inf, so those propagate exactly as in
 * the im2col path.
 */
#ifndef CYCONV_BLOCKED_H
#define CYCONV_BLOCKED_H
#include <stddef.h>
#include <Python.h>
#include "_simd.h"

#define CY_UR 6         /* pixels per call at most (12 accumulators with two blocks) */
#define CY_UR_MIN 3     /* the fewest a row-by-row caller asks for (see blocked.pyx) */

/* A vector with every lane = s (one vbroadcastss/sd from memory; "0 + s" would cost an
 * add and turn -0.0 into +0.0). */
#define cy_bcast_f(s) ({ float s_ = (s); (cy_v8f){s_, s_, s_, s_, s_, s_, s_, s_}; })
#define cy_bcast_d(s) ({ double s_ = (s); (cy_v4d){s_, s_, s_, s_}; })

/* y[co*ys + j + u] = tile[co / L][u][co % L] + bias[co] for the nk channels and the
 * pixels j + u < jend of the call. */
#define CY_STORE(T, L, UR, tile, y, ys, nk, j, jend, bias)                             \
    do {                                                                               \
        Py_ssize_t nu_ = jend - j < UR ? jend - j : UR, u_, co_;                       \
        for (co_ = 0; co_ < nk; co_++) {                                               \
            T bv_ = bias ? bias[co_] : (T)0;                                           \
            T *yc_ = y + co_ * ys + j;                                                 \
            for (u_ = 0; u_ < nu_; u_++)                                               \
                yc_[u_] = tile[co_ / L][u_][co_ % L] + bv_;                            \
        }                                                                              \
    } while (0)

/* The micro-kernel for UR pixels and NB (1 or 2) output blocks; the loops over u and b
 * have constant trip counts and unroll fully, the accumulators living in registers.
 * The dispatchers below are kept out of line: inlined into the caller, a body of eight
 * kernels gets worse register allocation. */
#define CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, NB, UR)                                 \
static inline __attribute__((always_inline)) void                                      \
NAME##_##NB##_##UR##_(T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend, \
          const T *x, Py_ssize_t xs, Py_ssize_t xcs,                                    \
          const T *w0, Py_ssize_t wblk, Py_ssize_t wcs, const Py_ssize_t *toff,         \
          const Py_ssize_t *woff, Py_ssize_t KK, Py_ssize_t CB, const T *bias)          \
{                                                                                      \
    V acc[NB][UR];                                                                     \
    Py_ssize_t cb, t, ci;                                                              \
    _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                            \
        _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++)                        \
            acc[b_][u_] = (V){0};                                                      \
    for (cb = 0; cb < CB; cb++) {                                                      \
        const T *xc = x + cb * xcs, *wc = w0 + cb * wcs;                               \
        for (t = 0; t < KK; t++) {                                                     \
            const T *s = xc + toff[t], *p[NB];                                         \
            _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                    \
                p[b_] = wc + b_ * wblk + (woff ? woff[t] : t * L * L);                 \
            for (ci = 0; ci < L; ci++) {                                               \
                V v[NB];                                                               \
                _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                \
                    v[b_] = *(const V *)(p[b_] + ci * L);                              \
                _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++) {              \
                    V bc = BC(s[u_ * xs + ci]);                                        \
                    _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)            \
                        acc[b_][u_] += bc * v[b_];                                     \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    {                                                                                  \
        T tile[NB][UR][L];                                                             \
        _Pragma("GCC unroll 2") for (int b_ = 0; b_ < NB; b_++)                        \
            _Pragma("GCC unroll 6") for (int u_ = 0; u_ < UR; u_++)                    \
                *(V *)tile[b_][u_] = acc[b_][u_];                                      \
        CY_STORE(T, L, UR, tile, y, ys, nk, j, jend, bias);                            \
    }                                                                                  \
}

/* One call over ur (CY_UR_MIN .. CY_UR) pixels and nb (1 or 2) output blocks, the
 * second block's weights wblk after the first's.  woff == NULL: taps 0 .. KK-1 with
 * contiguous weights (the inner loop then steps the weight pointers, as without listed
 * taps); else the listed weight offsets. */
#define CY_BLOCKED_CASE(NAME, NB, UR)                                                  \
    case UR:                                                                           \
        if (woff)                                                                      \
            NAME##_##NB##_##UR##_(y, ys, nk, j, jend, x, xs, xcs, w0, wblk, wcs, toff,  \
                                  woff, KK, CB, bias);                                 \
        else                                                                           \
            NAME##_##NB##_##UR##_(y, ys, nk, j, jend, x, xs, xcs, w0, wblk, wcs, toff,  \
                                  NULL, KK, CB, bias);                                 \
        break;

#define CY_DEFINE_BLOCKED_NB(NAME, T, NB)                                              \
static __attribute__((noinline)) void                                                  \
NAME##_##NB(int ur, T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,   \
            const T *x, Py_ssize_t xs, Py_ssize_t xcs, const T *w0, Py_ssize_t wblk,    \
            Py_ssize_t wcs, const Py_ssize_t *toff, const Py_ssize_t *woff,             \
            Py_ssize_t KK, Py_ssize_t CB, const T *bias)                                \
{                                                                                      \
    switch (ur) {                                                                      \
    CY_BLOCKED_CASE(NAME, NB, 3)                                                       \
    CY_BLOCKED_CASE(NAME, NB, 4)                                                       \
    CY_BLOCKED_CASE(NAME, NB, 5)                                                       \
    default:                                                                           \
    CY_BLOCKED_CASE(NAME, NB, 6)                                                       \
    }                                                                                  \
}

#define CY_DEFINE_BLOCKED(NAME, T, V, L, BC)                                           \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 1, 3)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 1, 4)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 1, 5)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 1, 6)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 2, 3)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 2, 4)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 2, 5)                                      \
    CY_DEFINE_BLOCKED_UR(NAME, T, V, L, BC, 2, 6)                                      \
    CY_DEFINE_BLOCKED_NB(NAME, T, 1)                                                   \
    CY_DEFINE_BLOCKED_NB(NAME, T, 2)

CY_DEFINE_BLOCKED(cy_blk_f, float, cy_v8f, 8, cy_bcast_f)
CY_DEFINE_BLOCKED(cy_blk_d, double, cy_v4d, 4, cy_bcast_d)

/* One full output block's weights in the micro-kernels' layout (blocked.pyx's
 * pack_weights):
 *
 *   dst[((c / L * KK + t) * L + c % L) * L + co] = w[co * rs + c * KK + t]
 *
 * for co < L and the n = Cg * KK entries r = c * KK + t of each of the L weight rows (rs
 * apart): L consecutive entries of every row at a time, transposed in registers, so each
 * store is one vector (element by element, the strided reads and single-float stores
 * cost more than the micro-kernels themselves at batch 1).  Blocks with fewer than L
 * output channels, and flipped weights, are packed element by element by the caller. */
static void cy_blk_pack_f(const float *w, Py_ssize_t rs, Py_ssize_t n, Py_ssize_t KK,
                          float *dst)
{
    Py_ssize_t r = 0, c = 0, t = 0, i, co;
    for (; r + 8 <= n; r += 8) {
        cy_v8f r0 = *(const cy_v8f *)(w + r), r1 = *(const cy_v8f *)(w + rs + r);
        cy_v8f r2 = *(const cy_v8f *)(w + 2 * rs + r), r3 = *(const cy_v8f *)(w + 3 * rs + r);
        cy_v8f r4 = *(const cy_v8f *)(w + 4 * rs + r), r5 = *(const cy_v8f *)(w + 5 * rs + r);
        cy_v8f r6 = *(const cy_v8f *)(w + 6 * rs + r), r7 = *(const cy_v8f *)(w + 7 * rs + r);
        CY_T8(r0, r1, r2, r3, r4, r5, r6, r7);
        cy_v8f v[8] = {r0, r1, r2, r3, r4, r5, r6, r7};
        for (i = 0; i < 8; i++) {           /* v[i]: entry r + i of the 8 rows */
            *(cy_v8f *)(dst + ((c / 8 * KK + t) * 8 + c % 8) * 8) = v[i];
            if (++t == KK) { t = 0; c++; }
        }
    }
    for (; r < n; r++) {
        for (co = 0; co < 8; co++)
            dst[((c / 8 * KK + t) * 8 + c % 8) * 8 + co] = w[co * rs + r];
        if (++t == KK) { t = 0; c++; }
    }
}

static void cy_blk_pack_d(const double *w, Py_ssize_t rs, Py_ssize_t n, Py_ssize_t KK,
                          double *dst)
{
    Py_ssize_t r = 0, c = 0, t = 0, i, co;
    for (; r + 4 <= n; r += 4) {
        cy_v4d r0 = *(const cy_v4d *)(w + r), r1 = *(const cy_v4d *)(w + rs + r);
        cy_v4d r2 = *(const cy_v4d *)(w + 2 * rs + r), r3 = *(const cy_v4d *)(w + 3 * rs + r);
        CY_T4(r0, r1, r2, r3);
        cy_v4d v[4] = {r0, r1, r2, r3};
        for (i = 0; i < 4; i++) {
            *(cy_v4d *)(dst + ((c / 4 * KK + t) * 4 + c % 4) * 4) = v[i];
            if (++t == KK) { t = 0; c++; }
        }
    }
    for (; r < n; r++) {
        for (co = 0; co < 4; co++)
            dst[((c / 4 * KK + t) * 4 + c % 4) * 4 + co] = w[co * rs + r];
        if (++t == KK) { t = 0; c++; }
    }
}

#endif
