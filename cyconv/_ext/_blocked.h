/* Channel-blocked direct convolution micro-kernels (the nChw8c layout of oneDNN's
 * jit:avx2 convolution, written with GCC/Clang vector extensions).
 *
 * Layouts, with L lanes per vector (8 floats or 4 doubles in 32 bytes):
 *   input   x[cb][d][h][w][ci]            ci = channel within block cb (L of them)
 *   weight  w[cb][tap][ci][co]            for one block of L output channels
 *
 * One call computes CY_UR output pixels of one output row for one or two blocks of
 * output channels, summing over every input-channel block and every kernel tap:
 *
 *   acc[u][co] = sum_{cb, t, ci} x[cb*xcs + toff[t] + u*xs + ci] * w[cb*wcs + woff[t] + ci*L + co]
 *
 * over the KK taps listed in toff (input offsets) and woff (weight offsets; NULL for
 * taps 0 .. KK-1 in order, t*L*L): a caller may list only the taps that reach real
 * input for these pixels.
 *
 * The 2 x CY_UR = 12 accumulators stay in vector registers (12 of the 16 ymm registers
 * with AVX2, leaving two for weights and one for the broadcast input), each step of the
 * inner loop being 2 weight loads, CY_UR broadcasts and 2*CY_UR fused multiply-adds.  The
 * result is transposed back to channel-major order through a small stack tile and
 * written for the nk valid channels and the valid pixels only.
 *
 * Pixels are numbered on a grid of rows wrow long: the call covers pixels j .. j+CY_UR-1
 * (input pixel u at x + u*xs), of which those below jend and with a column
 * (jj % wrow) < ow_n are real; pixel jj lands at y[co*ys + (jj / wrow) * ow_n + jj % wrow].
 * A row-by-row caller passes wrow = ow_n = OW; a unit-stride caller passes the padded
 * input width as wrow and so runs whole planes on one "wide" grid, wasting only the
 * wrow - OW padding columns instead of a partial chunk at the end of every row.
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

#define CY_UR 6

/* A vector with every lane = s (one vbroadcastss/sd from memory; "0 + s" would cost an
 * add and turn -0.0 into +0.0). */
#define cy_bcast_f(s) ({ float s_ = (s); (cy_v8f){s_, s_, s_, s_, s_, s_, s_, s_}; })
#define cy_bcast_d(s) ({ double s_ = (s); (cy_v4d){s_, s_, s_, s_}; })

/* pix[u] = the output offset of grid pixel j + u, or -1; nu = how many are below jend. */
#define CY_PIXELS(pix, nu, j, jend, wrow, ow_n)                                        \
    for (nu = 0; nu < CY_UR && j + nu < jend; nu++) {                                  \
        Py_ssize_t jj_ = j + nu, r_ = jj_ / wrow, c_ = jj_ - r_ * wrow;                \
        pix[nu] = c_ < ow_n ? r_ * ow_n + c_ : -1;                                     \
    }

/* y[co*ys + pixel] = tile[co / L][u][co % L] + bias[co] for the nk channels and the
 * real pixels u of the call (see CY_PIXELS). */
#define CY_STORE(T, L, tile, y, ys, nk, j, jend, wrow, ow_n, bias)                     \
    do {                                                                               \
        Py_ssize_t nu_, u_, co_, pix_[CY_UR];                                          \
        CY_PIXELS(pix_, nu_, j, jend, wrow, ow_n);                                     \
        for (co_ = 0; co_ < nk; co_++) {                                               \
            T bv_ = bias ? bias[co_] : (T)0;                                           \
            T *yc_ = y + co_ * ys;                                                     \
            for (u_ = 0; u_ < nu_; u_++)                                               \
                if (pix_[u_] >= 0)                                                     \
                    yc_[pix_[u_]] = tile[co_ / L][u_][co_ % L] + bv_;                  \
        }                                                                              \
    } while (0)

