/* Micro-kernels of the channel-interleaved depthwise convolution (depthwise.pyx).
 *
 * Planes of L consecutive channels (L = 8 float32 / 4 float64: one vector) are staged
 * interleaved, pixel-major: a[pixel][lane].  One vector then holds one pixel of L
 * channels, and every depthwise tap is a lane-wise multiply-add, whatever the stride,
 * dilation, kernel or plane size: no lane is wasted on a 7x7 plane or a stride-2 row.
 *
 * dw_gather: out[oo[j]] = b + sum_t w[t] * in[io[j] + off[t]]      j in [0, n)
 *
 *   All offsets in elements (multiples of L); w[t] is the tap's weight vector (L lanes,
 *   one per channel), b a bias vector or NULL.  The outputs are listed (oo: where each
 *   goes, io: where its window starts), so a register block is any DW_R outputs of a
 *   plane, across rows: a 7-wide plane fills the block as well as a 112-wide one.  Each
 *   tap loads its weight vector once for DW_R multiply-adds into independent chains.
 *   The forward pass lists every output of the plane; the input gradient every image
 *   pixel of one phase (its window in the zero-bordered output gradient), with the
 *   phase's taps only: a gather, no scatter.  A ragged last block is filled up by
 *   repeating the last output (stored again with the same value), so it too runs DW_R
 *   chains: a 7x7 plane is 7 blocks, not 6 blocks and a latency-bound single output.
 *   (Loads and stores of every block go through the lists; the repeated outputs cost
 *   nothing else.)
 *
 * dw_dot: acc[t] += sum_j g[j * L] * in[io[j] + off[t]]               t in [0, ntap)
 *
 *   The weight gradient: a block of DW_R output-gradient vectors stays in registers
 *   while every tap reads its DW_R input vectors, summed in two chains (even and odd j
 *   of the block) added at the end.  The order of every sum is fixed by n and ntap
 *   alone, so results do not depend on the thread count.
 *
 * bc_gather, bc_dot: the same two loops with the lanes across *output* channels (the
 * ``outer`` kernels of depthwise.pyx): the input is a plain zero-padded image, each
 * of its values broadcast against the vector of L output channels' weights of one
 * (input channel, tap) pair; t runs over those pairs.
 */
#ifndef CYCONV_DEPTHWISE_H
#define CYCONV_DEPTHWISE_H
#include <stddef.h>
#include <Python.h>
#include "_simd.h"

#define DW_R 8

/* Loads of one tap's operand: a vector of L channels, or one value broadcast (a vector
 * times a scalar multiplies every lane by it). */
#define CY_LOAD_VEC(V, p) (*(const V *)(p))
#define CY_LOAD_ONE(V, p) (*(p))

#define CY_DEFINE_GATHER(NAME, T, V, L, LOAD)                                             \
static void NAME(T *out, const Py_ssize_t *oo, const T *in, const Py_ssize_t *io,         \
                 const Py_ssize_t *off, const T *w, Py_ssize_t ntap, Py_ssize_t n,         \
                 const T *b)                                                               \
{                                                                                         \
    Py_ssize_t j, t, i, k[DW_R];                                                          \
    V bias = {0};                                                                         \
    if (b) bias = *(const V *)b;                                                          \
    for (j = 0; j < n; j += DW_R) {                                                       \
        for (i = 0; i < DW_R; i++)          /* a ragged last block repeats output n-1 */  \
            k[i] = j + i < n ? j + i : n - 1;                                             \
        V a0 = bias, a1 = bias, a2 = bias, a3 = bias;                                     \
        V a4 = bias, a5 = bias, a6 = bias, a7 = bias;                                     \
        const T *in0 = in + io[k[0]], *in1 = in + io[k[1]], *in2 = in + io[k[2]],         \
                *in3 = in + io[k[3]], *in4 = in + io[k[4]], *in5 = in + io[k[5]],         \
                *in6 = in + io[k[6]], *in7 = in + io[k[7]];                               \
        for (t = 0; t < ntap; t++) {                                                      \
            const V wv = *(const V *)(w + t * L);                                         \
            const Py_ssize_t o = off[t];                                                  \
            a0 += wv * LOAD(V, in0 + o); a1 += wv * LOAD(V, in1 + o);                     \
            a2 += wv * LOAD(V, in2 + o); a3 += wv * LOAD(V, in3 + o);                     \
            a4 += wv * LOAD(V, in4 + o); a5 += wv * LOAD(V, in5 + o);                     \
            a6 += wv * LOAD(V, in6 + o); a7 += wv * LOAD(V, in7 + o);                     \
        }                                                                                 \
        *(V *)(out + oo[k[0]]) = a0; *(V *)(out + oo[k[1]]) = a1;                         \
        *(V *)(out + oo[k[2]]) = a2; *(V *)(out + oo[k[3]]) = a3;                         \
        *(V *)(out + oo[k[4]]) = a4; *(V *)(out + oo[k[5]]) = a5;                         \
        *(V *)(out + oo[k[6]]) = a6; *(V *)(out + oo[k[7]]) = a7;                         \
    }                                                                                     \
}

