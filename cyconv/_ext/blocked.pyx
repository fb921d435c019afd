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
  thread can be slowed at any moment).  With unit stride in H and W a run of rows is one
  "wide" sweep over rows Wp long (see ``_blocked.h``), so a narrow output row does not
  waste a partial micro-kernel call at its end.

Every output element is one fixed-order sum over (channel block, tap, channel), computed
by one thread: results are bit-identical for any thread count and any workspace limit.
Stride, dilation and padding only change the input offsets, so the kernel's speed is
nearly independent of dilation.  The input gradient of a unit-stride convolution is the
same kernel run on the output gradient with flipped, transposed weights (``_cpu.py``).
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom


cdef extern from "_blocked.h" nogil:
    enum: CY_UR
    void cy_blk_f_2(float* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,
                    Py_ssize_t wrow, Py_ssize_t ow_n, const float* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const float* w0, const float* w1,
                    Py_ssize_t wcs, const Py_ssize_t* toff, Py_ssize_t KK, Py_ssize_t CB,
                    const float* bias)
    void cy_blk_f_1(float* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,
                    Py_ssize_t wrow, Py_ssize_t ow_n, const float* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const float* w0, Py_ssize_t wcs,
                    const Py_ssize_t* toff, Py_ssize_t KK, Py_ssize_t CB, const float* bias)
    void cy_blk_d_2(double* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,
                    Py_ssize_t wrow, Py_ssize_t ow_n, const double* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const double* w0, const double* w1,
                    Py_ssize_t wcs, const Py_ssize_t* toff, Py_ssize_t KK, Py_ssize_t CB,
                    const double* bias)
    void cy_blk_d_1(double* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j, Py_ssize_t jend,
                    Py_ssize_t wrow, Py_ssize_t ow_n, const double* x,
                    Py_ssize_t xs, Py_ssize_t xcs, const double* w0, Py_ssize_t wcs,
                    const Py_ssize_t* toff, Py_ssize_t KK, Py_ssize_t CB, const double* bias)


UR = CY_UR


def lanes(Py_ssize_t itemsize):
    """Channels per block for an element size: one 32-byte vector."""
    return 32 // itemsize


cdef struct Blk:
    Py_ssize_t L, CB, KB, KP     # lanes, input / output channel blocks, output block pairs
    bint wide                    # unit stride in H and W: whole planes on the wide grid
    Py_ssize_t Dp, Hp, Wp        # padded extent of one input block
    bint outer_d                 # chunk along depth (3-D), else along height
    Py_ssize_t inner             # padded pixels per outer index: Hp * Wp, or Wp
    Py_ssize_t wblk              # CB * KK * L * L: one output block's weights


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef Blk make_blk(const Geom* g, Py_ssize_t L) noexcept nogil:
    cdef Blk q
    cdef Py_ssize_t ow_span, row_span
    q.L = L
    q.CB = (g.Cg + L - 1) // L
    q.KB = (g.Kg + L - 1) // L
    q.KP = (q.KB + 1) // 2
    # Unit stride in H and W allows whole planes on the wide grid (rows Wp long), which
    # pays for the Wp - OW padding columns; row by row pays for rounding OW up to whole
    # micro-kernel calls.  Take the cheaper: wide padding dwarfs OW at large dilation.
    row_span = (g.OW + CY_UR - 1) // CY_UR * CY_UR
    q.wide = (g.SH == 1 and g.SW == 1
              and _max(g.W + g.PW, g.OW + (g.KW - 1) * g.DW) <= row_span)
    q.Dp = _max(g.D + g.PD, (g.OD - 1) * g.SD + (g.KD - 1) * g.DD + 1)
    q.Hp = _max(g.H + g.PH, (g.OH - 1) * g.SH + (g.KH - 1) * g.DH + 1)
    # row by row, the last micro-kernel call of a row computes CY_UR pixels even past OW;
    # on the wide grid that overhang runs into the next row (or the slack below)
    ow_span = g.OW if q.wide else row_span
    q.Wp = _max(g.W + g.PW, (ow_span - 1) * g.SW + (g.KW - 1) * g.DW + 1)
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
    """Elements of one packed channel block for oc outer output indices (+ the slack
    that the wide grid's last micro-kernel call may read past the end)."""
    return (slab_rows(g, q, oc) * q.inner + CY_UR) * q.L


