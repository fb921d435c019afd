"""Direct-loop convolution kernels: forward, input gradient, weight gradient.

No column matrix and no GEMM.  This is the fast path where a GEMM has nothing to reuse:
depthwise and thin-group convolutions, and very small channel counts.  Every array is
C-contiguous and every shape already checked (``cyconv._params``).

Notes
-----
Each work item copies the image planes it reads into a zero-padded per-thread buffer
``xp`` of extent (Dp, Hp, Wp), so no tap ever needs a bounds test.  Only the interior
is ever written: the padding is zeroed once per thread and stays zero for every item.
Outputs are then computed on a *wide* grid whose rows are Wp long (when the width
stride is 1): output row (od, oh) of width OW sits inside a row of width Wp, and for
one kernel tap (kd, kh, kw) the whole plane update

    yw[od, oh, j] += w[k, c, kd, kh, kw] * xp[c, od*SD + kd*DD, oh*SH + kh*DH, j + kw*DW]

is, when SH == 1, one contiguous axpy of OH * Wp elements, which the compiler vectorises
(AVX2+FMA in the ``cyconv._ext.avx2`` build).  The columns j >= OW are scratch and are
dropped when the wide plane is cropped into y.  With a width stride > 1 the same runs
row by row over the OW real columns.

* forward: an item is one (sample, group); it pads the group's Cg input planes once and
  produces its Kg output planes one by one.  Rows of at least one vector are written in
  place by ``taps_rows`` (register blocks of 3 rows x 4 vectors; a depthwise plane is
  staged in one step when small, else a few rows ahead of the rows being computed;
  depthwise planes with three unit-spaced kernel rows and unit height stride go through
  ``dw_rows``, which loads each input vector once for all the rows it feeds; the 3x3
  'same' ones, MobileNet's, skip the staging too: ``dw_same3`` reads x in place, with
  zero rows and shifted-in zero lanes for the padding (planes up to 10 KiB as column
  strips rolling down the plane, larger ones in row blocks));
  narrower rows go through the wide grid (the first input channel's sweep overwrites
  it, the others add to it).
* input gradient (``_cpu.py`` runs the unit-stride ones as forward convolutions of the
  output gradient instead): an item is one (sample, group); the output gradient of each
  of the Kg channels is staged on the wide grid (zeros beyond OW) and scattered tap by
  tap into the padded gradient planes, which are cropped into gx at the end.  Each
  thread owns its planes: no atomics, no races.
* weight gradient: an item is a run of consecutive input channels, swept sample by
  sample (so each sample's planes stream in from contiguous memory); each weight is a
  dot product over the wide grid, summed over the samples in order.  With unit strides
  one ``taps_dot`` pass takes up to 12 taps at once.  Every weight is computed by one
  thread in a fixed order, so the result is bit-identical for any thread count.

Padding taps read real zeros (0 * w), exactly like the im2col path, so NaN and Inf
weights propagate the same way in both algorithms.  The wide grid's extra columns are
different: they are not padding but products that the exact sums do not have.  In the
forward pass they are cropped away; the weight gradient multiplies them (zeros of the
staged output gradient) by input values, so an input plane holding a NaN or Inf (seen
while it is staged, ``fill_check``) has its taps summed over the real outputs only; and
``_cpu`` sends input gradients with a non-finite weight to im2col (``all_finite``).
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy

import numpy as np

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom
from cyconv._ext._finite cimport all_finite_n


cdef enum:
    PREFETCH = 2048           # bytes fill_rows prefetches ahead of the rows it stages
    STREAM_WHOLE = 8192       # bytes: a depthwise input plane this small is staged at once


cdef struct Pad:
    Py_ssize_t Dp, Hp, Wp     # padded plane extent
    Py_ssize_t plane          # Dp * Hp * Wp + slack for the wide rows' overhang
    Py_ssize_t L              # wide row length: Wp when SW == 1, else OW
    Py_ssize_t wide           # OD * OH * L


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef Pad make_pad(const Geom* g) noexcept nogil:
    cdef Pad q
    q.Dp = _max(g.D + g.PD, (g.OD - 1) * g.SD + (g.KD - 1) * g.DD + 1)
    q.Hp = _max(g.H + g.PH, (g.OH - 1) * g.SH + (g.KH - 1) * g.DH + 1)
    q.Wp = _max(g.W + g.PW, (g.OW - 1) * g.SW + (g.KW - 1) * g.DW + 1)
    q.plane = q.Dp * q.Hp * q.Wp + (g.KW - 1) * g.DW + q.Wp
    q.L = q.Wp if g.SW == 1 else g.OW
    q.wide = g.OD * g.OH * q.L
    return q


cdef bint fill_plane(const floating* x, floating* xp, const Geom* g, const Pad* q) noexcept nogil:
    """xp[PD + d, PH + h, PW + w] = x[d, h, w]: the interior of a padded plane only; True
    when every copied value is finite.

    The padding is never written, so a per-thread buffer zeroed once stays a valid
    padded plane from one work item to the next."""
    cdef Py_ssize_t d
    cdef int bad = 0
    for d in range(g.D):
        bad = bad | fill_check(xp + ((d + g.PD) * q.Hp + g.PH) * q.Wp + g.PW, q.Wp,
                               x + d * g.H * g.W, g.H, g.W)
    return bad == 0


cdef void fill_rows(const floating* x, floating* xp, Py_ssize_t h0, Py_ssize_t h1,
                    const Geom* g, const Pad* q) noexcept nogil:
    """fill_plane for the rows [h0, h1) of a one-deep plane (D == 1).

    Also asks for the input PREFETCH bytes ahead (the rest of this plane, then the next
    one's: consecutive work items read consecutive planes), so the next rows arrive while
    these are being convolved."""
    cdef Py_ssize_t h, i
    cdef floating* dst
    cdef const floating* src
    for h in range(h0, h1):
        dst = xp + (g.PD * q.Hp + h + g.PH) * q.Wp + g.PW
        src = x + h * g.W
        prefetch_span(<const char*> src + PREFETCH, g.W * <Py_ssize_t> sizeof(floating))
        for i in range(g.W):
            dst[i] = src[i]


cdef inline bint _same3(const Geom* g) noexcept nogil:
    """A one-channel-per-group 2-D (or 1-D) plane of a 3x3 'same' convolution: unit
    strides and dilation, padding 1 all round (dw_same3, dw_same3_dot)."""
    return (g.Cg == 1 and g.D == 1 and g.KD == 1 and g.OD == 1 and g.KH == 3 and g.KW == 3
            and g.SH == 1 and g.SW == 1 and g.DH == 1 and g.DW == 1 and g.PH == 1
            and g.PW == 1 and g.OH == g.H and g.OW == g.W)


cdef inline void prefetch_span(const void* p, Py_ssize_t nbytes) noexcept nogil:
    """Prefetch every cache line of [p, p + nbytes) for reading: one request per 64 bytes."""
    cdef Py_ssize_t i
    for i in range(0, nbytes, 64):
        cy_prefetch(<const char*> p + i)


cdef inline void prefetchw_span(void* p, Py_ssize_t nbytes) noexcept nogil:
    """Prefetch every cache line of [p, p + nbytes) for writing."""
    cdef Py_ssize_t i
    for i in range(0, nbytes, 64):
        cy_prefetchw(<char*> p + i)


cdef void crop_plane(const floating* xp, floating* x, floating bias, const Geom* g,
                     const Pad* q) noexcept nogil:
    """x[d, h, w] = xp[PD + d, PH + h, PW + w] + bias (the adjoint of fill_plane)."""
    cdef Py_ssize_t d, h, i
    cdef const floating* src
    cdef floating* dst
    for d in range(g.D):
        for h in range(g.H):
            src = xp + ((d + g.PD) * q.Hp + h + g.PH) * q.Wp + g.PW
            dst = x + (d * g.H + h) * g.W
            for i in range(g.W):
                dst[i] = src[i] + bias


cdef inline void axpy(floating* y, const floating* x, floating a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = y[i] + a * x[i]


cdef extern from "_simd.h" nogil:
    void cy_prefetch(const void* p)
    void cy_prefetchw(const void* p)
    void cy_taps_acc_f(float* y, const float* src, const float* wt, const Py_ssize_t* off,
                       Py_ssize_t KK, Py_ssize_t n, Py_ssize_t sw, int acc)
    void cy_taps_acc_d(double* y, const double* src, const double* wt, const Py_ssize_t* off,
                       Py_ssize_t KK, Py_ssize_t n, Py_ssize_t sw, int acc)
    void cy_taps_rows_f(float* y, Py_ssize_t ys, const float* src, Py_ssize_t ss,
                        const float* wt, const Py_ssize_t* off, Py_ssize_t KK, Py_ssize_t n,
                        Py_ssize_t rows, int acc, float b)
    void cy_taps_rows_d(double* y, Py_ssize_t ys, const double* src, Py_ssize_t ss,
                        const double* wt, const Py_ssize_t* off, Py_ssize_t KK, Py_ssize_t n,
                        Py_ssize_t rows, int acc, double b)
    void cy_dw_rows_f(float* y, Py_ssize_t ys, const float* src, Py_ssize_t ss,
                      const float* wt, Py_ssize_t KW, Py_ssize_t dw, Py_ssize_t n,
                      Py_ssize_t rows, float b)
    void cy_dw_rows_d(double* y, Py_ssize_t ys, const double* src, Py_ssize_t ss,
                      const double* wt, Py_ssize_t KW, Py_ssize_t dw, Py_ssize_t n,
                      Py_ssize_t rows, double b)
    void cy_dw_same3_f(float* y, const float* x, const float* zero, Py_ssize_t H,
                       Py_ssize_t W, const float* wt, float b)
    void cy_dw_same3_d(double* y, const double* x, const double* zero, Py_ssize_t H,
                       Py_ssize_t W, const double* wt, double b)
    void cy_dw_strips3_f(float* y, const float* x, Py_ssize_t H, Py_ssize_t W,
                         const float* wt, float b)
    void cy_dw_strips3_d(double* y, const double* x, Py_ssize_t H, Py_ssize_t W,
                         const double* wt, double b)
    Py_ssize_t CY_DW_STRIPS_MAX
    void cy_dw_same3_dot_f(float* out, const float* g, const float* x, const float* zero,
                           Py_ssize_t H, Py_ssize_t W)
    void cy_dw_same3_dot_d(double* out, const double* g, const double* x,
                           const double* zero, Py_ssize_t H, Py_ssize_t W)
    void cy_dw_strips3_dot_f(float* out, const float* g, const float* x, Py_ssize_t H,
                             Py_ssize_t W)
    void cy_dw_strips3_dot_d(double* out, const double* g, const double* x, Py_ssize_t H,
                             Py_ssize_t W)
    int cy_f_fill_check(float* dst, Py_ssize_t ds, const float* src, Py_ssize_t R,
                        Py_ssize_t n)
    int cy_d_fill_check(double* dst, Py_ssize_t ds, const double* src, Py_ssize_t R,
                        Py_ssize_t n)
    void cy_taps_dot_f(float* out, const float* g, const float* src, const Py_ssize_t* off,
                       Py_ssize_t KK, Py_ssize_t m)
    void cy_taps_dot_d(double* out, const double* g, const double* src, const Py_ssize_t* off,
                       Py_ssize_t KK, Py_ssize_t m)


#: bytes: depthwise 3x3 'same' planes up to this size go through dw_same3_strips
DW_STRIPS_MAX = CY_DW_STRIPS_MAX


cdef inline void taps_acc(floating* y, const floating* src, const floating* wt,
                          const Py_ssize_t* off, Py_ssize_t KK, Py_ssize_t n,
                          Py_ssize_t sw, bint acc) noexcept nogil:
    """y[j] (+)= sum_t wt[t] * src[j * sw + off[t]] for j in [0, n), adding to y when acc
    (see _simd.h)."""
    if floating is float:
        cy_taps_acc_f(y, src, wt, off, KK, n, sw, acc)
    else:
        cy_taps_acc_d(y, src, wt, off, KK, n, sw, acc)


cdef inline void taps_rows(floating* y, Py_ssize_t ys, const floating* src, Py_ssize_t ss,
                           const floating* wt, const Py_ssize_t* off, Py_ssize_t KK,
                           Py_ssize_t n, Py_ssize_t rows, bint acc, floating b) noexcept nogil:
    """y[r*ys + j] = (y[r*ys + j] if acc else b) + sum_t wt[t] * src[r*ss + off[t] + j] for
    r in [0, rows), j in [0, n), n >= one vector (see _simd.h)."""
    if floating is float:
        cy_taps_rows_f(y, ys, src, ss, wt, off, KK, n, rows, acc, b)
    else:
        cy_taps_rows_d(y, ys, src, ss, wt, off, KK, n, rows, acc, b)


cdef inline void dw_rows(floating* y, Py_ssize_t ys, const floating* src, Py_ssize_t ss,
                         const floating* wt, Py_ssize_t KW, Py_ssize_t dw, Py_ssize_t n,
                         Py_ssize_t rows, floating b) noexcept nogil:
    """taps_rows for one channel, three kernel rows, unit row stride and dilation:
    y[r*ys + j] = b + sum_{kh<3, kw} wt[kh*KW + kw] * src[(r + kh)*ss + kw*dw + j]
    (see _simd.h)."""
    if floating is float:
        cy_dw_rows_f(y, ys, src, ss, wt, KW, dw, n, rows, b)
    else:
        cy_dw_rows_d(y, ys, src, ss, wt, KW, dw, n, rows, b)


cdef inline void dw_same3(floating* y, const floating* x, const floating* zero,
                          Py_ssize_t H, Py_ssize_t W, const floating* wt,
                          floating b) noexcept nogil:
    """One depthwise 3x3 'same' plane straight from x (no staging; see _simd.h):
    y[h, j] = b + sum_{kh, kw} wt[kh*3 + kw] * x[h + kh - 1, j + kw - 1], zero outside.
    Planes of up to CY_DW_STRIPS_MAX bytes go in rolling column strips, larger ones in
    3-row blocks (``zero``: a zero row of W elements, their padding rows)."""
    if H * W * <Py_ssize_t> sizeof(floating) <= CY_DW_STRIPS_MAX:
        if floating is float:
            cy_dw_strips3_f(y, x, H, W, wt, b)
        else:
            cy_dw_strips3_d(y, x, H, W, wt, b)
    elif floating is float:
        cy_dw_same3_f(y, x, zero, H, W, wt, b)
    else:
        cy_dw_same3_d(y, x, zero, H, W, wt, b)


cdef inline void dw_same3_dot(floating* out, const floating* gy, const floating* x,
                              const floating* zero, Py_ssize_t H,
                              Py_ssize_t W) noexcept nogil:
    """The weight gradient of one dw_same3 plane, added into out[0:9] (see _simd.h):
    out[kh*3 + kw] += sum_{h, j} gy[h, j] * x[h + kh - 1, j + kw - 1], zero outside.
    Planes of up to CY_DW_STRIPS_MAX bytes in rolling column strips, as dw_same3."""
    if H * W * <Py_ssize_t> sizeof(floating) <= CY_DW_STRIPS_MAX:
        if floating is float:
            cy_dw_strips3_dot_f(out, gy, x, H, W)
        else:
            cy_dw_strips3_dot_d(out, gy, x, H, W)
    elif floating is float:
        cy_dw_same3_dot_f(out, gy, x, zero, H, W)
    else:
        cy_dw_same3_dot_d(out, gy, x, zero, H, W)


cdef inline int fill_check(floating* dst, Py_ssize_t ds, const floating* src, Py_ssize_t R,
                           Py_ssize_t n) noexcept nogil:
    """dst[r*ds + i] = src[r*n + i] for r < R, i < n; nonzero if a copied value is NaN or
    Inf (see _simd.h)."""
    if floating is float:
        return cy_f_fill_check(dst, ds, src, R, n)
    else:
        return cy_d_fill_check(dst, ds, src, R, n)


def all_finite(const floating[::1] a):
    """True when no element of ``a`` is NaN or Inf (one vectorised pass, no temporary)."""
    cdef bint ok = True
    if a.shape[0]:
        with nogil:
            ok = all_finite_n(&a[0], a.shape[0])
    return ok


cdef inline void taps_dot(floating* out, const floating* gw, const floating* src,
                          const Py_ssize_t* off, Py_ssize_t KK, Py_ssize_t m) noexcept nogil:
    """out[t] += sum_i gw[i] * src[off[t] + i] for every tap t, i in [0, m) (see _simd.h)."""
    if floating is float:
        cy_taps_dot_f(out, gw, src, off, KK, m)
    else:
        cy_taps_dot_d(out, gw, src, off, KK, m)


cdef inline floating dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    """sum(x * y) with eight interleaved partial sums (vectorisable, fixed order)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        s0 = s0 + x[i] * y[i]
        s1 = s1 + x[i + 1] * y[i + 1]
        s2 = s2 + x[i + 2] * y[i + 2]
        s3 = s3 + x[i + 3] * y[i + 3]
        s4 = s4 + x[i + 4] * y[i + 4]
        s5 = s5 + x[i + 5] * y[i + 5]
        s6 = s6 + x[i + 6] * y[i + 6]
        s7 = s7 + x[i + 7] * y[i + 7]
        i = i + 8
    while i < n:
        s0 = s0 + x[i] * y[i]
        i = i + 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef void tap_backward(floating* xp, const floating* gw, floating wv, Py_ssize_t kd,
                       Py_ssize_t kh, Py_ssize_t kw, const Geom* g, const Pad* q) noexcept nogil:
    """xp (under tap (kd, kh, kw)) += wv * gw (wide grid, zero beyond OW)."""
    cdef Py_ssize_t od, oh, j
    cdef floating* dst
    cdef const floating* src
    for od in range(g.OD):
        dst = xp + ((od * g.SD + kd * g.DD) * q.Hp + kh * g.DH) * q.Wp + kw * g.DW
        src = gw + od * g.OH * q.L
        if g.SW == 1 and g.SH == 1:
            axpy(dst, src, wv, g.OH * q.Wp)
        elif g.SW == 1:
            for oh in range(g.OH):
                axpy(dst + oh * g.SH * q.Wp, src + oh * q.L, wv, q.L)
        else:
            for oh in range(g.OH):
                for j in range(g.OW):
                    dst[oh * g.SH * q.Wp + j * g.SW] = (dst[oh * g.SH * q.Wp + j * g.SW]
                                                        + wv * src[oh * q.L + j])


cdef floating tap_dot(const floating* gw, Py_ssize_t gl, const floating* xp, Py_ssize_t kd,
                      Py_ssize_t kh, Py_ssize_t kw, const Geom* g, const Pad* q) noexcept nogil:
    """<gw, padded input under the tap>, gw's rows gl long: the wide grid (gl == q.L, zero
    beyond OW) or an unstaged output-gradient plane (gl == OW: only real outputs are
    multiplied, so a NaN or Inf input reaches only the taps that read it)."""
    cdef Py_ssize_t od, oh, j
    cdef const floating* src
    cdef const floating* grow
    cdef floating s = 0, t
    for od in range(g.OD):
        src = xp + ((od * g.SD + kd * g.DD) * q.Hp + kh * g.DH) * q.Wp + kw * g.DW
        grow = gw + od * g.OH * gl
        if g.SW == 1 and g.SH == 1 and gl == q.Wp:
            s = s + dot(grow, src, g.OH * q.Wp)
        elif g.SW == 1:
            for oh in range(g.OH):
                s = s + dot(grow + oh * gl, src + oh * g.SH * q.Wp, gl)
        else:
            for oh in range(g.OH):
                t = 0
                for j in range(g.OW):
                    t = t + grow[oh * gl + j] * src[oh * g.SH * q.Wp + j * g.SW]
                s = s + t
    return s


cdef void stage_wide(const floating* gy, floating* gw, const Geom* g, const Pad* q) noexcept nogil:
    """Copy one output plane onto the wide grid, zeros in the columns j >= OW."""
    cdef Py_ssize_t r, j
    if q.L == g.OW:
        memcpy(gw, gy, g.P * sizeof(floating))
        return
    for r in range(g.OD * g.OH):
        for j in range(g.OW):
            gw[r * q.L + j] = gy[r * g.OW + j]
        for j in range(g.OW, q.L):
            gw[r * q.L + j] = 0


cdef floating* _scratch(Py_ssize_t n_threads, Py_ssize_t per_thread, floating dummy) except NULL:
    cdef floating* buf = <floating*> malloc(_max(1, n_threads * per_thread) * sizeof(floating))
    if buf == NULL:
        raise MemoryError(f"cyconv: could not allocate {n_threads * per_thread * sizeof(floating)}"
                          f" bytes of direct-convolution workspace")
    return buf


cdef Py_ssize_t[::1] _tap_offsets(const Geom* g, const Pad* q, Py_ssize_t sign):
    """sign * (offset of tap (kd, kh, kw) in a padded plane), taps in weight order."""
    cdef Py_ssize_t[::1] off = np.empty(_max(1, g.KK), dtype=np.intp)
    cdef Py_ssize_t kd, kh, kw
    for kd in range(g.KD):
        for kh in range(g.KH):
            for kw in range(g.KW):
                off[(kd * g.KH + kh) * g.KW + kw] = sign * (
                    (kd * g.DD * q.Hp + kh * g.DH) * q.Wp + kw * g.DW)
    return off


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """y[n] = conv(x[n], w) + b, one (sample, group) per work item.

    x (N, C_img * D*H*W), w (C_col, CKK), b (C_col,) or empty, y (N, C_col * P).
    Three sweeps, by the width stride and the output width:

    * rows (width stride 1, OW at least one vector): ``taps_rows`` writes output rows in
      place, register-blocked.  A depthwise 1-D/2-D plane is staged in one step when
      small, else a few input rows ahead of the rows being computed (fill_rows
      prefetches further ahead), so reading x overlaps the arithmetic.
    * wide (unit strides, OW narrower than a vector): one ``taps_acc`` sweep per input
      channel over the padded grid (rows Wp long), cropped into y.
    * strided (width stride > 1): ``taps_acc`` row by row with a strided source.
    """
    cdef Geom g = make_geom(geom)
    cdef Pad q = make_pad(&g)
    cdef Py_ssize_t N = x.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef bint rows = g.SW == 1 and g.OW * <Py_ssize_t> sizeof(floating) >= 32
    cdef bint unit = g.SD == 1 and g.SH == 1 and g.SW == 1
    cdef bint stream = rows and g.Cg == 1 and g.D == 1 and g.OD == 1
    # stream planes of a one-deep, 3-row kernel, unit row stride and dilation, go through
    # dw_rows (a one-deep input can still have a deeper, padded kernel: not those)
    cdef bint share = stream and g.KD == 1 and g.SH == 1 and g.DH == 1 and g.KH == 3
    # ... and of those, the 3x3 'same' ones read x in place (dw_same3)
    cdef bint same3 = share and _same3(&g)
    # stream steps: a small plane (at most STREAM_WHOLE bytes) in one, else 3 rows at a
    # time (a register block of taps_rows and of dw_rows)
    cdef Py_ssize_t step = (g.OH if g.H * g.W * <Py_ssize_t> sizeof(floating) <= STREAM_WHOLE
                            else 3)
    cdef Py_ssize_t[::1] offs = _tap_offsets(&g, &q, 1)
    cdef const Py_ssize_t* off = &offs[0]
    # wide: yw[(od*Hp + oh)*Wp + ow]; strided: yw[(od*OH + oh)*OW + ow]; rows: no yw
    cdef Py_ssize_t span = (0 if rows else
                            ((g.OD - 1) * q.Hp + g.OH) * q.Wp if unit else g.P)
    cdef Py_ssize_t per_thread = g.Cg * q.plane + span
    cdef Py_ssize_t row_step = g.SH * q.Wp, depth_step = g.SD * q.Hp * q.Wp
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef Py_ssize_t it, n, gi, c, k, od, oh, ow, r, filled, need
    cdef floating* xp = NULL
    cdef floating* yw
    cdef floating* yk
    cdef const floating* wk
    cdef const floating* xn
    cdef floating bv
    try:
        with nogil, parallel(num_threads=n_threads):
            xp = scratch + threadid() * per_thread
            yw = xp + g.Cg * q.plane
            memset(xp, 0, g.Cg * q.plane * sizeof(floating))     # the padding, once
            for it in prange(N * g.G, schedule="static"):
                n = it // g.G
                gi = it % g.G
                xn = &x[n, 0] + gi * g.Cg * g.img_plane
                filled = 0                       # input rows staged so far (stream)
                if not stream:                   # (same3 is a stream case)
                    for c in range(g.Cg):
                        fill_plane(xn + c * g.img_plane, xp + c * q.plane, &g, &q)
                for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                    wk = &w[k, 0]
                    bv = b[k] if has_bias else 0
                    yk = &y[n, 0] + k * g.P
                    if same3:                    # xp is all zeros: the padding rows
                        dw_same3(yk, xn, xp, g.H, g.W, wk, bv)
                    elif stream:                 # one channel, one output depth
                        oh = 0
                        while oh < g.OH:
                            r = _min(step, g.OH - oh)
                            # input rows that these r output rows read
                            need = _min(g.H, (oh + r - 1) * g.SH + (g.KH - 1) * g.DH
                                        - g.PH + 1)
                            if need > filled:
                                fill_rows(xn, xp, filled, need, &g, &q)
                                filled = need
                            prefetchw_span(<char*> (yk + oh * g.OW) + PREFETCH,
                                           r * g.OW * <Py_ssize_t> sizeof(floating))
                            if share:
                                dw_rows(yk + oh * g.OW, g.OW, xp + oh * row_step, row_step,
                                        wk, g.KW, g.DW, g.OW, r, bv)
                            else:
                                taps_rows(yk + oh * g.OW, g.OW, xp + oh * row_step,
                                          row_step, wk, off, g.KK, g.OW, r, False, bv)
                            oh = oh + r
                    elif rows:                   # the first channel starts from the bias
                        # the next output plane, while this one is computed
                        prefetchw_span(yk + g.P, g.P * <Py_ssize_t> sizeof(floating))
                        for c in range(g.Cg):
                            for od in range(g.OD):
                                taps_rows(yk + od * g.OH * g.OW, g.OW,
                                          xp + c * q.plane + od * depth_step, row_step,
                                          wk + c * g.KK, off, g.KK, g.OW, g.OH, c > 0, bv)
                    else:
                        for c in range(g.Cg):            # the first channel overwrites yw
                            if unit:
                                taps_acc(yw, xp + c * q.plane, wk + c * g.KK, off, g.KK,
                                         span, 1, c > 0)
                            else:
                                for od in range(g.OD):
                                    for oh in range(g.OH):
                                        taps_acc(yw + (od * g.OH + oh) * g.OW,
                                                 xp + c * q.plane + od * depth_step
                                                 + oh * row_step,
                                                 wk + c * g.KK, off, g.KK, g.OW, g.SW, c > 0)
                        if unit:
                            for od in range(g.OD):
                                for oh in range(g.OH):
                                    for ow in range(g.OW):
                                        yk[(od * g.OH + oh) * g.OW + ow] = (
                                            yw[(od * q.Hp + oh) * q.Wp + ow] + bv)
                        else:
                            for ow in range(g.P):
                                yk[ow] = yw[ow] + bv
    finally:
        free(scratch)


def conv_backward_input(const floating[:, ::1] gy, const floating[:, ::1] w,
                        const floating[::1] b, floating[:, ::1] gx, tuple geom,
                        Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """gx[n] = conv_input(gy[n], w) (+ b), one (sample, group) per work item.

    gy (N, C_col * P), w (C_col, CKK), b (C_img,) or empty, gx (N, C_img * D*H*W).
    With unit strides each output-gradient plane is staged on the padded plane's grid
    (zeros off the output, a front margin of the largest tap offset) and gathered with
    negated tap offsets: ``gxp[i] += sum_t w[t] * G[i - off[t]]``.  Otherwise every tap
    is scattered row by row (``tap_backward``).
    """
    cdef Geom g = make_geom(geom)
    cdef Pad q = make_pad(&g)
    cdef Py_ssize_t N = gy.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef bint unit = g.SD == 1 and g.SH == 1 and g.SW == 1
    cdef Py_ssize_t[::1] noffs = _tap_offsets(&g, &q, -1)
    cdef const Py_ssize_t* noff = &noffs[0]
    cdef Py_ssize_t area = q.Dp * q.Hp * q.Wp
    cdef Py_ssize_t margin = -noffs[g.KK - 1]
    cdef Py_ssize_t stage = margin + area if unit else q.wide
    cdef Py_ssize_t per_thread = g.Cg * q.plane + stage
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef Py_ssize_t it, n, gi, c, k, kd, kh, kw, od, oh
    cdef floating* xp = NULL
    cdef floating* gw
    cdef const floating* wk
    cdef const floating* gyk
    try:
        with nogil, parallel(num_threads=n_threads):
            xp = scratch + threadid() * per_thread
            gw = xp + g.Cg * q.plane
            for it in prange(N * g.G, schedule="static"):
                n = it // g.G
                gi = it % g.G
                memset(xp, 0, g.Cg * q.plane * sizeof(floating))
                for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                    wk = &w[k, 0]
                    gyk = &gy[n, 0] + k * g.P
                    if unit:
                        memset(gw, 0, stage * sizeof(floating))
                        for od in range(g.OD):
                            for oh in range(g.OH):
                                memcpy(gw + margin + (od * q.Hp + oh) * q.Wp,
                                       gyk + (od * g.OH + oh) * g.OW, g.OW * sizeof(floating))
                        for c in range(g.Cg):
                            taps_acc(xp + c * q.plane, gw + margin, wk + c * g.KK, noff,
                                     g.KK, area, 1, True)
                    else:
                        stage_wide(gyk, gw, &g, &q)
                        for c in range(g.Cg):
                            for kd in range(g.KD):
                                for kh in range(g.KH):
                                    for kw in range(g.KW):
                                        tap_backward(xp + c * q.plane, gw,
                                                     wk[((c * g.KD + kd) * g.KH + kh) * g.KW + kw],
                                                     kd, kh, kw, &g, &q)
                for c in range(g.Cg):
                    crop_plane(xp + c * q.plane, &gx[n, 0] + (gi * g.Cg + c) * g.img_plane,
                               b[gi * g.Cg + c] if has_bias else 0, &g, &q)
    finally:
        free(scratch)


def conv_backward_weight(const floating[:, ::1] x, const floating[:, ::1] gy,
                         floating[:, ::1] gw, tuple geom, Py_ssize_t n_threads,
                         Py_ssize_t ws_bytes):
    """gw[k, c] = sum over samples of <gy[n, k], x[n, c] under each tap>.

    A work item is a run of consecutive input channels, swept sample by sample: for one
    sample its x planes (and, depthwise, its gy planes) lie next to each other in memory,
    so they stream in; across samples they are a whole sample apart.  Every gw element
    is summed by one thread in sample order, whatever the thread count.  x (N, C_img *
    D*H*W), gy (N, C_col * P), gw (C_col, CKK) overwritten.
    """
    cdef Geom g = make_geom(geom)
    cdef Pad q = make_pad(&g)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t per_thread = q.plane + q.wide
    # runs of channels: a few per thread, so that dynamic scheduling evens them out
    cdef Py_ssize_t run = _max(1, g.C_img // (4 * n_threads))
    cdef Py_ssize_t n_runs = (g.C_img + run - 1) // run
    cdef bint unit = g.SD == 1 and g.SH == 1 and g.SW == 1
    # 3x3 'same' depthwise planes of at least one vector per row: dw_same3_dot, in place
    cdef bint same3 = _same3(&g) and g.W * <Py_ssize_t> sizeof(floating) >= 32
    cdef Py_ssize_t[::1] offs = _tap_offsets(&g, &q, 1)
    cdef const Py_ssize_t* off = &offs[0]
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef Py_ssize_t ri, it, n, gi, c, k, kd, kh, kw, tap, od, gl
    cdef bint finite
    cdef const floating* grid
    cdef floating* xp = NULL
    cdef floating* gyw
    cdef floating* out
    cdef floating* gwp = &gw[0, 0]
    try:
        with nogil, parallel(num_threads=n_threads):
            xp = scratch + threadid() * per_thread
            gyw = xp + q.plane
            memset(xp, 0, q.plane * sizeof(floating))     # the padding, once
            for ri in prange(n_runs, schedule="dynamic"):
                for it in range(ri * run, _min(g.C_img, (ri + 1) * run)):
                    gi = it // g.Cg
                    c = it % g.Cg
                    for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                        memset(gwp + k * g.CKK + c * g.KK, 0, g.KK * sizeof(floating))
                for n in range(N):
                    for it in range(ri * run, _min(g.C_img, (ri + 1) * run)):
                        gi = it // g.Cg
                        c = it % g.Cg
                        if same3:                # xp is all zeros: the padding rows
                            for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                                dw_same3_dot(gwp + k * g.CKK, &gy[n, 0] + k * g.P,
                                             &x[n, 0] + it * g.img_plane, xp, g.H, g.W)
                            continue
                        finite = fill_plane(&x[n, 0] + it * g.img_plane, xp, &g, &q)
                        for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                            out = gwp + k * g.CKK + c * g.KK
                            if finite:
                                stage_wide(&gy[n, 0] + k * g.P, gyw, &g, &q)
                                if unit:  # every tap at once over each wide output plane
                                    for od in range(g.OD):
                                        taps_dot(out, gyw + od * g.OH * q.L,
                                                 xp + od * q.Hp * q.Wp, off, g.KK,
                                                 g.OH * q.Wp)
                                    continue
                                grid, gl = gyw, q.L
                            else:        # real outputs only: no 0 * Inf from the grid
                                grid, gl = &gy[n, 0] + k * g.P, g.OW
                            for kd in range(g.KD):
                                for kh in range(g.KH):
                                    for kw in range(g.KW):
                                        tap = (kd * g.KH + kh) * g.KW + kw
                                        out[tap] = out[tap] + tap_dot(grid, gl, xp, kd, kh,
                                                                      kw, &g, &q)
    finally:
        free(scratch)
