"""im2col + GEMM convolution kernels: forward, input gradient, weight gradient.

All three share the column matrix of one (sample, group): ``col[(c, kd, kh, kw), p]`` is
the image value under kernel tap (kd, kh, kw) of channel c for output pixel p (zero in the
padding), so that

* forward:          y[n, g]  = W[g] @ col(x[n, g])                (Kg x P)
* input gradient:   gx[n, g] = col2im(W[g]^T @ gy[n, g])          (the transposed conv)
* weight gradient:  gW[g]   += gy[n, g] @ col(x[n, g])^T          (Kg x CKK)

GEMMs come from SciPy's BLAS (``_blas.gemm_rm``), called single-threaded inside OpenMP
``prange`` loops; every array argument is C-contiguous and already checked by
``cyconv._params``/``cyconv._cpu``.

Notes
-----
Rows of width stride 1 are memcpy'd (scatter: added in one vectorised loop); rows of
width stride 2 go through ``gather2``/``scatter2`` (``_simd.h``: two vectors and a lane
shuffle per vector of the row), which took 22-23% off the ResNet stem's forward and
weight gradient; larger width strides copy element by element.

A 1-D forward with unit stride and 2 taps (WaveNet's causal layers) builds no column
matrix: tap t's rows of it are x itself shifted by t*DW - PW, so it runs one GEMM per tap
straight on views of x (``_tap_gemms``, unless a weight is NaN or Inf), 0.92 of the
im2col time for WaveNet's 64-channel layer (3-5 taps measured 0.95-1.04: left to im2col).

Work is chunked so that scratch memory stays under ``ws_bytes``, and so that each output
element is always the same sum in the same order whatever the chunking; the only
chunk-dependence left is the BLAS's own (OpenBLAS picks other micro-kernels, e.g. its
small-matrix kernels, for other GEMM shapes), so a tiny workspace agrees to rounding:

* forward chunks the output pixels, i.e. the N dimension of the GEMM: every output
  element is still one dot product of length CKK;
* the input gradient cuts long images into pixel tiles of a size that depends on the
  shape only, chunks the rows of the column matrix inside whole channels, and scatters
  tile by tile, rows in order, so each image element receives its contributions in the
  same (tile, row, pixel) order whatever the chunk size; threads own disjoint channel
  blocks; small images (one tile) run up to BATCH_PIXELS pixels of several samples per
  GEMM, so the weight matrix is packed once per batch (the DCGAN 8x8 transposed layer:
  0.89-0.91 of the per-sample time);
* the weight gradient tiles the pixels (the GEMM's K dimension) by a size that depends
  on the shape only, chunks the CKK rows for the workspace (and among the threads when
  there are fewer pixel tiles than threads), and reduces the per-thread partial sums in
  thread order: bit-identical run to run for a given thread count.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy

from cyconv._ext._types cimport floating
from cyconv._ext._blas cimport gemm_rm
from cyconv._ext._geom cimport Geom, make_geom, valid_range

cdef extern from "_simd.h" nogil:
    void cy_gather2_f(float* dst, const float* src, Py_ssize_t n)
    void cy_gather2_d(double* dst, const double* src, Py_ssize_t n)
    void cy_scatter2_f(float* dst, const float* src, Py_ssize_t n)
    void cy_scatter2_d(double* dst, const double* src, Py_ssize_t n)


cdef inline void gather2(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[j] = src[2*j] for j in [0, n) (see _simd.h)."""
    if floating is float:
        cy_gather2_f(dst, src, n)
    else:
        cy_gather2_d(dst, src, n)


