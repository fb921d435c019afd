"""Channel-blocked direct convolution: the dense-layer half of the ``"direct"`` algorithm.

The plain direct kernels (``direct.pyx``) vectorise along the image width, one channel
at a time; that is right for depthwise and thin-group layers but load-bound on dense
ones.  Here channels are blocked by the vector width L (8 float32 / 4 float64), as in
oneDNN's ``jit:avx2`` convolution and Georganas et al. (arXiv:1808.05567):

* each sample's group image is repacked once into zero-padded blocks
  ``xb[cb][Dp][Hp][Wp][L]``, a per-call workspace within the workspace limit: several
  samples at a time when they fit, else slabs of the depth slices (3-D) or rows (1-D,
  2-D) that a run of output slices or rows reads, down to a single one;
* the weights are repacked once per call into ``wb[g][kb][cb][tap][ci][co]`` (L x L
  blocks, zero where a channel block overhangs the real channel count);
* the micro-kernel in ``_blocked.h`` keeps 6 output pixels x 2 output-channel blocks in
  registers and streams every input-channel block and kernel tap through them, so each
  loaded weight vector feeds 6 FMAs and each broadcast input value 2;
* a work item is a run of output rows of one plane of one (sample, group), swept once
  per pair of output-channel blocks while its input rows stay in cache; items are sized
  so that every thread gets many, and handed out dynamically (on a shared machine a
  thread can be slowed at any moment).  Each row is cut into calls of 6 pixels and a
  last one or two of 3 .. 5 (``_split``): no pixel past the row's end is computed, which
  at 14x14 and 7x7 saves the 12% and 26% that whole 6-pixel calls on a grid of padded
  rows wasted (forward 3x3, 256 channels at 14x14, 512 at 7x7, batch 8: 0.94-0.95 and
  0.89 of the time before at 2 threads).

Every output element is one fixed-order sum over (channel block, tap, channel), computed
by one thread: results are bit-identical for any thread count and any workspace limit.
Stride, dilation and padding only change the input offsets, and each micro-kernel call
runs only the taps that reach real input for its pixels (with finite weights leaving out
a tap that reads only padding changes no bit), so large dilations cost less, not more.
The input gradient of a unit-stride convolution is the
same kernel run on the output gradient with flipped, transposed weights (``_cpu.py``).
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom
from cyconv._ext._finite cimport all_finite_n


cdef extern from "_blocked.h" nogil:
    enum: CY_UR
    enum: CY_UR_MIN
    void cy_blk_pack_f(const float* w, Py_ssize_t rs, Py_ssize_t n, Py_ssize_t KK,
                       float* dst)
    void cy_blk_pack_d(const double* w, Py_ssize_t rs, Py_ssize_t n, Py_ssize_t KK,
                       double* dst)
    void cy_blk_f_2(int ur, float* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                    Py_ssize_t jend, const float* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const float* w, Py_ssize_t wblk,
                    Py_ssize_t wcs, const Py_ssize_t* toff, const Py_ssize_t* woff,
                    Py_ssize_t KK, Py_ssize_t CB, const float* bias)
    void cy_blk_f_1(int ur, float* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                    Py_ssize_t jend, const float* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const float* w, Py_ssize_t wblk,
                    Py_ssize_t wcs, const Py_ssize_t* toff, const Py_ssize_t* woff,
                    Py_ssize_t KK, Py_ssize_t CB, const float* bias)
    void cy_blk_d_2(int ur, double* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                    Py_ssize_t jend, const double* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const double* w, Py_ssize_t wblk,
                    Py_ssize_t wcs, const Py_ssize_t* toff, const Py_ssize_t* woff,
                    Py_ssize_t KK, Py_ssize_t CB, const double* bias)
    void cy_blk_d_1(int ur, double* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                    Py_ssize_t jend, const double* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const double* w, Py_ssize_t wblk,
                    Py_ssize_t wcs, const Py_ssize_t* toff, const Py_ssize_t* woff,
                    Py_ssize_t KK, Py_ssize_t CB, const double* bias)


cdef enum:
    MAX_LISTED = 512        # taps one call can list; a longer kernel always runs them all
    COL_MIN = 96            # fewest output columns of a work item cut across a row


def lanes(Py_ssize_t itemsize):
    """Channels per block for an element size: one 32-byte vector."""
    return 32 // itemsize


cdef struct Blk:
    Py_ssize_t L, CB, KB, KP     # lanes, input / output channel blocks, output block pairs
    Py_ssize_t Dp, Hp, Wp        # padded extent of one input block
    bint outer_d                 # chunk along depth (3-D), else along height
    Py_ssize_t inner             # padded pixels per outer index: Hp * Wp, or Wp
    Py_ssize_t wblk              # CB * KK * L * L: one output block's weights


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef struct Taps:
    const Py_ssize_t* toff       # every tap's input offset, taps in (kd, kh, kw) order
    Py_ssize_t LL                # weight elements per tap: L * L
    bint skip                    # list per call only the taps that reach real input
    # output indices [f*0, f*1] for which every tap of that axis reads real input
    Py_ssize_t fd0, fd1, fh0, fh1, fw0, fw1


cdef inline Py_ssize_t _floordiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """floor(a / b) for b > 0 (C division truncates toward zero)."""
    return a // b if a >= 0 else -((b - 1 - a) // b)


cdef inline void _reach(Py_ssize_t o0, Py_ssize_t o1, Py_ssize_t S, Py_ssize_t Dl,
                        Py_ssize_t P, Py_ssize_t n, Py_ssize_t K, Py_ssize_t* lo,
                        Py_ssize_t* hi) noexcept nogil:
    """The taps [lo, hi) of one axis that read real input for some output index in
    [o0, o1]: padded input index o * S + k * Dl within the data [P, P + n)."""
    lo[0] = _max(0, -_floordiv(o1 * S - P, Dl))             # ceil((P - o1 * S) / Dl)
    hi[0] = _min(K, _floordiv(P + n - 1 - o0 * S, Dl) + 1)


cdef inline void _interior(Py_ssize_t S, Py_ssize_t Dl, Py_ssize_t P, Py_ssize_t n,
                           Py_ssize_t K, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The output indices [lo, hi] for which every tap of one axis reads real input:
    o * S >= P and o * S + (K - 1) * Dl < P + n."""
    lo[0] = (P + S - 1) // S
    hi[0] = _floordiv(P + n - 1 - (K - 1) * Dl, S)