def wide_grid(tuple geom, Py_ssize_t itemsize):
    """Whether the kernel sweeps whole planes on the wide grid (else row by row)."""
    cdef Geom g = make_geom(geom)
    return bool(make_blk(&g, 32 // itemsize).wide)


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


cdef floating* _alloc(Py_ssize_t n, floating dummy) except NULL:
    cdef floating* p = <floating*> malloc(_max(1, n) * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"cyconv: could not allocate {n * sizeof(floating)} bytes of "
                          f"blocked-direct workspace")
    return p


cdef inline void _micro(floating* y, Py_ssize_t ys, Py_ssize_t nk, Py_ssize_t j,
                        Py_ssize_t jend, Py_ssize_t wrow, Py_ssize_t ow_n, const floating* x,
                        Py_ssize_t xs, Py_ssize_t xcs, const floating* w, Py_ssize_t wblk,
                        const Py_ssize_t* toff, const Geom* g, const Blk* q,
                        const floating* bias) noexcept nogil:
    """One micro-kernel call (see _blocked.h): two output blocks when nk > L, else one."""
    cdef Py_ssize_t wcs = g.KK * q.L * q.L
    if floating is float:
        if nk > q.L:
            cy_blk_f_2(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w, w + wblk, wcs, toff,
                       g.KK, q.CB, bias)
        else:
            cy_blk_f_1(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w, wcs, toff, g.KK, q.CB,
                       bias)
    else:
        if nk > q.L:
            cy_blk_d_2(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w, w + wblk, wcs, toff,
                       g.KK, q.CB, bias)
        else:
            cy_blk_d_1(y, ys, nk, j, jend, wrow, ow_n, x, xs, xcs, w, wcs, toff, g.KK, q.CB,
                       bias)


cdef void _sweep(floating* ypl, Py_ssize_t nk, Py_ssize_t oh0, Py_ssize_t oh1,
                 Py_ssize_t rbase, const floating* xsl, Py_ssize_t xs, Py_ssize_t splane,
                 const floating* wa, const floating* bias, const Py_ssize_t* toff,
                 const Geom* g, const Blk* q) noexcept nogil:
    """Output rows [oh0, oh1) of one plane for nk (<= 2L) output channels from ypl on:
    micro-kernel calls along the wide grid, or row by row.  xsl is the packed slab whose
    first row is padded input row rbase."""
    cdef Py_ssize_t L = q.L, j, jend, oh
    if q.wide:
        # pixels j of the plane on rows Wp long; input pixel j at slab row j // Wp - rbase
        jend = (oh1 - 1) * q.Wp + g.OW
        j = oh0 * q.Wp
        while j < jend:
            _micro(ypl, g.P, nk, j, jend, q.Wp, g.OW, xsl + (j - rbase * q.Wp) * L, xs,
                   splane, wa, q.wblk, toff, g, q, bias)
            j = j + CY_UR
    else:
        for oh in range(oh0, oh1):
            j = 0
            while j < g.OW:
                _micro(ypl + oh * g.OW, g.P, nk, j, g.OW, g.OW, g.OW,
                       xsl + ((oh * g.SH - rbase) * q.Wp + j * g.SW) * L, xs,
                       splane, wa, q.wblk, toff, g, q, bias)
                j = j + CY_UR


cdef void _run_chunk(const floating* x, Py_ssize_t xstride, floating* y, Py_ssize_t ystride,
                     const floating* b, const floating* wb, floating* xb,
                     const Py_ssize_t* toff, Py_ssize_t n0, Py_ssize_t nc, Py_ssize_t o0,
                     Py_ssize_t PC, Py_ssize_t R0, Py_ssize_t NR, Py_ssize_t RB,
                     Py_ssize_t NRB, Py_ssize_t rows, Py_ssize_t splane, Py_ssize_t simg,
                     Py_ssize_t xs, Py_ssize_t n_threads, const Geom* g,
                     const Blk* q) noexcept nogil:
    """Pack the chunk's input slabs, then compute its outputs (two parallel loops).

    Samples n0 .. n0+nc; outer output indices o0 ..: PC planes (depth chunk) of all rows,
    or rows R0 .. R0+NR of the single plane (height chunk).  b is NULL without bias.
    """
    cdef Py_ssize_t L = q.L, it, nn, gi, c, kp, pi, od, oh0, k0
    cdef const floating* xsl
    for it in prange(nc * g.G * q.CB, num_threads=n_threads, schedule="dynamic"):
        nn = it // (g.G * q.CB)
        gi = (it // q.CB) % g.G
        c = (it % q.CB) * L
        pack_slab(x + (n0 + nn) * xstride + (gi * g.Cg + c) * g.img_plane, xb + it * splane,
                  _min(L, g.Cg - c), o0, rows, splane, g, q)
    for it in prange(nc * g.G * PC * NRB, num_threads=n_threads, schedule="dynamic"):
        oh0 = R0 + (it % NRB) * RB
        pi = (it // NRB) % PC
        gi = (it // (NRB * PC)) % g.G
        nn = it // (NRB * PC * g.G)
        od = o0 + pi if q.outer_d else 0
        # the slab's first row: plane pi of a depth chunk, or row R0 of a height chunk
        xsl = xb + (nn * g.G + gi) * simg + pi * g.SD * q.inner * L
        # every output-block pair in turn, while the item's input rows are in cache
        for kp in range(q.KP):
            k0 = 2 * kp * L
            _sweep(y + (n0 + nn) * ystride + (gi * g.Kg + k0) * g.P + od * g.OH * g.OW,
                   _min(2 * L, g.Kg - k0), oh0, _min(R0 + NR, oh0 + RB), R0 * g.SH, xsl,
                   xs, splane, wb + (gi * q.KB + 2 * kp) * q.wblk,
                   b + gi * g.Kg + k0 if b != NULL else NULL, toff, g, q)


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """y[n] = conv(x[n], w) + b for every sample, channel-blocked direct loops.

    x (N, C_img * D*H*W), w (C_col, Cg * KK), b (C_col,) or empty, y (N, C_col * P).
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
        room = (ws_bytes // (g.G * q.CB * L * elem) - CY_UR) // q.inner   # slab rows
        OC = _max(1, _min(OO, (room - slab_rows(&g, &q, 1)) // So + 1))
    cdef Py_ssize_t rows = slab_rows(&g, &q, OC)
    cdef Py_ssize_t splane = slab_plane(&g, &q, OC)
    cdef Py_ssize_t simg = q.CB * splane                   # one (sample, group) slab
    cdef Py_ssize_t o0, oc, PC, R0, NR, RB, NRB
    cdef Py_ssize_t nw = g.G * q.KB * q.wblk
    cdef floating* wb = _alloc(nw, <floating> 0)
    cdef floating* xb = NULL
    cdef Py_ssize_t* toff = <Py_ssize_t*> malloc(g.KK * sizeof(Py_ssize_t))
    cdef Py_ssize_t gi, k, c, t, kd, kh, kw, n0, nc
    cdef Py_ssize_t xs = (1 if q.wide else g.SW) * L
    if toff == NULL:
        free(wb)
        raise MemoryError("cyconv: could not allocate the tap offsets")
    try:
        xb = _alloc(NC * g.G * simg, <floating> 0)
        memset(wb, 0, nw * sizeof(floating))
        for gi in range(g.G):
            for k in range(g.Kg):
                for c in range(g.Cg):
                    for t in range(g.KK):
                        wb[(((gi * q.KB + k // L) * q.CB + c // L) * g.KK + t) * L * L
                           + (c % L) * L + k % L] = w[gi * g.Kg + k, c * g.KK + t]
        for t in range(g.KK):
            kw = t % g.KW
            kh = (t // g.KW) % g.KH
            kd = t // (g.KW * g.KH)
            toff[t] = ((kd * g.DD * q.Hp + kh * g.DH) * q.Wp + kw * g.DW) * L
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
                with nogil:
                    _run_chunk(&x[0, 0], x.shape[1], &y[0, 0], y.shape[1],
                               &b[0] if has_bias else NULL, wb, xb, toff, n0, nc, o0, PC,
                               R0, NR, RB, NRB, rows, splane, simg, xs, n_threads, &g, &q)
    finally:
        free(xb)
        free(wb)
        free(toff)