#define CY_DEFINE_BLOCKED(NAME, T, V, L, BC)                                             \
static inline __attribute__((always_inline)) void                                      \
NAME##_2_(T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,            \
          Py_ssize_t wrow, Py_ssize_t ow_n, const T *x, Py_ssize_t xs, Py_ssize_t xcs,  \
          const T *w0, const T *w1, Py_ssize_t wcs, const Py_ssize_t *toff,             \
          const Py_ssize_t *woff, Py_ssize_t KK, Py_ssize_t CB, const T *bias)          \
{                                                                                      \
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0};                      \
    V c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};                      \
    Py_ssize_t cb, t, ci;                                                              \
    for (cb = 0; cb < CB; cb++) {                                                      \
        const T *xc = x + cb * xcs;                                                    \
        const T *w0c = w0 + cb * wcs, *w1c = w1 + cb * wcs;                            \
        for (t = 0; t < KK; t++) {                                                     \
            Py_ssize_t wo = woff ? woff[t] : t * L * L;                                \
            const T *s = xc + toff[t], *p0 = w0c + wo, *p1 = w1c + wo;                 \
            for (ci = 0; ci < L; ci++) {                                               \
                V v0 = *(const V *)(p0 + ci * L), v1 = *(const V *)(p1 + ci * L), b;   \
                b = BC(s[ci]);          a0 += b * v0; c0 += b * v1;           \
                b = BC(s[xs + ci]);     a1 += b * v0; c1 += b * v1;           \
                b = BC(s[2 * xs + ci]); a2 += b * v0; c2 += b * v1;           \
                b = BC(s[3 * xs + ci]); a3 += b * v0; c3 += b * v1;           \
                b = BC(s[4 * xs + ci]); a4 += b * v0; c4 += b * v1;           \
                b = BC(s[5 * xs + ci]); a5 += b * v0; c5 += b * v1;           \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    {                                                                                  \
        T tile[2][CY_UR][L];                                                           \
        *(V *)tile[0][0] = a0; *(V *)tile[0][1] = a1; *(V *)tile[0][2] = a2;           \
        *(V *)tile[0][3] = a3; *(V *)tile[0][4] = a4; *(V *)tile[0][5] = a5;           \
        *(V *)tile[1][0] = c0; *(V *)tile[1][1] = c1; *(V *)tile[1][2] = c2;           \
        *(V *)tile[1][3] = c3; *(V *)tile[1][4] = c4; *(V *)tile[1][5] = c5;           \
        CY_STORE(T, L, tile, y, ys, nk, j, jend, wrow, ow_n, bias);                    \
    }                                                                                  \
}                                                                                      \
                                                                                       \
static inline __attribute__((always_inline)) void                                      \
NAME##_1_(T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,            \
          Py_ssize_t wrow, Py_ssize_t ow_n, const T *x, Py_ssize_t xs, Py_ssize_t xcs,  \
          const T *w0, Py_ssize_t wcs, const Py_ssize_t *toff,                          \
          const Py_ssize_t *woff, Py_ssize_t KK, Py_ssize_t CB, const T *bias)          \
{                                                                                      \
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0};                      \
    Py_ssize_t cb, t, ci;                                                              \
    for (cb = 0; cb < CB; cb++) {                                                      \
        const T *xc = x + cb * xcs;                                                    \
        const T *w0c = w0 + cb * wcs;                                                  \
        for (t = 0; t < KK; t++) {                                                     \
            const T *s = xc + (toff[t]), *p0 = w0c + (woff ? woff[t] : t * L * L);     \
            for (ci = 0; ci < L; ci++) {                                               \
                V v0 = *(const V *)(p0 + ci * L);                                      \
                a0 += BC(s[ci]) * v0;                                         \
                a1 += BC(s[xs + ci]) * v0;                                    \
                a2 += BC(s[2 * xs + ci]) * v0;                                \
                a3 += BC(s[3 * xs + ci]) * v0;                                \
                a4 += BC(s[4 * xs + ci]) * v0;                                \
                a5 += BC(s[5 * xs + ci]) * v0;                                \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    {                                                                                  \
        T tile[1][CY_UR][L];                                                           \
        *(V *)tile[0][0] = a0; *(V *)tile[0][1] = a1; *(V *)tile[0][2] = a2;           \
        *(V *)tile[0][3] = a3; *(V *)tile[0][4] = a4; *(V *)tile[0][5] = a5;           \
        CY_STORE(T, L, tile, y, ys, nk, j, jend, wrow, ow_n, bias);                    \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* woff == NULL: taps 0 .. KK-1 with contiguous weights (the inner loop then steps the  \
 * weight pointers, as without listed taps); else the listed weight offsets. */        \
static void NAME##_2(T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,    \
                     Py_ssize_t wrow, Py_ssize_t ow_n, const T *x, Py_ssize_t xs,       \
                     Py_ssize_t xcs, const T *w0, const T *w1, Py_ssize_t wcs,          \
                     const Py_ssize_t *toff, const Py_ssize_t *woff, Py_ssize_t KK,     \
                     Py_ssize_t CB, const T *bias)                                      \
{                                                                                      \
    if (woff)                                                                          \
        NAME##_2_(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w0, w1, wcs, toff, woff, \
                  KK, CB, bias);                                                       \
    else                                                                               \
        NAME##_2_(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w0, w1, wcs, toff, NULL, \
                  KK, CB, bias);                                                       \
}                                                                                      \
                                                                                       \
static void NAME##_1(T *y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,    \
                     Py_ssize_t wrow, Py_ssize_t ow_n, const T *x, Py_ssize_t xs,       \
                     Py_ssize_t xcs, const T *w0, Py_ssize_t wcs,                       \
                     const Py_ssize_t *toff, const Py_ssize_t *woff, Py_ssize_t KK,     \
                     Py_ssize_t CB, const T *bias)                                      \
{                                                                                      \
    if (woff)                                                                          \
        NAME##_1_(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w0, wcs, toff, woff, KK, \
                  CB, bias);                                                           \
    else                                                                               \
        NAME##_1_(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w0, wcs, toff, NULL, KK, \
                  CB, bias);                                                           \
}

CY_DEFINE_BLOCKED(cy_blk_f, float, cy_v8f, 8, cy_bcast_f)
CY_DEFINE_BLOCKED(cy_blk_d, double, cy_v4d, 4, cy_bcast_d)

#endif