cdef inline void scatter2(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[2*j] += src[j] for j in [0, n) (see _simd.h)."""
    if floating is float:
        cy_scatter2_f(dst, src, n)
    else:
        cy_scatter2_d(dst, src, n)


cdef enum:
    # pixels per weight-gradient GEMM (its K dimension): a constant, so results never
    # depend on the workspace or the thread count's effect on chunking
    WGRAD_TILE = 1024
    # fewest pixels per forward chunk worth a GEMM call, unless the workspace forbids it
    MIN_TILE = 64
    # pixels per input-gradient GEMM that small images are batched up to (several
    # samples side by side), so the weight matrix is packed once per batch, not per sample
    BATCH_PIXELS = 512
    # fewest pixels per forward GEMM with a column matrix: small planes batch samples up
    # to it, long reductions chunk their column rows rather than narrow the pixel tile
    SPAN = 256


# Bytes of column matrix one GEMM call works on: big enough for BLAS to run at full
# speed, small enough to stay in the cache between im2col and the GEMM.
cdef Py_ssize_t _TILE_BYTES = 2 * 1024 * 1024


# Most taps a 1-D forward runs as one GEMM per tap on views of x (_taps_as_gemms).
#: conv_forward's paths (the planner, cyconv._plan, picks one: im2col, im2col_pointwise,
#: im2col_taps).
PATH_COLUMNS = 0
PATH_POINTWISE = 1
PATH_TAPS = 2


def set_tile_bytes(Py_ssize_t n):
    """Tuning hook: the column-chunk size target (results do not depend on it)."""
    global _TILE_BYTES
    _TILE_BYTES = n


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef void im2col_nd(const floating* x, floating* col, const Geom* g, Py_ssize_t r0,
                    Py_ssize_t r1, Py_ssize_t p0, Py_ssize_t p1,
                    Py_ssize_t ld) noexcept nogil:
    """Rows r0..r1, columns p0..p1 of one group's column matrix.

    x is the group's image (Cg, D, H, W); col is (r1 - r0, p1 - p0), rows ld apart.
    NumPy: ``col[r - r0, p - p0] = xpad[c, od*SD + kd*DD, oh*SH + kh*DH, ow*SW + kw*DW]``
    with (c, kd, kh, kw) = unravel(r) and (od, oh, ow) = unravel(p).
    """
    cdef Py_ssize_t OHW = g.OH * g.OW
    cdef Py_ssize_t r, c, kd, kh, kw, t, p, od, oh, ow, seg, idd, ih, iw0, lo, hi, j
    cdef const floating* row
    cdef floating* dst
    for r in range(r0, r1):
        kw = r % g.KW
        t = r // g.KW
        kh = t % g.KH
        t = t // g.KH
        kd = t % g.KD
        c = t // g.KD
        dst = col + (r - r0) * ld
        od = p0 // OHW
        t = p0 - od * OHW
        oh = t // g.OW
        ow = t - oh * g.OW
        p = p0
        while p < p1:
            seg = _min(g.OW - ow, p1 - p)
            idd = od * g.SD - g.PD + kd * g.DD
            ih = oh * g.SH - g.PH + kh * g.DH
            if idd < 0 or idd >= g.D or ih < 0 or ih >= g.H:
                memset(dst, 0, seg * sizeof(floating))
            else:
                row = x + ((c * g.D + idd) * g.H + ih) * g.W
                iw0 = ow * g.SW - g.PW + kw * g.DW
                valid_range(iw0, g.SW, g.W, seg, &lo, &hi)
                for j in range(lo):
                    dst[j] = 0
                if g.SW == 1:
                    memcpy(dst + lo, row + iw0 + lo, (hi - lo) * sizeof(floating))
                elif g.SW == 2:
                    gather2(dst + lo, row + iw0 + 2 * lo, hi - lo)
                else:
                    for j in range(lo, hi):
                        dst[j] = row[iw0 + j * g.SW]
                for j in range(hi, seg):
                    dst[j] = 0
            dst += seg
            p += seg
            ow += seg
            if ow == g.OW:
                ow = 0
                oh += 1
                if oh == g.OH:
                    oh = 0
                    od += 1


cdef void col2im_nd(const floating* col, Py_ssize_t ld, floating* x, const Geom* g,
                    Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Scatter-add rows r0..r1, columns (pixels) p0..p1, of a column matrix into the
    image x; col holds those rows, ld apart, pixel p0 first.

    The adjoint of ``im2col_nd``: ``x[c, i(p, k)] += col[r, p]`` for every in-image
    position, rows in order, pixels in order.
    """
    cdef Py_ssize_t r, c, kd, kh, kw, t, q, od, oh, idd, ih, iw0, lo, hi, j, jlo, jhi, base
    cdef const floating* src
    cdef floating* row
    for r in range(r0, r1):
        kw = r % g.KW
        t = r // g.KW
        kh = t % g.KH
        t = t // g.KH
        kd = t % g.KD
        c = t // g.KD
        src = col + (r - r0) * ld - p0                 # src[p] for p in [p0, p1)
        iw0 = kw * g.DW - g.PW
        valid_range(iw0, g.SW, g.W, g.OW, &lo, &hi)
        for q in range(p0 // g.OW, (p1 - 1) // g.OW + 1):  # output rows (od, oh) met
            od = q // g.OH
            oh = q - od * g.OH
            idd = od * g.SD - g.PD + kd * g.DD
            ih = oh * g.SH - g.PH + kh * g.DH
            if idd < 0 or idd >= g.D or ih < 0 or ih >= g.H:
                continue
            base = q * g.OW
            jlo = _max(lo, p0 - base)
            jhi = _min(hi, p1 - base)
            row = x + ((c * g.D + idd) * g.H + ih) * g.W + iw0
            if g.SW == 1:
                for j in range(jlo, jhi):
                    row[j] += src[base + j]
            elif g.SW == 2:
                if jhi > jlo:
                    scatter2(row + 2 * jlo, src + base + jlo, jhi - jlo)
            else:
                for j in range(jlo, jhi):
                    row[j * g.SW] += src[base + j]


cdef bint _is_pointwise(const Geom* g) noexcept nogil:
    """1x1 kernel, stride 1, no padding: the image *is* the column matrix."""
    return (g.KK == 1 and g.SD == 1 and g.SH == 1 and g.SW == 1 and g.PD == 0 and g.PH == 0
            and g.PW == 0 and g.OD == g.D and g.OH == g.H and g.OW == g.W)


cdef bint _taps_as_gemms(const Geom* g) noexcept nogil:
    """A 1-D convolution with unit stride and 2 or more taps: tap t's column matrix is x
    itself, shifted by t*DW - PW (a strided view, leading dimension W), so the forward
    needs no column matrix: one GEMM per tap on views of x (_tap_gemms)."""
    return (g.D == 1 and g.H == 1 and g.OD == 1 and g.OH == 1 and g.KD == 1 and g.KH == 1
            and g.PD == 0 and g.PH == 0 and g.SW == 1 and g.KK >= 2)


cdef void _tap_gemms(const floating* xg, const floating* wt, Py_ssize_t wts, floating* yg,
                     const Geom* g, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """y[k, p] = sum_t (W_t @ x[:, p + t*DW - PW])[k] for the columns p in [p0, p1) of one
    (sample, group), taps in order, W_t = wt + t * wts (Kg x Cg, row-major).

    A tap's columns that read padding are left out of its GEMM (their terms are zeros:
    the caller has checked that every weight is finite); columns the first tap leaves
    out are zeroed first.  Each output element is the same sum in the same tap order
    however the columns are chunked."""
    cdef Py_ssize_t t, lo, hi, k
    cdef floating beta = 0
    for t in range(g.KK):
        valid_range(t * g.DW - g.PW, 1, g.W, g.OW, &lo, &hi)
        lo = _max(lo, p0)
        hi = _min(hi, p1)
        if beta == 0 and (lo > p0 or hi < p1):
            for k in range(g.Kg):
                memset(yg + k * g.P + p0, 0, (p1 - p0) * sizeof(floating))
            beta = 1
        if hi > lo:
            gemm_rm(False, False, <int> g.Kg, <int> (hi - lo), <int> g.Cg, 1, wt + t * wts,
                    <int> g.Cg, xg + lo + t * g.DW - g.PW, <int> g.W, beta, yg + lo,
                    <int> g.P)
            beta = 1


cdef floating* _scratch(Py_ssize_t n_threads, Py_ssize_t per_thread, floating dummy) except NULL:
    cdef floating* buf = <floating*> malloc(_max(1, n_threads * per_thread) * sizeof(floating))
    if buf == NULL:
        raise MemoryError(f"cyconv: could not allocate {n_threads * per_thread * sizeof(floating)}"
                          f" bytes of im2col workspace")
    return buf


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes,
                 int path=PATH_COLUMNS):
    """y[n] = conv(x[n], w) + b for every sample, im2col + GEMM.

    x (N, C_img * D*H*W), w (C_col, CKK), b (C_col,) or empty, y (N, C_col * P).
    ``path``: PATH_COLUMNS (a column matrix per tile), PATH_POINTWISE (1x1, stride 1,
    unpadded: the GEMM reads x itself) or PATH_TAPS (1-D, unit stride: one GEMM per tap
    on shifted views of x; every weight must be finite, since the padding's columns are
    left out rather than multiplied).  A path the geometry does not allow is a
    ValueError.
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t N = x.shape[0]
    cdef bint pointwise = path == PATH_POINTWISE
    cdef bint has_bias = b.shape[0] > 0
    cdef bint taps = path == PATH_TAPS
    cdef floating* wt = NULL
    cdef Py_ssize_t wts = g.C_col * g.Cg, c
    if (pointwise and not _is_pointwise(&g)) or (taps and not _taps_as_gemms(&g)) or not (
            0 <= path <= PATH_TAPS):
        raise ValueError(f"im2col.conv_forward: path {path} does not fit this geometry")
    cdef Py_ssize_t elem = sizeof(floating)
    cdef Py_ssize_t budget = _max(1, ws_bytes // (n_threads * elem))
    cdef Py_ssize_t tile, T, S = 1, NB = N, KC = g.CKK, MB = 1, rows = g.Kg, span, ybuf = 0
    # Pixels per chunk (the GEMM's N dimension).  Per-tap GEMMs and 1x1 layers read x
    # in place: whole planes or the cache tile.  A column matrix takes the cache tile's
    # worth of whole columns, but never fewer than SPAN pixels: a long reduction (GEMM
    # depth CKK over 2048) chunks its column rows instead (KC, summed by the GEMMs in
    # row order), so the weights are packed once per SPAN pixels or more, not once per
    # sliver (3-D U-Net's 6x6x6 planes at depth 6912, C3D's at 13824).
    if pointwise:
        tile = g.P
    elif taps:
        tile = _max(1, _min(_min(g.P, budget // g.CKK),
                            _max(MIN_TILE, _TILE_BYTES // (g.CKK * elem))))
    else:
        tile = _min(g.P, _max(SPAN, _TILE_BYTES // (g.CKK * elem)))
    T = (g.P + tile - 1) // tile
    # Too few items for the threads (batch 1): cut the side of the GEMM that costs more
    # to share.  Pixel chunks each pack the whole weight matrix (Kg rows), output-channel
    # blocks (below) each build the whole column matrix (tile columns): with more output
    # channels than pixels (a 1x1 expansion on a 14x14 or 7x7 plane) the channels go.
    if N * g.G * T < n_threads and (taps or g.Kg <= g.P):
        T = _min(_max(1, g.P // MIN_TILE), (n_threads + N * g.G - 1) // (N * g.G))
        T = _max(T, (g.P + tile - 1) // tile)
    tile = (g.P + T - 1) // T
    T = (g.P + tile - 1) // tile
    # Small planes (a whole one under SPAN / 2 pixels): S samples side by side per GEMM
    # (their column matrices gathered, the result staged and copied out), batches as
    # many as the threads or a multiple of them, so the GEMM is SPAN wide, not a plane
    # (DCGAN's 4x4 and 8x8 outputs, ResNet's 7x7 at a training batch).
    if not (pointwise or taps) and T == 1 and N > 1 and 2 * g.P <= SPAN:
        S = _min(N, SPAN // g.P)
        NB = (N + S - 1) // S
        NB = _min(N, (NB + n_threads - 1) // n_threads * n_threads)
        S = (N + NB - 1) // NB
        NB = (N + S - 1) // S
    # Still fewer items than threads (batch 1, few pixels: a 7x7 plane): split the output
    # channels too, in blocks of at least 16 rows.  Each output is still one GEMM's.
    if NB * g.G * T < n_threads and not taps:
        MB = _min((n_threads + NB * g.G * T - 1) // (NB * g.G * T), _max(1, g.Kg // 16))
        rows = (g.Kg + MB - 1) // MB
        MB = (g.Kg + rows - 1) // rows
    span = S * tile
    ybuf = rows * span if S > 1 else 0
    if not (pointwise or taps):
        # column rows per chunk: all of them while the chunk fits the cache tile, and
        # within the workspace (a workspace too small for a staged batch runs one
        # sample at a time, and for one column of the tile, a narrower tile)
        if g.CKK * span * elem > _TILE_BYTES:
            KC = _max(g.KK, _TILE_BYTES // (span * elem))
        if S > 1 and ybuf + span > budget:
            S, NB, ybuf = 1, N, 0
            span = tile
        if span > budget:
            tile = budget
            T = (g.P + tile - 1) // tile
            span = tile
        KC = _max(1, _min(_min(KC, g.CKK), (budget - ybuf) // span))
    cdef Py_ssize_t items = NB * g.G * T * MB
    cdef Py_ssize_t per_thread = 0 if pointwise or taps else KC * span + ybuf
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef Py_ssize_t it, n0, ns, s, gi, t, p0, p1, k, p, m0, m1, rest, r0, r1, wid, ldo
    cdef floating* col
    cdef floating* ybf
    cdef floating* out
    cdef floating* yg
    cdef floating* yk
    cdef const floating* xg
    cdef floating bv
    try:
        if taps:   # the per-tap weight matrices wt[t][k][c] = w[k, c * KK + t]
            wt = _scratch(1, g.KK * wts, <floating> 0)
            for t in range(g.KK):
                for k in range(g.C_col):
                    for c in range(g.Cg):
                        wt[t * wts + k * g.Cg + c] = w[k, c * g.KK + t]
        with nogil, parallel(num_threads=n_threads):
            col = scratch + threadid() * per_thread
            ybf = col + KC * span
            for it in prange(items, schedule="static"):
                rest = it // MB
                m0 = (it % MB) * rows
                m1 = _min(m0 + rows, g.Kg)
                n0 = rest // (g.G * T) * S
                ns = _min(S, N - n0)
                gi = (rest // T) % g.G
                t = rest % T
                p0 = t * tile
                p1 = _min(p0 + tile, g.P)
                xg = &x[n0, 0] + gi * g.Cg * g.img_plane
                yg = &y[n0, 0] + gi * g.Kg * g.P
                if pointwise:
                    gemm_rm(False, False, <int> (m1 - m0), <int> (p1 - p0), <int> g.Cg, 1,
                            &w[gi * g.Kg + m0, 0], <int> g.CKK, xg + p0, <int> g.P, 0,
                            yg + m0 * g.P + p0, <int> g.P)
                elif taps:
                    _tap_gemms(xg, wt + gi * g.Kg * g.Cg, wts, yg, &g, p0, p1)
                else:
                    # y[rows m0:m1] = W[m0:m1, :] @ col, KC column rows at a time
                    wid = ns * (p1 - p0)
                    out, ldo = yg + m0 * g.P + p0, g.P
                    if S > 1:
                        out, ldo = ybf, wid
                    r0 = 0
                    while r0 < g.CKK:
                        r1 = _min(r0 + KC, g.CKK)
                        for s in range(ns):
                            im2col_nd(xg + s * x.shape[1], col + s * (p1 - p0), &g, r0, r1,
                                      p0, p1, wid)
                        gemm_rm(False, False, <int> (m1 - m0), <int> wid, <int> (r1 - r0),
                                1, &w[gi * g.Kg + m0, r0], <int> g.CKK, col, <int> wid,
                                0 if r0 == 0 else 1, out, <int> ldo)
                        r0 = r1
                    if S > 1:
                        for s in range(ns):
                            for k in range(m0, m1):
                                memcpy(yg + s * y.shape[1] + k * g.P + p0,
                                       ybf + (k - m0) * wid + s * (p1 - p0),
                                       (p1 - p0) * sizeof(floating))
                if has_bias:
                    for s in range(ns):
                        for k in range(m0, m1):
                            bv = b[gi * g.Kg + k]
                            yk = yg + s * y.shape[1] + k * g.P
                            for p in range(p0, p1):
                                yk[p] = yk[p] + bv
    finally:
        free(scratch)
        free(wt)


def conv_backward_input(const floating[:, ::1] gy, const floating[:, ::1] w,
                        const floating[::1] b, floating[:, ::1] gx, tuple geom,
                        Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """gx[n] = conv_input(gy[n], w) (+ b): the input gradient / transposed convolution.

    gy (N, C_col * P), w (C_col, CKK), b (C_img,) or empty, gx (N, C_img * D*H*W).
    A 1x1, stride-1, unpadded layer's GEMMs add straight into gx (its column matrix),
    one sample at a time.
    """
    cdef Geom g = make_geom(geom)
    cdef bint pointwise = _is_pointwise(&g)
    cdef Py_ssize_t N = gy.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    # Channel blocks per (n, g): enough to feed the threads; rows per GEMM chunk: within
    # the workspace (whole channels when possible, at least one row).
    cdef Py_ssize_t CB = _min(g.Cg, _max(1, (n_threads + N * g.G - 1) // (N * g.G)))
    cdef Py_ssize_t cpb = (g.Cg + CB - 1) // CB
    CB = (g.Cg + cpb - 1) // cpb
    cdef Py_ssize_t elem = sizeof(floating)
    cdef Py_ssize_t budget = _max(1, ws_bytes // (n_threads * elem))
    # Pixel tiles: a long image (a long 1-D signal, say) is cut so that a GEMM of up to
    # 64 rows still fits the cache tile; the size depends on the shape only, and every
    # image element gets its contributions tile by tile, rows in order within a tile,
    # whatever the row chunking.
    cdef Py_ssize_t pt = _min(g.P, _max(MIN_TILE,
                                        _TILE_BYTES // (_min(cpb * g.KK, 64) * elem)))
    cdef Py_ssize_t NT = (g.P + pt - 1) // pt
    # Small images (one tile) are batched S samples per GEMM: gy's planes are gathered
    # side by side (Kg x S*P) so BLAS packs the weight once per batch, not per sample.
    # S depends on the shape (and on a workspace too small for the gathered planes,
    # which changes only the GEMM's width); the scatter is still per sample, rows in
    # order.
    cdef Py_ssize_t S = _max(1, _min(N, (BATCH_PIXELS + g.P - 1) // g.P)) if NT == 1 else 1
    if S > 1 and g.Kg * S * g.P > budget // 2:
        S = _max(1, budget // 2 // (g.Kg * g.P))
    # As many batches as threads, or a multiple: batches of even size.  Unless the
    # weights outweigh the output gradients (CKK > N*P: 3x3 layers of 512+ channels on
    # 8x8 or smaller planes): each batch's GEMMs pack every weight row of its channel
    # block, so the threads then share the channel blocks (below), not the samples.
    cdef Py_ssize_t NB = (N + S - 1) // S
    if g.CKK <= N * g.P:
        NB = _min(N, (NB + n_threads - 1) // n_threads * n_threads)
    S = (N + NB - 1) // NB
    NB = (N + S - 1) // S
    cdef Py_ssize_t span = S * pt                  # GEMM columns per call, at most
    CB = _min(g.Cg, _max(1, (n_threads + NB * g.G - 1) // (NB * g.G)))
    cpb = (g.Cg + CB - 1) // CB
    CB = (g.Cg + cpb - 1) // cpb
    cdef Py_ssize_t rows = _max(1, _min(_min(cpb * g.KK, budget // span),
                                        _max(g.KK, _TILE_BYTES // (span * elem))))
    cdef Py_ssize_t gather = g.Kg * span if S > 1 else 0
    cdef Py_ssize_t items = NB * g.G * CB
    cdef floating* scratch = _scratch(n_threads, rows * span + gather, <floating> 0)
    cdef Py_ssize_t it, nb, n, n0, ns, s, k, gi, cb, c0, c1, r0, r1, rr, c, tp, p0, p1, ld
    cdef floating* col
    cdef floating* gyb
    cdef floating* xg
    cdef const floating* gyg
    try:
        with nogil, parallel(num_threads=n_threads):
            col = scratch + threadid() * (rows * span + gather)
            gyb = col + rows * span
            for it in prange(items, schedule="static"):
                nb = it // (g.G * CB)
                gi = (it // CB) % g.G
                cb = it % CB
                c0 = cb * cpb
                c1 = _min(c0 + cpb, g.Cg)
                n0 = nb * S
                ns = _min(S, N - n0)
                for n in range(n0, n0 + ns):
                    xg = &gx[n, 0] + gi * g.Cg * g.img_plane
                    for c in range(c0, c1):
                        if has_bias:
                            for rr in range(g.img_plane):
                                xg[c * g.img_plane + rr] = b[gi * g.Cg + c]
                        else:
                            memset(xg + c * g.img_plane, 0, g.img_plane * sizeof(floating))
                if S > 1:                # gyb[k, s*P + p] = gy[n0 + s, g, k, p]
                    for k in range(g.Kg):
                        for s in range(ns):
                            memcpy(gyb + (k * ns + s) * g.P,
                                   &gy[n0 + s, 0] + (gi * g.Kg + k) * g.P,
                                   g.P * sizeof(floating))
                    gyg = gyb
                    ld = ns * g.P
                else:
                    gyg = &gy[n0, 0] + gi * g.Kg * g.P
                    ld = g.P
                for tp in range(NT):
                    p0 = tp * pt
                    p1 = _min(p0 + pt, g.P)
                    r0 = c0 * g.KK
                    if pointwise and ns == 1:    # gx is the column matrix: add into it
                        gemm_rm(True, False, <int> (c1 - c0), <int> (p1 - p0), <int> g.Kg,
                                1, &w[gi * g.Kg, 0] + c0, <int> g.CKK, gyg + p0, <int> ld,
                                1, &gx[n0, 0] + (gi * g.Cg + c0) * g.P + p0, <int> g.P)
                        continue
                    while r0 < c1 * g.KK:
                        r1 = _min(r0 + rows, c1 * g.KK)
                        # col[r0:r1, :] = W[g][:, r0:r1]^T @ gy[g][:, pixels of the batch]
                        gemm_rm(True, False, <int> (r1 - r0), <int> (ns * (p1 - p0)),
                                <int> g.Kg, 1, &w[gi * g.Kg, 0] + r0, <int> g.CKK,
                                gyg + p0, <int> ld, 0, col, <int> (ns * (p1 - p0)))
                        for s in range(ns):
                            col2im_nd(col + s * (p1 - p0), ns * (p1 - p0),
                                      &gx[n0 + s, 0] + gi * g.Cg * g.img_plane, &g,
                                      r0, r1, p0, p1)
                        r0 = r1
    finally:
        free(scratch)


def conv_backward_weight(const floating[:, ::1] x, const floating[:, ::1] gy,
                         floating[:, ::1] gw, tuple geom, Py_ssize_t n_threads,
                         Py_ssize_t ws_bytes):
    """gw = sum_n gy[n] @ col(x[n])^T per group, im2col + GEMM.

    x (N, C_img * D*H*W), gy (N, C_col * P), gw (C_col, CKK) overwritten.  A 1x1,
    stride-1, unpadded layer's column matrix is x itself: the GEMMs read it in place.
    """
    cdef Geom g = make_geom(geom)
    cdef bint pointwise = _is_pointwise(&g)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t tile = _min(g.P, WGRAD_TILE)
    cdef Py_ssize_t T = (g.P + tile - 1) // tile
    cdef Py_ssize_t wsize = g.C_col * g.CKK
    cdef Py_ssize_t budget = _max(1, ws_bytes // (n_threads * <Py_ssize_t> sizeof(floating)))
    cdef Py_ssize_t rows = _max(1, _min(g.CKK, budget // tile))
    cdef Py_ssize_t R, items, nt
    # Fewer (sample, group, tile) items than threads (one long sample, say): split the
    # column rows too, so every thread has a share of the GEMM.
    if N * g.G * T < n_threads:
        rows = _min(rows, (g.CKK + n_threads - 1) // n_threads)
    R = (g.CKK + rows - 1) // rows
    items = N * g.G * T * R
    nt = _max(1, _min(n_threads, items))
    # Per thread: its column chunk, then its partial weight gradient (padded to 64 bytes
    # so no two threads share a cache line).
    cdef Py_ssize_t part = (wsize + 15) // 16 * 16
    cdef Py_ssize_t cols = 0 if pointwise else rows * tile
    cdef Py_ssize_t per_thread = cols + part
    cdef floating* scratch = _scratch(nt, per_thread, <floating> 0)
    cdef Py_ssize_t it, n, gi, t, p0, p1, r0, r1, i, j, ld
    cdef floating* col
    cdef const floating* src
    cdef floating* acc
    cdef floating s
    cdef floating* out = &gw[0, 0]
    for j in range(nt):
        memset(scratch + j * per_thread + cols, 0, wsize * sizeof(floating))
    try:
        with nogil, parallel(num_threads=nt):
            col = scratch + threadid() * per_thread
            acc = col + cols
            for it in prange(items, schedule="static"):
                n = it // (g.G * T * R)
                gi = (it // (T * R)) % g.G
                t = (it // R) % T
                p0 = t * tile
                p1 = _min(p0 + tile, g.P)
                r0 = (it % R) * rows
                r1 = _min(r0 + rows, g.CKK)
                if pointwise:
                    src = &x[n, 0] + (gi * g.Cg + r0) * g.img_plane + p0
                    ld = g.P
                else:
                    im2col_nd(&x[n, 0] + gi * g.Cg * g.img_plane, col, &g, r0, r1, p0, p1,
                              p1 - p0)
                    src = col
                    ld = p1 - p0
                # acc[g][:, r0:r1] += gy[n, g][:, p0:p1] @ col^T
                gemm_rm(False, True, <int> g.Kg, <int> (r1 - r0), <int> (p1 - p0), 1,
                        &gy[n, 0] + gi * g.Kg * g.P + p0, <int> g.P, src,
                        <int> ld, 1, acc + gi * g.Kg * g.CKK + r0, <int> g.CKK)
        # Reduce the partials in thread order, in parallel over weight elements.
        for i in prange(wsize, nogil=True, num_threads=nt, schedule="static"):
            s = scratch[cols + i]
            for j in range(1, nt):
                s = s + scratch[j * per_thread + cols + i]
            out[i] = s
    finally:
        free(scratch)