#define CY_DEFINE_DOT(NAME, T, V, L, LOAD)                                                \
static void NAME(T *acc, const T *g, const T *in, const Py_ssize_t *io,                   \
                 const Py_ssize_t *off, Py_ssize_t ntap, Py_ssize_t n)                     \
{                                                                                         \
    Py_ssize_t j = 0, t;                                                                  \
    for (; j + DW_R <= n; j += DW_R) {                                                    \
        const T *gj = g + j * L;                                                          \
        const V g0 = *(const V *)(gj), g1 = *(const V *)(gj + L);                         \
        const V g2 = *(const V *)(gj + 2 * L), g3 = *(const V *)(gj + 3 * L);             \
        const V g4 = *(const V *)(gj + 4 * L), g5 = *(const V *)(gj + 5 * L);             \
        const V g6 = *(const V *)(gj + 6 * L), g7 = *(const V *)(gj + 7 * L);             \
        const Py_ssize_t *ij = io + j;                                                    \
        const T *in0 = in + ij[0], *in1 = in + ij[1], *in2 = in + ij[2],                  \
                *in3 = in + ij[3], *in4 = in + ij[4], *in5 = in + ij[5],                  \
                *in6 = in + ij[6], *in7 = in + ij[7];                                     \
        for (t = 0; t < ntap; t++) {                                                      \
            const Py_ssize_t o = off[t];                                                  \
            V s0 = g0 * LOAD(V, in0 + o);                                                 \
            V s1 = g1 * LOAD(V, in1 + o);                                                 \
            s0 += g2 * LOAD(V, in2 + o);                                                  \
            s1 += g3 * LOAD(V, in3 + o);                                                  \
            s0 += g4 * LOAD(V, in4 + o);                                                  \
            s1 += g5 * LOAD(V, in5 + o);                                                  \
            s0 += g6 * LOAD(V, in6 + o);                                                  \
            s1 += g7 * LOAD(V, in7 + o);                                                  \
            *(V *)(acc + t * L) += s0 + s1;                                               \
        }                                                                                 \
    }                                                                                     \
    for (; j < n; j++) {                                                                  \
        const V g0 = *(const V *)(g + j * L);                                             \
        const T *p = in + io[j];                                                          \
        for (t = 0; t < ntap; t++)                                                        \
            *(V *)(acc + t * L) += g0 * LOAD(V, p + off[t]);                              \
    }                                                                                     \
}

/* depthwise: lanes are channels of the input too (vector loads) */
CY_DEFINE_GATHER(dw_gather_f, float, cy_v8f, 8, CY_LOAD_VEC)
CY_DEFINE_GATHER(dw_gather_d, double, cy_v4d, 4, CY_LOAD_VEC)
CY_DEFINE_DOT(dw_dot_f, float, cy_v8f, 8, CY_LOAD_VEC)
CY_DEFINE_DOT(dw_dot_d, double, cy_v4d, 4, CY_LOAD_VEC)
/* outer: lanes are output channels, each input value broadcast (see the note above) */
CY_DEFINE_GATHER(bc_gather_f, float, cy_v8f, 8, CY_LOAD_ONE)
CY_DEFINE_GATHER(bc_gather_d, double, cy_v4d, 4, CY_LOAD_ONE)
CY_DEFINE_DOT(bc_dot_f, float, cy_v8f, 8, CY_LOAD_ONE)
CY_DEFINE_DOT(bc_dot_d, double, cy_v4d, 4, CY_LOAD_ONE)

/* dw_interleave: dst[p * L + c] = src[c * plane + p]   (p < n, c < L)
 * dw_deinterleave: dst[c * plane + p] = src[p * L + c]
 * L planes to pixel-major and back, L pixels at a time through a register transpose. */