cdef Py_ssize_t _list_taps(Py_ssize_t* tl, Py_ssize_t* wl, const Taps* tp, const Geom* g,
                           Py_ssize_t od, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
                           Py_ssize_t c1) noexcept nogil:
    """List into tl / wl the taps that reach real input for some output pixel of depth
    od, rows [r0, r1] and columns [c0, c1], and return how many (the others read only
    padding).  Large dilations and paddings leave many taps out (with dilation 32 on a
    56x56 image, 5 of a 3x3 kernel's 9 on average)."""
    cdef Py_ssize_t d0, d1, h0, h1, w0, w1, kd, kh, kw, t, n = 0
    _reach(od, od, g.SD, g.DD, g.PD, g.D, g.KD, &d0, &d1)
    _reach(r0, r1, g.SH, g.DH, g.PH, g.H, g.KH, &h0, &h1)
    _reach(c0, c1, g.SW, g.DW, g.PW, g.W, g.KW, &w0, &w1)
    for kd in range(d0, d1):
        for kh in range(h0, h1):
            for kw in range(w0, w1):
                t = (kd * g.KH + kh) * g.KW + kw
                tl[n] = tp.toff[t]
                wl[n] = t * tp.LL
                n = n + 1
    return n


cdef inline Py_ssize_t _split(Py_ssize_t rem) noexcept nogil:
    """Pixels of the next micro-kernel call when rem are left in the row: 6, but 7 and 8
    go as 4 + 3 and 4 + 4 (a call of 3 .. 5 runs at 0.80 / 0.89 / 0.92 of the per-pixel
    rate of 6, see _blocked.h), and fewer than CY_UR_MIN as one call of CY_UR_MIN."""
    if rem <= CY_UR:
        return rem
    return 4 if rem <= CY_UR + 2 else CY_UR


cdef Blk make_blk(const Geom* g, Py_ssize_t L) noexcept nogil:
    cdef Blk q
    q.L = L
    q.CB = (g.Cg + L - 1) // L
    q.KB = (g.Kg + L - 1) // L
    q.KP = (q.KB + 1) // 2
    q.Dp = _max(g.D + g.PD, (g.OD - 1) * g.SD + (g.KD - 1) * g.DD + 1)
    q.Hp = _max(g.H + g.PH, (g.OH - 1) * g.SH + (g.KH - 1) * g.DH + 1)
    # a row narrower than CY_UR_MIN is computed (and read) CY_UR_MIN pixels wide
    q.Wp = _max(g.W + g.PW, (_max(g.OW, CY_UR_MIN) - 1) * g.SW + (g.KW - 1) * g.DW + 1)
    q.outer_d = not (g.D == 1 and g.OD == 1 and g.KD == 1 and g.PD == 0)
    q.inner = q.Hp * q.Wp if q.outer_d else q.Wp
    q.wblk = q.CB * g.KK * L * L
    return q


