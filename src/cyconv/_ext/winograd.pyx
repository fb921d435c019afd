"""Winograd convolution for dense 3-tap, unit-stride, undilated layers (``"winograd"``).

F(4x4,3x3) (``winograd_f4``) and F(2x2,3x3) (``winograd_f2``) minimal filtering
(Lavin & Gray, arXiv:1509.09308; the transforms are in ``_winograd.h``), fused per
block of tiles as in Jia et al. (PPoPP 2018):

* the weights are transformed once per call, in double, into ``U[p][r][k]`` (position
  p of the A x A tile, reduction row r = kd * Cp + c, output channel k; channels padded
  with zeros to whole vectors Cp, Kp);
* the input is copied channels-last into a slab ``xs[n][d][h][w][Cp]`` (whole samples
  while they fit the workspace limit, else the rows one band of tile rows reads), the
  copy also checking for NaN and Inf;
* a work item is a block of T tiles (consecutive in (sample, depth, tile row, tile
  column) order, so small planes still make full blocks): its tiles are gathered from
  the slab and transformed L channels at a time into the thread's
  ``V[p][t][r]``, multiplied by one GEMM per position (``M[p] = V[p] U[p]``, T x Kp;
  ``cy_wgemm`` in ``_winograd.h``, a 6 x 2L register-blocked kernel reading U as packed
  once per call, where a BLAS call would repack it every time), and transformed back
  into the output while ``M`` is in cache.

3-D layers (3x3x3) sum their depth taps inside the GEMM: the reduction runs over
(depth tap, channel), the rows of depth tap kd gathered from input plane od + kd - pad.
1-D layers use the same code with tiles of one row (no transform along the height).

NumPy equivalent of one 2-D forward call (before the fusion)::

    U = G @ w @ G.T                      # (K, C, A, A)
    V = BT @ tiles(pad(x)) @ BT.T        # (N, C, TH, TW, A, A), tiles overlapping by 2
    M = einsum('kcij,ncabij->nkabij', U, V)
    y = AT @ M @ AT.T                    # (N, K, TH, TW, M, M) -> crop to (OH, OW)

Every output is computed by one thread in an order fixed by the layer (each GEMM sums
over r in order, whatever the block size): results are bit-identical for any thread
count and any workspace limit.  A NaN or Inf in the weights or the input makes
:func:`conv_forward` return False before any output is written for that slab: the
transforms would spread it over whole tiles, so the caller runs its ``nonfinite`` plan.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom
from cyconv._ext._finite cimport all_finite_n


cdef extern from "_winograd.h" nogil:
    void cy_prefetchw(const void* p)
    void cy_win_in_f(int A, int AH, const float* src, Py_ssize_t rs, Py_ssize_t ps,
                     Py_ssize_t hoff, Py_ssize_t woff, int r0, int r1, int c0, int c1,
                     float* out, Py_ssize_t vs)
    void cy_win_in_d(int A, int AH, const double* src, Py_ssize_t rs, Py_ssize_t ps,
                     Py_ssize_t hoff, Py_ssize_t woff, int r0, int r1, int c0, int c1,
                     double* out, Py_ssize_t vs)
    void cy_win_out_f(int A, int AH, const float* m, Py_ssize_t ms, float* y, Py_ssize_t ks,
                      Py_ssize_t ys, int nr, int nc, int nk, const float* bias)
    void cy_win_out_d(int A, int AH, const double* m, Py_ssize_t ms, double* y,
                      Py_ssize_t ks, Py_ssize_t ys, int nr, int nc, int nk,
                      const double* bias)
    int cy_win_pack_f(const float* src, Py_ssize_t cs, int n, Py_ssize_t W, float* dst,
                      Py_ssize_t ds)
    int cy_win_pack_d(const double* src, Py_ssize_t cs, int n, Py_ssize_t W, double* dst,
                      Py_ssize_t ds)
    void cy_wgemm_f(Py_ssize_t nt, Py_ssize_t Kp, Py_ssize_t R, const float* v, Py_ssize_t vt,
                    const float* u, float* m, Py_ssize_t mt)
    void cy_wgemm_d(Py_ssize_t nt, Py_ssize_t Kp, Py_ssize_t R, const double* v,
                    Py_ssize_t vt, const double* u, double* m, Py_ssize_t mt)


#: tiles per block: at least (unless the workspace limit is tight) and at most
cdef Py_ssize_t T_LOW = 12
cdef Py_ssize_t T_MAX = 64
#: the fewest a tight workspace limit may cut a block down to
cdef Py_ssize_t T_MIN = 4


cdef struct Wino:
    int A, MO, AH, MH            # tile inputs / outputs per axis; along the height (1: 1-D)
    Py_ssize_t P                 # positions per tile: AH * A
    Py_ssize_t L, Cp, Kp, Cr     # lanes, padded channels, reduction rows KD * Cp
    Py_ssize_t TH, TW            # tiles per plane
    Py_ssize_t T                 # tiles per block
    Py_ssize_t NC                # samples per chunk (0: bands of tile rows)
    Py_ssize_t BR                # tile rows per band (band chunks)


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef Wino _shape(const Geom* g, int tile, Py_ssize_t itemsize) noexcept:
    """Tile sizes and padded channel counts (the block and chunk sizes are set later)."""
    cdef Wino q
    q.MO = tile
    q.A = tile + 2
    q.AH = q.A if g.KH == 3 else 1
    q.MH = q.MO if g.KH == 3 else 1
    q.P = q.AH * q.A
    q.L = 32 // itemsize
    q.Cp = _cdiv(g.C_img, q.L) * q.L
    q.Kp = _cdiv(g.C_col, q.L) * q.L
    q.Cr = g.KD * q.Cp
    q.TH = _cdiv(g.OH, q.MH)
    q.TW = _cdiv(g.OW, q.MO)
    q.T, q.NC, q.BR = 0, 0, 0
    return q


cdef inline Py_ssize_t _band_rows(const Geom* g, const Wino* q, Py_ssize_t br) noexcept:
    """Input rows (at most) that br tile rows read."""
    return _min(g.H, (br - 1) * q.MH + q.AH)


cdef Py_ssize_t _layout(Wino* q, const Geom* g, Py_ssize_t N, Py_ssize_t itemsize,
                        Py_ssize_t n_threads, Py_ssize_t limit) noexcept:
    """Choose the block size T and the chunks; return the workspace bytes (transformed
    weights + every thread's V and M + the slab), or -1 when even the smallest layout
    (T_MIN tiles, one tile row of input) exceeds ``limit``."""
    cdef Py_ssize_t u = q.P * q.Cr * q.Kp, per_tile = q.P * (q.Cr + q.Kp)
    cdef Py_ssize_t tiles = N * g.OD * q.TH * q.TW
    cdef Py_ssize_t nt = _max(1, n_threads), T, room, sample, row
    cdef Py_ssize_t small = g.KD * _band_rows(g, q, 1) * g.W * q.Cp
    # Each block streams all of U through the cache once: T grows with the channels so
    # that U's traffic stays small against the block's multiplies (T / 2 per U element),
    # while a block of few channels stays in L2 (ResNet 3x3 at 1 thread: 256 channels ran
    # 100 GFLOP/s with 64-tile blocks and 60 with 16; 128 channels best at 16; 64 flat).
    T = _min(T_MAX, _max(T_LOW, q.Cr * q.Kp // 1024))
    # at least two blocks (not counting threads: T, and so the result, does not depend
    # on the thread count)
    T = _max(T_MIN, _min(T, _cdiv(tiles, 2)))
    while T > T_MIN and (u + nt * T * per_tile + small) * itemsize > limit:
        T = _max(T_MIN, T // 2)
    if (u + nt * T * per_tile + small) * itemsize > limit:
        return -1
    q.T = T
    room = limit // itemsize - u - nt * T * per_tile
    sample = g.D * g.H * g.W * q.Cp
    if sample <= room:
        q.NC = _max(1, _min(N, room // _max(1, sample)))
        return (u + nt * T * per_tile + q.NC * sample) * itemsize
    q.NC = 0
    row = g.KD * g.W * q.Cp                                 # one input row of the slab
    q.BR = 1
    while q.BR < q.TH and _band_rows(g, q, 2 * q.BR) * row <= room:
        q.BR = 2 * q.BR
    q.BR = _min(q.BR, q.TH)
    return (u + nt * T * per_tile + _band_rows(g, q, q.BR) * row) * itemsize


def workspace_bytes(tuple geom, Py_ssize_t N, Py_ssize_t itemsize, Py_ssize_t n_threads,
                    Py_ssize_t limit, int tile):
    """Scratch bytes of one call (an upper bound: transformed weights, per-thread tile
    buffers and the input slab), or -1 when the layer cannot run within ``limit``."""
    cdef Geom g = make_geom(geom)
    cdef Wino q = _shape(&g, tile, itemsize)
    return _layout(&q, &g, N, itemsize, n_threads, limit)


# -- weights --------------------------------------------------------------------------------

cdef double G4[18]
cdef double G2[12]
G4[:] = [0.25, 0.0, 0.0,  -1.0 / 6, -1.0 / 6, -1.0 / 6,  -1.0 / 6, 1.0 / 6, -1.0 / 6,
         1.0 / 24, 1.0 / 12, 1.0 / 6,  1.0 / 24, -1.0 / 12, 1.0 / 6,  0.0, 0.0, 1.0]
G2[:] = [1.0, 0.0, 0.0,  0.5, 0.5, 0.5,  0.5, -0.5, 0.5,  0.0, 0.0, 1.0]


cdef inline Py_ssize_t _u_index(Py_ssize_t p, Py_ssize_t r, Py_ssize_t k,
                                const Wino* q) noexcept nogil:
    """Where U[p][r][k] lives: per position, panels of 2L output channels (the last one
    L wide when Kp is an odd number of vectors), each row-major (r, k) (see cy_wgemm)."""
    cdef Py_ssize_t j = k // (2 * q.L)
    return p * q.Cr * q.Kp + j * 2 * q.L * q.Cr + r * _min(2 * q.L, q.Kp - j * 2 * q.L) \
        + k - j * 2 * q.L


cdef Py_ssize_t _transform_channel(const floating* w, floating* U, Py_ssize_t c,
                                   bint flip, double* buf, const Geom* g,
                                   const Wino* q) noexcept nogil:
    """U[.][kd*Cp + c][.] for one input channel c (see _transform_weights), the loops
    over output channels innermost (so they vectorise); buf holds (9 + 3A + A) * Kp
    doubles.  Returns the count of non-finite weights read."""
    cdef const double* G = &G4[0] if q.A == 6 else &G2[0]
    cdef Py_ssize_t k, kd, i, j, a, b, t, KK = g.KK, Kp = q.Kp, K = g.C_col, L2 = 2 * q.L
    cdef Py_ssize_t bad = 0, pw, base, kk
    cdef double* gk = buf                      # gk[i*3 + j][k]: the 3x3 kernel of (k, c)
    cdef double* tmp = buf + 9 * Kp            # tmp[a*3 + j][k] = (G gk)[a][j]
    cdef double* u = tmp + 3 * q.A * Kp        # u[b][k] = (G gk G^T)[a][b], one row a
    cdef double v, g0, g1, g2
    for kd in range(g.KD):
        for i in range(9 * Kp):
            gk[i] = 0
        for k in range(K if c < g.C_img else 0):   # padded channels: rows of zeros
            for i in range(3):
                if g.KH == 1 and i != 1:        # 1-D: the kernel is the middle row
                    continue
                for j in range(3):
                    t = (kd * g.KH + (i if g.KH == 3 else 0)) * g.KW + j
                    if flip:
                        v = w[(c * K + k) * KK + KK - 1 - t]
                    else:
                        v = w[(k * g.C_img + c) * KK + t]
                    gk[(i * 3 + j) * Kp + k] = v
                    bad += v - v != 0
        for a in range(q.A):
            g0, g1, g2 = G[3 * a], G[3 * a + 1], G[3 * a + 2]
            for j in range(3):
                for k in range(Kp):
                    tmp[(a * 3 + j) * Kp + k] = (g0 * gk[j * Kp + k] + g1 * gk[(3 + j) * Kp + k]
                                                 + g2 * gk[(6 + j) * Kp + k])
        for a in range(q.AH):
            for b in range(q.A):
                g0, g1, g2 = G[3 * b], G[3 * b + 1], G[3 * b + 2]
                if q.AH == 1:                   # 1-D: G times the middle kernel row
                    for k in range(Kp):
                        u[k] = g0 * gk[3 * Kp + k] + g1 * gk[4 * Kp + k] + g2 * gk[5 * Kp + k]
                else:
                    for k in range(Kp):
                        u[k] = (tmp[(a * 3) * Kp + k] * g0 + tmp[(a * 3 + 1) * Kp + k] * g1
                                + tmp[(a * 3 + 2) * Kp + k] * g2)
                # row kd*Cp + c of position a*A + b, panel by panel (see _u_index)
                for j in range(_cdiv(Kp, L2)):
                    pw = _min(L2, Kp - j * L2)
                    base = ((a * q.A + b) * q.Cr * Kp + j * L2 * q.Cr
                            + (kd * q.Cp + c) * pw - j * L2)
                    for kk in range(j * L2, j * L2 + pw):
                        U[base + kk] = <floating> u[kk]
                    # the next channel's row of this panel: fetched while this one is
                    # computed (U is written once, row by row, in 36 * Kp / 2L streams)
                    cy_prefetchw(U + base + j * L2 + pw)
    return bad


cdef int _transform_weights(const floating* w, floating* U, bint flip, Py_ssize_t n_threads,
                            const Geom* g, const Wino* q) noexcept nogil:
    """U[p][kd*Cp + c][k] = (G w[k, c, kd] G^T)[p] (stored by _u_index), computed in
    double; zero for padded channels.  flip: w is the (C_img, C_col * KK) weight of the
    convolution whose input gradient this is, read as w'[k, c, t] = w[c, k, KK - 1 - t].
    Returns whether every weight is finite, or -1 if out of memory."""
    cdef Py_ssize_t c, bad = 0
    cdef Py_ssize_t per = (9 + 3 * q.A + q.A) * q.Kp
    cdef double* bufs = <double*> malloc(_max(1, n_threads) * per * sizeof(double))
    cdef double* buf
    if bufs == NULL:
        return -1
    with parallel(num_threads=n_threads if g.C_img > 1 else 1):
        buf = bufs + threadid() * per
        for c in prange(q.Cp, schedule="static"):
            bad += _transform_channel(w, U, c, flip, buf, g, q)
    free(bufs)
    return bad == 0


# -- input slab -----------------------------------------------------------------------------

cdef bint _pack_row(const floating* src, Py_ssize_t cs, floating* dst, Py_ssize_t C,
                    Py_ssize_t W, const Wino* q) noexcept nogil:
    """dst[w * Cp + c] = src[c * cs + w] (one input row, channels last, zeros for the
    padded channels); returns whether every copied value is finite."""
    cdef Py_ssize_t cb, L = q.L
    cdef int bad = 0
    for cb in range(0, q.Cp // L):
        cb = cb * L
        if floating is float:
            bad |= cy_win_pack_f(src + cb * cs, cs, <int> _min(L, C - cb), W, dst + cb, q.Cp)
        else:
            bad |= cy_win_pack_d(src + cb * cs, cs, <int> _min(L, C - cb), W, dst + cb, q.Cp)
    return bad == 0


cdef struct Chunk:
    Py_ssize_t n0, nc            # samples
    Py_ssize_t od0, nod          # output depth planes
    Py_ssize_t tr0, ntr          # tile rows
    Py_ssize_t dlo, nd, hlo, nh  # input planes and rows held by the slab


cdef bint _pack(const floating* x, Py_ssize_t xstride, floating* xs, const Chunk* ch,
                Py_ssize_t n_threads, const Geom* g, const Wino* q) noexcept nogil:
    """The chunk's slab xs[nn][dd][hh][w][Cp]; False if it holds NaN or Inf."""
    cdef Py_ssize_t it, nn, dd, hh, bad = 0
    cdef Py_ssize_t rows = ch.nc * ch.nd * ch.nh
    for it in prange(rows, num_threads=n_threads if rows > 1 else 1, schedule="static"):
        hh = it % ch.nh
        dd = (it // ch.nh) % ch.nd
        nn = it // (ch.nh * ch.nd)
        bad += not _pack_row(x + (ch.n0 + nn) * xstride + ((ch.dlo + dd) * g.H + ch.hlo + hh) * g.W,
                             g.D * g.H * g.W, xs + it * g.W * q.Cp, g.C_img, g.W, q)
    return bad == 0


# -- one block of tiles ---------------------------------------------------------------------

cdef void _block(const floating* xs, floating* y, Py_ssize_t ystride, const floating* U,
                 const floating* bias, floating* V, floating* M, Py_ssize_t t0,
                 Py_ssize_t nt, const Chunk* ch, const Geom* g, const Wino* q) noexcept nogil:
    """Tiles t0 .. t0 + nt of the chunk: gather + transform, GEMMs, inverse transform."""
    cdef Py_ssize_t t, tw, th, od, nn, kd, d, hoff, woff, c, k, p, L = q.L
    cdef Py_ssize_t ih0, iw0, oh0, ow0, vs = q.T * q.Cr, ms = q.T * q.Kp
    cdef Py_ssize_t rs = g.W * q.Cp, plane
    cdef int r0, r1, c0, c1
    cdef const floating* sp
    for t in range(nt):
        tw = (t0 + t) % q.TW
        th = ch.tr0 + (t0 + t) // q.TW % ch.ntr
        od = ch.od0 + (t0 + t) // (q.TW * ch.ntr) % ch.nod
        nn = (t0 + t) // (q.TW * ch.ntr * ch.nod)
        ih0 = th * q.MH - g.PH
        iw0 = tw * q.MO - g.PW
        r0 = <int> _max(0, ch.hlo - ih0)
        r1 = <int> _min(q.AH, ch.hlo + ch.nh - ih0)
        c0 = <int> _max(0, -iw0)
        c1 = <int> _min(q.A, g.W - iw0)
        for kd in range(g.KD):
            d = od + kd - g.PD
            if d < ch.dlo or d >= ch.dlo + ch.nd or r0 >= r1 or c0 >= c1:
                for p in range(q.P):
                    memset(V + p * vs + t * q.Cr + kd * q.Cp, 0, q.Cp * sizeof(floating))
                continue
            sp = xs + (nn * ch.nd + d - ch.dlo) * ch.nh * rs
            for c in range(0, q.Cp // L):
                c = c * L
                if floating is float:
                    cy_win_in_f(q.A, q.AH, sp + c, rs, q.Cp, ih0 - ch.hlo, iw0, r0, r1, c0,
                                c1, V + t * q.Cr + kd * q.Cp + c, vs)
                else:
                    cy_win_in_d(q.A, q.AH, sp + c, rs, q.Cp, ih0 - ch.hlo, iw0, r0, r1, c0,
                                c1, V + t * q.Cr + kd * q.Cp + c, vs)
    for p in range(q.P):
        if floating is float:
            cy_wgemm_f(nt, q.Kp, q.Cr, V + p * vs, q.Cr, U + p * q.Cr * q.Kp, M + p * ms, q.Kp)
        else:
            cy_wgemm_d(nt, q.Kp, q.Cr, V + p * vs, q.Cr, U + p * q.Cr * q.Kp, M + p * ms, q.Kp)
    plane = g.OH * g.OW
    for t in range(nt):
        tw = (t0 + t) % q.TW
        th = ch.tr0 + (t0 + t) // q.TW % ch.ntr
        od = ch.od0 + (t0 + t) // (q.TW * ch.ntr) % ch.nod
        nn = (t0 + t) // (q.TW * ch.ntr * ch.nod)
        oh0 = th * q.MH
        ow0 = tw * q.MO
        for k in range(0, _cdiv(g.C_col, L)):
            k = k * L
            if floating is float:
                cy_win_out_f(q.A, q.AH, M + t * q.Kp + k, ms,
                             y + (ch.n0 + nn) * ystride + k * g.OD * plane + od * plane
                             + oh0 * g.OW + ow0, g.OD * plane, g.OW,
                             <int> _min(q.MH, g.OH - oh0), <int> _min(q.MO, g.OW - ow0),
                             <int> _min(L, g.C_col - k), bias + k if bias != NULL else NULL)
            else:
                cy_win_out_d(q.A, q.AH, M + t * q.Kp + k, ms,
                             y + (ch.n0 + nn) * ystride + k * g.OD * plane + od * plane
                             + oh0 * g.OW + ow0, g.OD * plane, g.OW,
                             <int> _min(q.MH, g.OH - oh0), <int> _min(q.MO, g.OW - ow0),
                             <int> _min(L, g.C_col - k), bias + k if bias != NULL else NULL)


cdef void _run_chunk(const floating* xs, floating* y, Py_ssize_t ystride, const floating* U,
                     const floating* bias, floating* scratch, const Chunk* ch,
                     Py_ssize_t n_threads, const Geom* g, const Wino* q) noexcept nogil:
    """Every block of tiles of the chunk, handed out dynamically to the threads."""
    cdef Py_ssize_t tiles = ch.nc * ch.nod * ch.ntr * q.TW
    cdef Py_ssize_t nb = _cdiv(tiles, q.T), per = q.T * q.P * (q.Cr + q.Kp), blk
    cdef floating* V
    with parallel(num_threads=n_threads if nb > 1 else 1):
        V = scratch + threadid() * per
        for blk in prange(nb, schedule="dynamic"):
            _block(xs, y, ystride, U, bias, V, V + q.T * q.P * q.Cr, blk * q.T,
                   _min(q.T, tiles - blk * q.T), ch, g, q)


cdef floating* _alloc(Py_ssize_t n, floating dummy) except NULL:
    cdef floating* p = <floating*> malloc(_max(1, n) * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"cyconv: could not allocate {n * sizeof(floating)} bytes of "
                          f"Winograd workspace")
    return p


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes,
                 int tile=4, bint flip=False):
    """y[n] = conv(x[n], w) + b by Winograd F(tile x tile, 3x3); True on success.

    x (N, C_img * D*H*W), w (C_col, C_img * KK), b (C_col,) or empty, y (N, C_col * P);
    G = 1, 3 taps along the width (and the height and depth where they are not 1),
    unit stride and dilation, any padding (even negative).  With flip, w is the
    (C_img, C_col * KK) weight of the convolution whose input gradient this is.
    Returns False, with y partly written, when the weights or the input hold NaN or Inf.
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Wino q = _shape(&g, tile, itemsize)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t total = _layout(&q, &g, N, itemsize, n_threads, ws_bytes)
    cdef Py_ssize_t nt = _max(1, n_threads), nU = q.P * q.Cr * q.Kp
    cdef Py_ssize_t per = q.T * q.P * (q.Cr + q.Kp), slab
    cdef floating* U = NULL
    cdef floating* scratch = NULL
    cdef floating* xs = NULL
    cdef const floating* bias = &b[0] if b.shape[0] > 0 else NULL
    cdef Chunk ch
    cdef bint ok = True
    cdef int wt
    if total < 0:
        raise ValueError("cyconv: the workspace limit is too small for this Winograd layer")
    if N == 0:
        return True
    slab = (q.NC * g.D * g.H * g.W * q.Cp if q.NC
            else g.KD * _band_rows(&g, &q, q.BR) * g.W * q.Cp)
    try:
        U = _alloc(nU, <floating> 0)
        scratch = _alloc(nt * per, <floating> 0)
        xs = _alloc(slab, <floating> 0)
        with nogil:
            wt = _transform_weights(&w[0, 0], U, flip, n_threads, &g, &q)
        if wt < 0:
            raise MemoryError("cyconv: could not allocate the Winograd weight buffers")
        ok = wt == 1
        with nogil:
            if q.NC:
                ch.od0, ch.nod, ch.tr0, ch.ntr = 0, g.OD, 0, q.TH
                ch.dlo, ch.nd, ch.hlo, ch.nh = 0, g.D, 0, g.H
                ch.n0 = 0
                while ok and ch.n0 < N:
                    ch.nc = _min(q.NC, N - ch.n0)
                    ok = _pack(&x[0, 0], x.shape[1], xs, &ch, n_threads, &g, &q)
                    if ok:
                        _run_chunk(xs, &y[0, 0], y.shape[1], U, bias, scratch, &ch,
                                   n_threads, &g, &q)
                    ch.n0 = ch.n0 + ch.nc
            else:
                ok = _run_bands(&x[0, 0], x.shape[1], xs, &y[0, 0], y.shape[1], U, bias,
                                scratch, N, n_threads, &g, &q) if ok else False
    finally:
        free(U)
        free(scratch)
        free(xs)
    return ok


cdef bint _run_bands(const floating* x, Py_ssize_t xstride, floating* xs, floating* y,
                     Py_ssize_t ystride, const floating* U, const floating* bias,
                     floating* scratch, Py_ssize_t N, Py_ssize_t n_threads, const Geom* g,
                     const Wino* q) noexcept nogil:
    """Samples too large for the workspace: one output depth plane and q.BR tile rows at
    a time, the slab holding the input rows (of every depth tap) they read."""
    cdef Chunk ch
    cdef Py_ssize_t n, od, tr, d0, d1, h0, h1
    ch.nc, ch.nod = 1, 1
    for n in range(N):
        for od in range(g.OD):
            for tr in range(0, _cdiv(q.TH, q.BR)):
                tr = tr * q.BR
                ch.n0, ch.od0, ch.tr0, ch.ntr = n, od, tr, _min(q.BR, q.TH - tr)
                d0 = _max(0, od - g.PD)
                d1 = _min(g.D, od - g.PD + g.KD)
                h0 = _max(0, tr * q.MH - g.PH)
                h1 = _min(g.H, (tr + ch.ntr - 1) * q.MH - g.PH + q.AH)
                ch.dlo, ch.nd = d0, _max(0, d1 - d0)
                ch.hlo, ch.nh = h0, _max(0, h1 - h0)
                if ch.nd > 0 and ch.nh > 0:
                    if not _pack(x, xstride, xs, &ch, n_threads, g, q):
                        return False
                _run_chunk(xs, y, ystride, U, bias, scratch, &ch, n_threads, g, q)
    return True