static void dw_interleave_f(const float *src, Py_ssize_t plane, float *dst, Py_ssize_t n)
{
    Py_ssize_t p = 0, c;
    for (; p + 8 <= n; p += 8) {
        const float *s = src + p;
        cy_v8f r0 = *(const cy_v8f *)(s), r1 = *(const cy_v8f *)(s + plane);
        cy_v8f r2 = *(const cy_v8f *)(s + 2 * plane), r3 = *(const cy_v8f *)(s + 3 * plane);
        cy_v8f r4 = *(const cy_v8f *)(s + 4 * plane), r5 = *(const cy_v8f *)(s + 5 * plane);
        cy_v8f r6 = *(const cy_v8f *)(s + 6 * plane), r7 = *(const cy_v8f *)(s + 7 * plane);
        float *d = dst + p * 8;
        CY_T8(r0, r1, r2, r3, r4, r5, r6, r7);
        *(cy_v8f *)(d) = r0; *(cy_v8f *)(d + 8) = r1; *(cy_v8f *)(d + 16) = r2;
        *(cy_v8f *)(d + 24) = r3; *(cy_v8f *)(d + 32) = r4; *(cy_v8f *)(d + 40) = r5;
        *(cy_v8f *)(d + 48) = r6; *(cy_v8f *)(d + 56) = r7;
    }
    for (; p < n; p++)
        for (c = 0; c < 8; c++)
            dst[p * 8 + c] = src[c * plane + p];
}

static void dw_deinterleave_f(const float *src, float *dst, Py_ssize_t plane, Py_ssize_t n)
{
    Py_ssize_t p = 0, c;
    for (; p + 8 <= n; p += 8) {
        const float *s = src + p * 8;
        cy_v8f r0 = *(const cy_v8f *)(s), r1 = *(const cy_v8f *)(s + 8);
        cy_v8f r2 = *(const cy_v8f *)(s + 16), r3 = *(const cy_v8f *)(s + 24);
        cy_v8f r4 = *(const cy_v8f *)(s + 32), r5 = *(const cy_v8f *)(s + 40);
        cy_v8f r6 = *(const cy_v8f *)(s + 48), r7 = *(const cy_v8f *)(s + 56);
        float *d = dst + p;
        CY_T8(r0, r1, r2, r3, r4, r5, r6, r7);
        *(cy_v8f *)(d) = r0; *(cy_v8f *)(d + plane) = r1; *(cy_v8f *)(d + 2 * plane) = r2;
        *(cy_v8f *)(d + 3 * plane) = r3; *(cy_v8f *)(d + 4 * plane) = r4;
        *(cy_v8f *)(d + 5 * plane) = r5; *(cy_v8f *)(d + 6 * plane) = r6;
        *(cy_v8f *)(d + 7 * plane) = r7;
    }
    for (; p < n; p++)
        for (c = 0; c < 8; c++)
            dst[c * plane + p] = src[p * 8 + c];
}

static void dw_interleave_d(const double *src, Py_ssize_t plane, double *dst, Py_ssize_t n)
{
    Py_ssize_t p = 0, c;
    for (; p + 4 <= n; p += 4) {
        const double *s = src + p;
        cy_v4d r0 = *(const cy_v4d *)(s), r1 = *(const cy_v4d *)(s + plane);
        cy_v4d r2 = *(const cy_v4d *)(s + 2 * plane), r3 = *(const cy_v4d *)(s + 3 * plane);
        double *d = dst + p * 4;
        CY_T4(r0, r1, r2, r3);
        *(cy_v4d *)(d) = r0; *(cy_v4d *)(d + 4) = r1;
        *(cy_v4d *)(d + 8) = r2; *(cy_v4d *)(d + 12) = r3;
    }
    for (; p < n; p++)
        for (c = 0; c < 4; c++)
            dst[p * 4 + c] = src[c * plane + p];
}

static void dw_deinterleave_d(const double *src, double *dst, Py_ssize_t plane, Py_ssize_t n)
{
    Py_ssize_t p = 0, c;
    for (; p + 4 <= n; p += 4) {
        const double *s = src + p * 4;
        cy_v4d r0 = *(const cy_v4d *)(s), r1 = *(const cy_v4d *)(s + 4);
        cy_v4d r2 = *(const cy_v4d *)(s + 8), r3 = *(const cy_v4d *)(s + 12);
        double *d = dst + p;
        CY_T4(r0, r1, r2, r3);
        *(cy_v4d *)(d) = r0; *(cy_v4d *)(d + plane) = r1;
        *(cy_v4d *)(d + 2 * plane) = r2; *(cy_v4d *)(d + 3 * plane) = r3;
    }
    for (; p < n; p++)
        for (c = 0; c < 4; c++)
            dst[c * plane + p] = src[p * 4 + c];
}

#endif