cdef inline Py_ssize_t slab_rows(const Geom* g, const Blk* q, Py_ssize_t oc) noexcept nogil:
    """Padded input rows (depth slices, or image rows) that oc outer output indices read."""
    if q.outer_d:
        return (oc - 1) * g.SD + (g.KD - 1) * g.DD + 1
    return (oc - 1) * g.SH + (g.KH - 1) * g.DH + 1


cdef inline Py_ssize_t slab_plane(const Geom* g, const Blk* q, Py_ssize_t oc) noexcept nogil:
    """Elements of one packed channel block for oc outer output indices."""
    return slab_rows(g, q, oc) * q.inner * q.L


def workspace_bytes(tuple geom, Py_ssize_t itemsize):
    """Scratch bytes of the smallest chunk (one output row or depth slice of one sample):
    the blocked kernel needs at least this much, whatever the workspace limit."""
    cdef Geom g = make_geom(geom)
    cdef Blk q = make_blk(&g, 32 // itemsize)
    return g.G * q.CB * slab_plane(&g, &q, 1) * itemsize


cdef void pack_slab(const floating* x, floating* xb, Py_ssize_t nci, Py_ssize_t o0,
                    Py_ssize_t rows, Py_ssize_t splane, const Geom* g,
                    const Blk* q) noexcept nogil:
    """One channel block of the padded input rows [o0 * stride, + rows) along the outer
    axis: ``xb[r, ..., w, ci] = xpad[ci, o0 * stride + r, ..., w]``, zeros in the padding
    and for ci >= nci.  x points at the block's first of nci (<= L) channel planes."""
    cdef Py_ssize_t L = q.L, d, h, i, ci, loc
    cdef floating* dst
    cdef const floating* src
    memset(xb, 0, splane * sizeof(floating))
    for d in range(g.D):
        for h in range(g.H):
            if q.outer_d:
                loc = d + g.PD - o0 * g.SD
                if loc < 0 or loc >= rows:
                    break
                dst = xb + ((loc * q.Hp + h + g.PH) * q.Wp + g.PW) * L
            else:
                loc = h + g.PH - o0 * g.SH
                if loc < 0 or loc >= rows:
                    continue
                dst = xb + (loc * q.Wp + g.PW) * L
            src = x + (d * g.H + h) * g.W
            for i in range(g.W):
                for ci in range(nci):
                    dst[i * L + ci] = src[ci * g.img_plane + i]


cdef bint pack_weights(const floating* w, floating* wb, bint flip, Py_ssize_t n_threads,
                       const Geom* g, const Blk* q) noexcept nogil:
    """wb[gi][kb][cb][t][ci][co] = w[gi*Kg + k, c*KK + t] for k = kb*L + co and
    c = cb*L + ci, zero where k or c overhang the group's channels: one output block's
    weights (wblk of them) per (group, output block), packed in parallel.  Returns
    whether every weight is finite (each is read once: no separate pass).

    flip: the weights of a unit-stride input gradient run as this forward convolution,
    read straight from the weight w of the convolution it differentiates (C_img rows of
    Kg*KK, Kg = this Cg, Cg = this Kg): w[gi*Cg + c, k*KK + KK-1-t], the image and column
    channels swapped and every kernel axis reversed."""
    cdef Py_ssize_t L = q.L, it, co, nk, k0, c, t, KK = g.KK
    cdef floating* dst
    cdef const floating* src
    cdef Py_ssize_t nonfinite = 0                  # blocks with a NaN or Inf weight
    for it in prange(g.G * q.KB, num_threads=n_threads, schedule="static"):
        k0 = (it % q.KB) * L                            # first output channel of the block
        nk = _min(L, g.Kg - k0)
        if nk < L or g.Cg % L:                          # overhanging channels stay zero
            memset(wb + it * q.wblk, 0, q.wblk * sizeof(floating))
        if nk == L and not flip:                        # whole block: vectors at a time
            src = w + ((it // q.KB) * g.Kg + k0) * g.Cg * KK
            if floating is float:
                cy_blk_pack_f(src, g.Cg * KK, g.Cg * KK, KK, wb + it * q.wblk)
            else:
                cy_blk_pack_d(src, g.Cg * KK, g.Cg * KK, KK, wb + it * q.wblk)
        for c in range(g.Cg if nk < L or flip else 0):
            for t in range(KK):
                # one vector of the block: the nk output channels' weights at (c, t), each
                # read from its own row (flip: every row's entries KK apart)
                dst = wb + it * q.wblk + ((c // L * KK + t) * L + c % L) * L
                if flip:
                    src = w + ((it // q.KB) * g.Cg + c) * g.Kg * KK + k0 * KK + KK - 1 - t
                    for co in range(nk):
                        dst[co] = src[co * KK]
                else:
                    src = w + ((it // q.KB) * g.Kg + k0) * g.Cg * KK + c * KK + t
                    for co in range(nk):
                        dst[co] = src[co * g.Cg * KK]
        # checked while the block is in cache (zeros where channels overhang are finite)
        nonfinite += not all_finite_n(wb + it * q.wblk, q.wblk)
    return nonfinite == 0


cdef floating* _alloc(Py_ssize_t n, floating dummy) except NULL:
    cdef floating* p = <floating*> malloc(_max(1, n) * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"cyconv: could not allocate {n * sizeof(floating)} bytes of "
                          f"blocked-direct workspace")
    return p


cdef inline void _micro(int ur, floating* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                        Py_ssize_t jend, const floating* x, Py_ssize_t xs, Py_ssize_t xcs,
                        const floating* w, Py_ssize_t wblk, const Py_ssize_t* toff,
                        const Py_ssize_t* woff, Py_ssize_t nt, const Geom* g, const Blk* q,
                        const floating* bias) noexcept nogil:
    """One micro-kernel call (see _blocked.h) of ur pixels over the nt listed taps: two
    output blocks when nk > L, else one."""
    cdef Py_ssize_t wcs = g.KK * q.L * q.L
    if floating is float:
        if nk > q.L:
            cy_blk_f_2(ur, y, ys, nk, j, jend, x, xs, xcs, w, wblk, wcs, toff, woff, nt,
                       q.CB, bias)
        else:
            cy_blk_f_1(ur, y, ys, nk, j, jend, x, xs, xcs, w, wblk, wcs, toff, woff, nt,
                       q.CB, bias)
    else:
        if nk > q.L:
            cy_blk_d_2(ur, y, ys, nk, j, jend, x, xs, xcs, w, wblk, wcs, toff, woff, nt,
                       q.CB, bias)
        else:
            cy_blk_d_1(ur, y, ys, nk, j, jend, x, xs, xcs, w, wblk, wcs, toff, woff, nt,
                       q.CB, bias)


cdef void _sweep(floating* ypl, Py_ssize_t nk, Py_ssize_t od, Py_ssize_t oh0,
                 Py_ssize_t oh1, Py_ssize_t ow0, Py_ssize_t ow1, Py_ssize_t rbase,
                 const floating* xsl, Py_ssize_t xs, Py_ssize_t splane, const floating* wa,
                 const floating* bias, const Taps* tp, const Geom* g,
                 const Blk* q) noexcept nogil:
    """Output rows [oh0, oh1), columns [ow0, ow1) of output depth od, for nk (<= 2L)
    output channels from ypl on, row by row in calls of _split pixels.  xsl is the
    packed slab whose first row is padded input row rbase.

    With tp.skip a call whose pixels lie near the border runs only the taps that reach
    real input for them (_list_taps); interior calls, told apart by the precomputed
    interior ranges with no division, run every tap."""
    cdef Py_ssize_t L = q.L, j, oh, c1, nt, ur
    cdef Py_ssize_t tl[MAX_LISTED]
    cdef Py_ssize_t wl[MAX_LISTED]
    cdef const Py_ssize_t* toff
    cdef const Py_ssize_t* woff
    cdef bint skip = tp.skip, dfull = tp.fd0 <= od <= tp.fd1, hfull
    for oh in range(oh0, oh1):
        hfull = dfull and tp.fh0 <= oh <= tp.fh1
        j = ow0
        while j < ow1:
            ur = _split(ow1 - j)
            toff, woff, nt = tp.toff, NULL, g.KK
            c1 = j + ur - 1
            if skip and not (hfull and tp.fw0 <= j and c1 <= tp.fw1):
                nt = _list_taps(tl, wl, tp, g, od, oh, oh, j, c1)
                toff, woff = tl, wl
            _micro(_max(ur, CY_UR_MIN), ypl + oh * g.OW, g.P, nk, j, ow1,
                   xsl + ((oh * g.SH - rbase) * q.Wp + j * g.SW) * L, xs, splane, wa,
                   q.wblk, toff, woff, nt, g, q, bias)
            j = j + ur


cdef void _run_chunk(const floating* x, Py_ssize_t xstride, floating* y, Py_ssize_t ystride,
                     const floating* b, const floating* wb, floating* xb,
                     const Taps* tp, Py_ssize_t n0, Py_ssize_t nc, Py_ssize_t o0,
                     Py_ssize_t PC, Py_ssize_t R0, Py_ssize_t NR, Py_ssize_t RB,
                     Py_ssize_t NRB, Py_ssize_t CW, Py_ssize_t NCW, Py_ssize_t KPC,
                     Py_ssize_t rows, Py_ssize_t splane, Py_ssize_t simg, Py_ssize_t xs,
                     Py_ssize_t n_threads, const Geom* g, const Blk* q) noexcept nogil:
    """Pack the chunk's input slabs, then compute its outputs (two parallel loops).

    Samples n0 .. n0+nc; outer output indices o0 ..: PC planes (depth chunk) of all rows,
    or rows R0 .. R0+NR of the single plane (height chunk); a work item is RB rows of
    one plane, CW columns wide (NCW items across), for KPC output-block pairs (all of
    them, q.KP, unless that leaves too few items).  b is NULL without bias.
    """
    cdef Py_ssize_t L = q.L, it, nn, gi, c, kp, pi, od, oh0, k0, ow0, kc
    cdef Py_ssize_t NKP = (q.KP + KPC - 1) // KPC
    cdef const floating* xsl
    for it in prange(nc * g.G * q.CB, num_threads=n_threads, schedule="dynamic"):
        nn = it // (g.G * q.CB)
        gi = (it // q.CB) % g.G
        c = (it % q.CB) * L
        pack_slab(x + (n0 + nn) * xstride + (gi * g.Cg + c) * g.img_plane, xb + it * splane,
                  _min(L, g.Cg - c), o0, rows, splane, g, q)
    for it in prange(nc * g.G * PC * NRB * NCW * NKP, num_threads=n_threads,
                     schedule="dynamic"):
        kc = (it % NKP) * KPC
        ow0 = (it // NKP % NCW) * CW
        oh0 = R0 + (it // (NKP * NCW) % NRB) * RB
        pi = (it // (NKP * NCW * NRB)) % PC
        gi = (it // (NKP * NCW * NRB * PC)) % g.G
        nn = it // (NKP * NCW * NRB * PC * g.G)
        od = o0 + pi if q.outer_d else 0
        # the slab's first row: plane pi of a depth chunk, or row R0 of a height chunk
        xsl = xb + (nn * g.G + gi) * simg + pi * g.SD * q.inner * L
        # its output-block pairs in turn, while the item's input rows are in cache
        for kp in range(kc, _min(kc + KPC, q.KP)):
            k0 = 2 * kp * L
            _sweep(y + (n0 + nn) * ystride + (gi * g.Kg + k0) * g.P + od * g.OH * g.OW,
                   _min(2 * L, g.Kg - k0), od, oh0, _min(R0 + NR, oh0 + RB), ow0,
                   _min(g.OW, ow0 + CW), R0 * g.SH, xsl, xs, splane, wb + (gi * q.KB + 2 * kp) * q.wblk,
                   b + gi * g.Kg + k0 if b != NULL else NULL, tp, g, q)


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes,
                 bint flip=False):
    """y[n] = conv(x[n], w) + b for every sample, channel-blocked direct loops.

    x (N, C_img * D*H*W), w (C_col, Cg * KK), b (C_col,) or empty, y (N, C_col * P).
    With flip, w is instead the (C_img, Kg * KK) weight of the convolution whose input
    gradient this is (see ``pack_weights``): no flipped copy is made.
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t L = 8 if floating is float else 4
    cdef Blk q = make_blk(&g, L)
    cdef Py_ssize_t N = x.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t elem = sizeof(floating)
    cdef Py_ssize_t OO = g.OD if q.outer_d else g.OH       # outer output extent
    cdef Py_ssize_t So = g.SD if q.outer_d else g.SH
    # Chunks: whole samples while one fits the workspace, else slabs of OC outer output
    # indices of one sample (at least one, whatever the limit).
    cdef Py_ssize_t OC = OO, NC = 1, room
    cdef Py_ssize_t per_sample = g.G * q.CB * slab_plane(&g, &q, OO)
    if per_sample * elem <= ws_bytes:
        NC = _max(1, _min(N, ws_bytes // (per_sample * elem)))
    else:
        room = ws_bytes // (g.G * q.CB * L * elem) // q.inner             # slab rows
        OC = _max(1, _min(OO, (room - slab_rows(&g, &q, 1)) // So + 1))
    cdef Py_ssize_t rows = slab_rows(&g, &q, OC)
    cdef Py_ssize_t splane = slab_plane(&g, &q, OC)
    cdef Py_ssize_t simg = q.CB * splane                   # one (sample, group) slab
    cdef Py_ssize_t o0, oc, PC, R0, NR, RB, NRB, CW, NCW, KPC
    cdef Py_ssize_t nw = g.G * q.KB * q.wblk
    cdef floating* wb = _alloc(nw, <floating> 0)
    cdef floating* xb = NULL
    cdef Py_ssize_t* toff = <Py_ssize_t*> malloc(g.KK * sizeof(Py_ssize_t))
    cdef Taps tp
    cdef Py_ssize_t t, kd, kh, kw, n0, nc
    cdef bint finite
    cdef Py_ssize_t xs = g.SW * L
    if toff == NULL:
        free(wb)
        raise MemoryError("cyconv: could not allocate the tap offsets")
    try:
        xb = _alloc(NC * g.G * simg, <floating> 0)
        with nogil:
            finite = pack_weights(&w[0, 0], wb, flip, n_threads, &g, &q)
        for t in range(g.KK):
            kw = t % g.KW
            kh = (t // g.KW) % g.KH
            kd = t // (g.KW * g.KH)
            toff[t] = ((kd * g.DD * q.Hp + kh * g.DH) * q.Wp + kw * g.DW) * L
        # Taps that read only padding are left out (bit-exact, see _blocked.h) unless a
        # weight is NaN or Inf: then 0 * w must reach the output as in the im2col path.
        tp.toff, tp.LL = toff, L * L
        tp.skip = g.KK <= MAX_LISTED
        _interior(g.SD, g.DD, g.PD, g.D, g.KD, &tp.fd0, &tp.fd1)
        _interior(g.SH, g.DH, g.PH, g.H, g.KH, &tp.fh0, &tp.fh1)
        _interior(g.SW, g.DW, g.PW, g.W, g.KW, &tp.fw0, &tp.fw1)
        tp.skip = tp.skip and finite
        for n0 in range(0, N, NC):
            nc = _min(NC, N - n0)
            for o0 in range(0, OO, OC):
                oc = _min(OC, OO - o0)
                # a work item: RB output rows of one plane of one (sample, group), for
                # every output block; enough items for dynamic scheduling to even out
                # the threads (the machine is shared: a thread may be slowed at any time)
                PC = oc if q.outer_d else 1                # planes in this chunk
                R0 = 0 if q.outer_d else o0                # its output rows [R0, R0 + NR)
                NR = g.OH if q.outer_d else oc
                RB = _max(1, _min(NR, nc * g.G * PC * NR // (16 * n_threads)))
                NRB = (NR + RB - 1) // RB
                # too few rows for the threads (a long 1-D signal, one sample): rows are
                # also cut across, into whole 6-pixel calls of at least COL_MIN pixels
                NCW = 1
                if nc * g.G * PC * NRB < 4 * n_threads:
                    NCW = _max(1, _min((4 * n_threads) // (nc * g.G * PC * NRB),
                                       g.OW // COL_MIN))
                CW = (g.OW + NCW - 1) // NCW
                CW = (CW + CY_UR - 1) // CY_UR * CY_UR
                NCW = (g.OW + CW - 1) // CW
                # still too few (a short row, one sample: a text CNN, a vocoder's first
                # layer at batch 1): the output-block pairs are shared out too, each item
                # re-reading the same input rows for its own pairs
                KPC = q.KP
                if nc * g.G * PC * NRB * NCW < 4 * n_threads:
                    KPC = _max(1, q.KP * nc * g.G * PC * NRB * NCW // (4 * n_threads))
                with nogil:
                    _run_chunk(&x[0, 0], x.shape[1], &y[0, 0], y.shape[1],
                               &b[0] if has_bias else NULL, wb, xb, &tp, n0, nc, o0, PC,
                               R0, NR, RB, NRB, CW, NCW, KPC, rows, splane, simg, xs,
                               n_threads, &g, &q)
    finally:
        free(xb)
        free(wb)
        free(toff)

