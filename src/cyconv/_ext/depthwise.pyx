"""Convolutions on channel-interleaved blocks: depthwise layers (forward, input and weight
gradient) and dense layers with few input channels (``outer_forward``,
``outer_backward_weight``, at the end of this file).

For depthwise layers (one input and one output channel per group) of any stride,
dilation, kernel size (3, 5, 7, ...) and plane size, 1-D, 2-D and 3-D.  Every array is
C-contiguous and every shape already checked (``cyconv._params``); NumPy equivalent of
the forward pass: ``y[n, c] = correlate(pad(x[n, c]), w[c, 0])[::stride]``.

Notes
-----
The per-channel direct kernels (``direct.pyx``) vectorise along a plane's rows.  That
fails exactly where real networks put their depthwise layers: 7x7 and 14x14 planes
(rows shorter than two vectors) and stride 2 (every other input element).  Here a work
item takes L consecutive channels (L = 8 float32, 4 float64: one vector) of one sample
and stages them *interleaved*, ``xb[d][h][w][lane]``, with zero padding around them.  A
vector is then one pixel of L channels, the taps of all L channels are L-lane
multiply-adds, and a stride or a dilation only changes which pixel a tap reads
(``_depthwise.h``: ``dw_gather``, ``dw_dot``).

* forward: ``yb[od, oh, ow] = b + sum_taps w[tap] * xb[od*SD + kd*DD, oh*SH + kh*DH,
  ow*SW + kw*DW]``, one ``dw_gather`` per output row, then ``yb`` is de-interleaved into
  the L output planes.
* input gradient: a gather, not a scatter.  Image position i = r + S*j of phase r (per
  axis) receives ``gy[j + c_k]`` through exactly the taps k with ``(r + P - k*Dil) % S
  == 0``, ``c_k = (r + P - k*Dil) / S``: per phase a unit-stride correlation of the
  output gradient (staged interleaved with zero borders, so out-of-range ``j + c_k``
  read zeros) with that phase's taps, written to every S-th pixel of the image.  Each
  image pixel is computed once, by one thread.
* weight gradient: an item is one block of L channels, swept over the samples in
  order; per output row ``dw_dot`` adds ``gy[o] * xb[o under tap]`` into one L-lane
  partial sum per tap.  The summation order is fixed, so the result is bit-identical
  for every thread count.

Padded taps multiply real zeros (``0 * w``, ``gy * 0``), as im2col's column matrix
does, so NaN and Inf reach exactly the outputs they reach there.  Lanes past the last
channel of a ragged block hold zeros (zero weights) and are never written back.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom


cdef extern from "_depthwise.h" nogil:
    void dw_gather_f(float* out, const Py_ssize_t* oo, const float* inp,
                     const Py_ssize_t* io, const Py_ssize_t* off, const float* w,
                     Py_ssize_t ntap, Py_ssize_t n, const float* b)
    void dw_gather_d(double* out, const Py_ssize_t* oo, const double* inp,
                     const Py_ssize_t* io, const Py_ssize_t* off, const double* w,
                     Py_ssize_t ntap, Py_ssize_t n, const double* b)
    void dw_dot_f(float* acc, const float* g, const float* inp, const Py_ssize_t* io,
                  const Py_ssize_t* off, Py_ssize_t ntap, Py_ssize_t n)
    void dw_dot_d(double* acc, const double* g, const double* inp, const Py_ssize_t* io,
                  const Py_ssize_t* off, Py_ssize_t ntap, Py_ssize_t n)
    void dw_interleave_f(const float* src, Py_ssize_t plane, float* dst, Py_ssize_t n)
    void dw_interleave_d(const double* src, Py_ssize_t plane, double* dst, Py_ssize_t n)
    void dw_deinterleave_f(const float* src, float* dst, Py_ssize_t plane, Py_ssize_t n)
    void dw_deinterleave_d(const double* src, double* dst, Py_ssize_t plane, Py_ssize_t n)


cdef inline void gather(floating* out, const Py_ssize_t* oo, const floating* inp,
                        const Py_ssize_t* io, const Py_ssize_t* off, const floating* w,
                        Py_ssize_t ntap, Py_ssize_t n, const floating* b) noexcept nogil:
    if floating is float:
        dw_gather_f(out, oo, inp, io, off, w, ntap, n, b)
    else:
        dw_gather_d(out, oo, inp, io, off, w, ntap, n, b)


cdef inline void dot(floating* acc, const floating* g, const floating* inp,
                     const Py_ssize_t* io, const Py_ssize_t* off, Py_ssize_t ntap,
                     Py_ssize_t n) noexcept nogil:
    if floating is float:
        dw_dot_f(acc, g, inp, io, off, ntap, n)
    else:
        dw_dot_d(acc, g, inp, io, off, ntap, n)


def lanes(Py_ssize_t itemsize):
    """Channels per interleaved block: one 32-byte vector."""
    return 32 // itemsize


cdef struct Box:
    # an interleaved block: extents and where the data starts inside (zero border before)
    Py_ssize_t Dp, Hp, Wp, d0, h0, w0


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef Box input_box(const Geom* g) noexcept nogil:
    """The zero-padded image block every forward tap and weight-gradient tap reads."""
    cdef Box q
    q.Dp = _max(g.D + g.PD, (g.OD - 1) * g.SD + (g.KD - 1) * g.DD + 1)
    q.Hp = _max(g.H + g.PH, (g.OH - 1) * g.SH + (g.KH - 1) * g.DH + 1)
    q.Wp = _max(g.W + g.PW, (g.OW - 1) * g.SW + (g.KW - 1) * g.DW + 1)
    q.d0, q.h0, q.w0 = g.PD, g.PH, g.PW
    return q


cdef void stage(const floating* src, Py_ssize_t plane, Py_ssize_t nch, floating* dst,
                const Box* q, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                floating* tmp) noexcept nogil:
    """dst[(d0 + d, h0 + h, w0 + w)][c] = src[c * plane + (d*H + h)*W + w] for the nch
    channels: the interior of an interleaved block (its border is never written).

    Full blocks go through register transposes of L pixels: row by row when rows are
    long; else the whole plane into ``tmp`` (plane * L elements), whose rows are then
    copied into place (a row is W vectors), unless the block has no border at all."""
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Py_ssize_t d, h, w, c
    cdef const floating* s
    cdef floating* o
    cdef bint whole = nch == L and W < 4 * L
    cdef bint direct = q.Hp == H and q.Wp == W and q.d0 == 0 and q.h0 == 0 and q.w0 == 0
    if whole:
        if floating is float:
            dw_interleave_f(src, plane, dst if direct else tmp, D * H * W)
        else:
            dw_interleave_d(src, plane, dst if direct else tmp, D * H * W)
        if direct:
            return
    for d in range(D):
        for h in range(H):
            s = src + (d * H + h) * W
            o = dst + (((q.d0 + d) * q.Hp + q.h0 + h) * q.Wp + q.w0) * L
            if whole:
                memcpy(o, tmp + (d * H + h) * W * L, W * L * sizeof(floating))
            elif nch == L:
                if floating is float:
                    dw_interleave_f(s, plane, o, W)
                else:
                    dw_interleave_d(s, plane, o, W)
            else:
                for w in range(W):
                    for c in range(nch):
                        o[w * L + c] = s[c * plane + w]


cdef void unstage(const floating* src, Py_ssize_t n, Py_ssize_t nch,
                  floating* dst) noexcept nogil:
    """dst[c * n + p] = src[p * L + c]: n interleaved pixels back into nch planes."""
    unstage_part(src, n, n, nch, dst)


cdef void unstage_part(const floating* src, Py_ssize_t n, Py_ssize_t plane, Py_ssize_t nch,
                       floating* dst) noexcept nogil:
    """dst[c * plane + p] = src[p * L + c]: n interleaved pixels into nch planes."""
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Py_ssize_t p, c
    if nch == L:
        if floating is float:
            dw_deinterleave_f(src, dst, plane, n)
        else:
            dw_deinterleave_d(src, dst, plane, n)
    else:
        for p in range(n):
            for c in range(nch):
                dst[c * plane + p] = src[p * L + c]


cdef void pack_weights(const floating* w, Py_ssize_t KK, Py_ssize_t nch,
                       const Py_ssize_t* taps, Py_ssize_t ntap, floating* wb) noexcept nogil:
    """wb[t][c] = w[c * KK + taps[t]] (zero for lanes past nch)."""
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Py_ssize_t t, c
    for t in range(ntap):
        for c in range(L):
            wb[t * L + c] = w[c * KK + taps[t]] if c < nch else 0


cdef Py_ssize_t[::1] _offsets(const Geom* g, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t L):
    """Element offset of each tap (kd, kh, kw) inside an interleaved block."""
    cdef Py_ssize_t[::1] off = np.empty(max(g.KK, 1), np.intp)
    cdef Py_ssize_t kd, kh, kw
    for kd in range(g.KD):
        for kh in range(g.KH):
            for kw in range(g.KW):
                off[(kd * g.KH + kh) * g.KW + kw] = (
                    (kd * g.DD * Hp + kh * g.DH) * Wp + kw * g.DW) * L
    return off


def _windows(Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t SD, Py_ssize_t SH,
             Py_ssize_t SW, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t L):
    """Element offset in an interleaved (., Hp, Wp) block where each output's window
    starts, outputs in (od, oh, ow) order."""
    od = np.arange(OD, dtype=np.intp)[:, None, None] * (SD * Hp)
    oh = np.arange(OH, dtype=np.intp)[None, :, None] * SH
    ow = np.arange(OW, dtype=np.intp)[None, None, :] * SW
    return np.ascontiguousarray((((od + oh) * Wp + ow) * L).reshape(-1))


cdef floating* _scratch(Py_ssize_t n_threads, Py_ssize_t per_thread, floating kind) except NULL:
    cdef floating* p = <floating*> malloc(max(n_threads, 1) * max(per_thread, 1) * sizeof(floating))
    if p == NULL:
        raise MemoryError("depthwise convolution: could not allocate its scratch buffers")
    return p


cdef int _check(const Geom* g) except -1:
    if g.Cg != 1 or g.Kg != 1:
        raise ValueError("depthwise kernel: needs one input and one output channel per group")
    return 0


def workspace_bytes(tuple geom, Py_ssize_t itemsize, str direction, Py_ssize_t n_threads):
    """Scratch bytes of one call (all threads): the staged blocks of each thread."""
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t L = 32 // itemsize
    cdef Box q = input_box(&g)
    cdef Py_ssize_t img = q.Dp * q.Hp * q.Wp * L, col = g.P * L, taps = (g.KK + 1) * L
    if direction == "backward_input":
        b = _grad_box(&g)
        per = b[0] * b[1] * b[2] * L + g.img_plane * L + taps + col
    else:
        per = img + col + taps + g.img_plane * L
    return int(max(n_threads, 1) * per * itemsize)


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """y[n, c] = depthwise conv of x[n, c] with w[c] (+ b[c]); one (sample, block of L
    channels) per work item.  x (N, C * D*H*W), w (C, KK), b (C,) or empty, y (N, C * P).
    """
    cdef Geom g = make_geom(geom)
    _check(&g)
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Box q = input_box(&g)
    cdef Py_ssize_t N = x.shape[0], C = g.C_img
    cdef Py_ssize_t CB = (C + L - 1) // L
    cdef Py_ssize_t img = q.Dp * q.Hp * q.Wp * L
    cdef Py_ssize_t per_thread = img + g.P * L + (g.KK + 1) * L + g.img_plane * L
    cdef Py_ssize_t[::1] offs = _offsets(&g, q.Hp, q.Wp, L)
    cdef Py_ssize_t[::1] tap_ids = np.arange(max(g.KK, 1), dtype=np.intp)
    cdef Py_ssize_t[::1] win = _windows(g.OD, g.OH, g.OW, g.SD, g.SH, g.SW, q.Hp, q.Wp, L)
    cdef Py_ssize_t[::1] dense = np.arange(g.P, dtype=np.intp) * L
    cdef const Py_ssize_t* off = &offs[0]
    cdef const Py_ssize_t* taps = &tap_ids[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef floating* xb = NULL
    cdef floating* yb
    cdef floating* wb
    cdef floating* bb
    cdef floating* tmp
    cdef Py_ssize_t it, n, cb, nch, c
    try:
        with nogil, parallel(num_threads=n_threads):
            xb = scratch + threadid() * per_thread
            yb = xb + img
            wb = yb + g.P * L
            bb = wb + g.KK * L
            tmp = bb + L
            memset(xb, 0, img * sizeof(floating))      # the border, once
            for it in prange(N * CB, schedule="static"):
                n = it // CB
                cb = it % CB
                nch = min(L, C - cb * L)
                stage(&x[n, 0] + cb * L * g.img_plane, g.img_plane, nch, xb, &q,
                      g.D, g.H, g.W, tmp)
                pack_weights(&w[cb * L, 0], g.KK, nch, taps, g.KK, wb)
                for c in range(L):
                    bb[c] = b[cb * L + c] if has_bias and c < nch else 0
                gather(yb, &dense[0], xb, &win[0], off, wb, g.KK, g.P, bb)
                unstage(yb, g.P, nch, &y[n, 0] + cb * L * g.P)
    finally:
        free(scratch)


def _axis_phases(Py_ssize_t n_img, Py_ssize_t n_col, Py_ssize_t K, Py_ssize_t S,
                 Py_ssize_t P, Py_ssize_t Dl):
    """Per phase r of an image axis: (r, positions, [(tap, c_tap)]) where image index
    r + S*j reads output j + c_tap through tap; and the zero border (before, after) the
    output axis needs so that every j + c_tap is inside it."""
    phases, lo, hi = [], 0, 0
    for r in range(min(S, n_img)):
        J = (n_img - r + S - 1) // S
        taps = []
        for k in range(K):
            t = r + P - k * Dl
            if t % S == 0:
                c = t // S
                taps.append((k, c))
                lo = max(lo, -c)
                hi = max(hi, J - 1 + c - (n_col - 1))
        phases.append((r, J, taps))
    return phases, lo, hi


cdef tuple _grad_box(const Geom* g):
    """Extents of the zero-bordered output-gradient block: (ODb, OHb, OWb) and the axes'
    phases and borders."""
    ax = [_axis_phases(g.D, g.OD, g.KD, g.SD, g.PD, g.DD),
          _axis_phases(g.H, g.OH, g.KH, g.SH, g.PH, g.DH),
          _axis_phases(g.W, g.OW, g.KW, g.SW, g.PW, g.DW)]
    col = (g.OD, g.OH, g.OW)
    return tuple(n + lo + hi for n, (_, lo, hi) in zip(col, ax)) + (ax,)


def conv_backward_input(const floating[:, ::1] gy, const floating[:, ::1] w,
                        const floating[::1] b, floating[:, ::1] gx, tuple geom,
                        Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """gx[n, c] = the input gradient of the depthwise conv (+ b[c], a transposed
    convolution's bias), by phases (see the module notes).  gy (N, C * P), w (C, KK),
    gx (N, C * D*H*W) overwritten."""
    cdef Geom g = make_geom(geom)
    _check(&g)
    cdef Py_ssize_t L = 32 // sizeof(floating)
    ODb, OHb, OWb, ax = _grad_box(&g)
    cdef Box q
    q.Dp, q.Hp, q.Wp = ODb, OHb, OWb
    q.d0, q.h0, q.w0 = ax[0][1], ax[1][1], ax[2][1]
    # per phase: its taps (weights and offsets, flattened in one list) and its image
    # pixels (where each goes in gxb, where its window starts in gyb), also flattened:
    # phases[i] = (first tap, taps, first pixel, pixels)
    ph, tap_list, off_list, out_list, in_list = [], [], [], [], []
    n_pix = 0
    for rd, Jd, td in ax[0][0]:
        for rh, Jh, th in ax[1][0]:
            for rw, Jw, tw in ax[2][0]:
                first = len(tap_list)
                for kd, cd in td:
                    for kh, ch in th:
                        for kw, cw in tw:
                            tap_list.append((kd * g.KH + kh) * g.KW + kw)
                            off_list.append((((cd + q.d0) * q.Hp + ch + q.h0) * q.Wp
                                             + cw + q.w0) * L)
                jd = np.arange(Jd, dtype=np.intp)[:, None, None]
                jh = np.arange(Jh, dtype=np.intp)[None, :, None]
                jw = np.arange(Jw, dtype=np.intp)[None, None, :]
                out_list.append(((((rd + g.SD * jd) * g.H + rh + g.SH * jh) * g.W
                                  + rw + g.SW * jw) * L).reshape(-1))
                in_list.append((((jd * q.Hp + jh) * q.Wp + jw) * L).reshape(-1))
                ph.append((first, len(tap_list) - first, n_pix, Jd * Jh * Jw))
                n_pix += Jd * Jh * Jw
    cdef Py_ssize_t[:, ::1] phases = np.array(ph, np.intp).reshape(-1, 4)
    cdef Py_ssize_t[::1] tap_ids = np.array(tap_list + [0], np.intp)
    cdef Py_ssize_t[::1] offs = np.array(off_list + [0], np.intp)
    cdef Py_ssize_t[::1] oo = np.concatenate(out_list + [np.zeros(1, np.intp)])
    cdef Py_ssize_t[::1] io = np.concatenate(in_list + [np.zeros(1, np.intp)])
    cdef Py_ssize_t n_ph = phases.shape[0], n_taps = len(tap_list)
    cdef Py_ssize_t N = gy.shape[0], C = g.C_img
    cdef Py_ssize_t CB = (C + L - 1) // L
    cdef Py_ssize_t blk = q.Dp * q.Hp * q.Wp * L
    cdef Py_ssize_t per_thread = blk + g.img_plane * L + (n_taps + 1) * L + g.P * L
    cdef bint has_bias = b.shape[0] > 0
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef floating* gyb = NULL
    cdef floating* gxb
    cdef floating* wb
    cdef floating* bb
    cdef floating* tmp
    cdef Py_ssize_t it, n, cb, nch, c, pi, t0, p0
    try:
        with nogil, parallel(num_threads=n_threads):
            gyb = scratch + threadid() * per_thread
            gxb = gyb + blk
            wb = gxb + g.img_plane * L
            bb = wb + n_taps * L
            tmp = bb + L
            memset(gyb, 0, blk * sizeof(floating))      # the border, once
            for it in prange(N * CB, schedule="static"):
                n = it // CB
                cb = it % CB
                nch = min(L, C - cb * L)
                stage(&gy[n, 0] + cb * L * g.P, g.P, nch, gyb, &q, g.OD, g.OH, g.OW, tmp)
                pack_weights(&w[cb * L, 0], g.KK, nch, &tap_ids[0], n_taps, wb)
                for c in range(L):
                    bb[c] = b[cb * L + c] if has_bias and c < nch else 0
                for pi in range(n_ph):
                    t0 = phases[pi, 0]
                    p0 = phases[pi, 2]
                    gather(gxb, &oo[p0], gyb, &io[p0], &offs[t0], wb + t0 * L,
                           phases[pi, 1], phases[pi, 3], bb)
                unstage(gxb, g.img_plane, nch, &gx[n, 0] + cb * L * g.img_plane)
    finally:
        free(scratch)


def conv_backward_weight(const floating[:, ::1] x, const floating[:, ::1] gy,
                         floating[:, ::1] gw, tuple geom, Py_ssize_t n_threads,
                         Py_ssize_t ws_bytes):
    """gw[c, tap] = sum over samples and outputs of gy[n, c, o] * x[n, c, o under tap];
    one block of L channels per work item, samples in order (deterministic).  x (N, C *
    D*H*W), gy (N, C * P), gw (C, KK) overwritten."""
    cdef Geom g = make_geom(geom)
    _check(&g)
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Box q = input_box(&g)
    cdef Py_ssize_t N = x.shape[0], C = g.C_img
    cdef Py_ssize_t CB = (C + L - 1) // L
    cdef Py_ssize_t img = q.Dp * q.Hp * q.Wp * L
    cdef Py_ssize_t per_thread = img + g.P * L + g.KK * L + g.img_plane * L
    cdef Py_ssize_t[::1] offs = _offsets(&g, q.Hp, q.Wp, L)
    cdef Py_ssize_t[::1] win = _windows(g.OD, g.OH, g.OW, g.SD, g.SH, g.SW, q.Hp, q.Wp, L)
    cdef const Py_ssize_t* off = &offs[0]
    cdef Box qy
    qy.Dp, qy.Hp, qy.Wp, qy.d0, qy.h0, qy.w0 = g.OD, g.OH, g.OW, 0, 0, 0
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef floating* xb = NULL
    cdef floating* gyb
    cdef floating* acc
    cdef floating* tmp
    cdef Py_ssize_t cb, n, nch, c, t
    try:
        with nogil, parallel(num_threads=n_threads):
            xb = scratch + threadid() * per_thread
            gyb = xb + img
            acc = gyb + g.P * L
            tmp = acc + g.KK * L
            memset(xb, 0, (img + g.P * L) * sizeof(floating))   # border, idle lanes: once
            for cb in prange(CB, schedule="dynamic"):
                nch = min(L, C - cb * L)
                memset(acc, 0, g.KK * L * sizeof(floating))
                for n in range(N):
                    stage(&x[n, 0] + cb * L * g.img_plane, g.img_plane, nch, xb, &q,
                          g.D, g.H, g.W, tmp)
                    stage(&gy[n, 0] + cb * L * g.P, g.P, nch, gyb, &qy, g.OD, g.OH, g.OW,
                          tmp)
                    dot(acc, gyb, xb, &win[0], off, g.KK, g.P)
                for c in range(nch):
                    for t in range(g.KK):
                        gw[cb * L + c, t] = acc[t * L + c]
    finally:
        free(scratch)


# -- few input channels per group: lanes across output channels ---------------------------

cdef extern from "_depthwise.h" nogil:
    void bc_gather_f(float* out, const Py_ssize_t* oo, const float* inp,
                     const Py_ssize_t* io, const Py_ssize_t* off, const float* w,
                     Py_ssize_t ntap, Py_ssize_t n, const float* b)
    void bc_gather_d(double* out, const Py_ssize_t* oo, const double* inp,
                     const Py_ssize_t* io, const Py_ssize_t* off, const double* w,
                     Py_ssize_t ntap, Py_ssize_t n, const double* b)
    void bc_dot_f(float* acc, const float* g, const float* inp, const Py_ssize_t* io,
                  const Py_ssize_t* off, Py_ssize_t ntap, Py_ssize_t n)
    void bc_dot_d(double* acc, const double* g, const double* inp, const Py_ssize_t* io,
                  const Py_ssize_t* off, Py_ssize_t ntap, Py_ssize_t n)


cdef void stage_plain(const floating* src, Py_ssize_t C, floating* dst, const Box* q,
                      Py_ssize_t D, Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    """dst[c][d0 + d][h0 + h][w0 + w] = src[c][d][h][w]: the interior of C zero-padded
    planes (their border is never written)."""
    cdef Py_ssize_t c, d, h, plane = q.Dp * q.Hp * q.Wp
    for c in range(C):
        for d in range(D):
            for h in range(H):
                memcpy(dst + c * plane + ((q.d0 + d) * q.Hp + q.h0 + h) * q.Wp + q.w0,
                       src + ((c * D + d) * H + h) * W, W * sizeof(floating))


cdef Py_ssize_t[::1] _pair_offsets(const Geom* g, const Box* q):
    """Offset of each (input channel, tap) pair in C zero-padded planes, c-major."""
    cdef Py_ssize_t[::1] taps = _offsets(g, q.Hp, q.Wp, 1)
    cdef Py_ssize_t plane = q.Dp * q.Hp * q.Wp
    return np.ascontiguousarray(
        (np.arange(g.Cg, dtype=np.intp)[:, None] * plane
         + np.asarray(taps)[None, :g.KK]).reshape(-1))


def outer_workspace_bytes(tuple geom, Py_ssize_t itemsize, str direction,
                          Py_ssize_t n_threads):
    """Scratch bytes of one outer_forward / outer_backward_weight call (all threads)."""
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t L = 32 // itemsize
    cdef Box q = input_box(&g)
    per = g.Cg * q.Dp * q.Hp * q.Wp + g.P * L + g.CKK * L + L
    return int(max(n_threads, 1) * per * itemsize)


cdef inline void pack_outer_block(const floating[:, ::1] w, const floating[::1] b,
                                  bint has_bias, Py_ssize_t k0, Py_ssize_t nk, Py_ssize_t T,
                                  floating* wb, floating* bb) noexcept nogil:
    """One block of L output channels k0 .. k0+nk for outer_forward: wb[t][c] = w[k0 + c,
    t] and bb[c] = b[k0 + c], zero for the lanes past nk (and bb without bias)."""
    cdef Py_ssize_t L = 32 // sizeof(floating), t, c
    for t in range(T):
        for c in range(L):
            wb[t * L + c] = w[k0 + c, t] if c < nk else 0
    for c in range(L):
        bb[c] = b[k0 + c] if has_bias and c < nk else 0


def outer_forward(const floating[:, ::1] x, const floating[:, ::1] w,
                  const floating[::1] b, floating[:, ::1] y, tuple geom,
                  Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """y[n] = conv(x[n], w) + b for a layer with few input channels per group.

    The lanes of a vector are L output channels: every (input channel, tap) pair is one
    weight vector, each input value is broadcast against it (``bc_gather``), over a
    register block of 8 outputs anywhere in the plane.  A work item is one sample and
    one block of L output channels of one group; it stages the group's planes
    zero-padded, computes the block pixel-major and transposes it into the L output
    planes.  With too few such items for the threads (a network's first layer at batch
    1: 32 output channels are 4 blocks), the planes are staged once, shared, and an item
    is a chunk of at least OUTER_CHUNK pixels of a block.  x (N, C * D*H*W), w (K, C/G *
    KK), b (K,) or empty, y (N, K * P).
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Box q = input_box(&g)
    cdef Py_ssize_t N = x.shape[0], K = g.Kg, T = g.CKK
    cdef Py_ssize_t KBg = (K + L - 1) // L
    cdef Py_ssize_t KB = g.G * KBg
    cdef Py_ssize_t img = g.Cg * q.Dp * q.Hp * q.Wp
    cdef Py_ssize_t per_thread = img + g.P * L + T * L + L
    cdef Py_ssize_t[::1] offs = _pair_offsets(&g, &q)
    cdef Py_ssize_t[::1] win = _windows(g.OD, g.OH, g.OW, g.SD, g.SH, g.SW, q.Hp, q.Wp, 1)
    cdef Py_ssize_t[::1] dense = np.arange(g.P, dtype=np.intp) * L
    cdef bint has_bias = b.shape[0] > 0
    # pixel chunks per block: 1, or enough for 4 items per thread when blocks are few
    cdef Py_ssize_t PC = 1, chunk
    if N * KB < 4 * n_threads:
        PC = max(1, min((4 * n_threads + N * KB - 1) // (N * KB), g.P // OUTER_CHUNK))
    chunk = (g.P + PC - 1) // PC
    PC = (g.P + chunk - 1) // chunk
    if PC > 1:
        _outer_forward_chunked(x, w, b, y, &g, &q, offs, win, dense, chunk, PC, n_threads)
        return
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef floating* xp = NULL
    cdef floating* yb
    cdef floating* wb
    cdef floating* bb
    cdef Py_ssize_t it, n, kb, gi, k0, nk, c, t
    try:
        with nogil, parallel(num_threads=n_threads):
            xp = scratch + threadid() * per_thread
            yb = xp + img
            wb = yb + g.P * L
            bb = wb + T * L
            memset(xp, 0, img * sizeof(floating))      # the border, once
            for it in prange(N * KB, schedule="static"):
                n = it // KB
                gi = (it % KB) // KBg
                kb = it % KBg
                k0 = gi * K + kb * L                    # first output channel
                nk = min(L, K - kb * L)
                stage_plain(&x[n, 0] + gi * g.Cg * g.img_plane, g.Cg, xp, &q, g.D, g.H, g.W)
                pack_outer_block(w, b, has_bias, k0, nk, T, wb, bb)
                if floating is float:
                    bc_gather_f(yb, &dense[0], xp, &win[0], &offs[0], wb, T, g.P, bb)
                else:
                    bc_gather_d(yb, &dense[0], xp, &win[0], &offs[0], wb, T, g.P, bb)
                unstage(yb, g.P, nk, &y[n, 0] + k0 * g.P)
    finally:
        free(scratch)


#: fewest output pixels per work item when outer_forward cuts blocks into chunks
cdef Py_ssize_t OUTER_CHUNK = 512


cdef int _outer_forward_chunked(const floating[:, ::1] x, const floating[:, ::1] w,
                                const floating[::1] b, floating[:, ::1] y, const Geom* g,
                                const Box* q, Py_ssize_t[::1] offs, Py_ssize_t[::1] win,
                                Py_ssize_t[::1] dense, Py_ssize_t chunk, Py_ssize_t PC,
                                Py_ssize_t n_threads) except -1:
    """outer_forward with every (sample, group) image staged once into a shared buffer,
    then PC chunks of ``chunk`` output pixels per (sample, output block) item: the same
    sums in the same order as the unchunked kernel's."""
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Py_ssize_t N = x.shape[0], K = g.Kg, T = g.CKK
    cdef Py_ssize_t KBg = (K + L - 1) // L
    cdef Py_ssize_t KB = g.G * KBg
    cdef Py_ssize_t img = g.Cg * q.Dp * q.Hp * q.Wp
    cdef Py_ssize_t per_thread = chunk * L + T * L + L
    cdef bint has_bias = b.shape[0] > 0
    cdef floating* imgs = _scratch(1, N * g.G * img, <floating> 0)
    cdef floating* scratch = NULL
    cdef floating* xp
    cdef floating* yb
    cdef floating* wb
    cdef floating* bb
    cdef Py_ssize_t it, n, kb, gi, k0, nk, c, t, p0, np_
    try:
        scratch = _scratch(n_threads, per_thread, <floating> 0)
        with nogil:
            memset(imgs, 0, N * g.G * img * sizeof(floating))     # the borders
            for it in prange(N * g.G, num_threads=n_threads, schedule="static"):
                stage_plain(&x[it // g.G, 0] + (it % g.G) * g.Cg * g.img_plane, g.Cg,
                            imgs + it * img, q, g.D, g.H, g.W)
        with nogil, parallel(num_threads=n_threads):
            yb = scratch + threadid() * per_thread
            wb = yb + chunk * L
            bb = wb + T * L
            for it in prange(N * KB * PC, schedule="static"):
                p0 = (it % PC) * chunk
                np_ = min(chunk, g.P - p0)
                n = it // (KB * PC)
                gi = (it // PC % KB) // KBg
                kb = (it // PC % KB) % KBg
                k0 = gi * K + kb * L
                nk = min(L, K - kb * L)
                xp = imgs + (n * g.G + gi) * img
                pack_outer_block(w, b, has_bias, k0, nk, T, wb, bb)
                if floating is float:
                    bc_gather_f(yb, &dense[0], xp, &win[p0], &offs[0], wb, T, np_, bb)
                else:
                    bc_gather_d(yb, &dense[0], xp, &win[p0], &offs[0], wb, T, np_, bb)
                unstage_part(yb, np_, g.P, nk, &y[n, 0] + k0 * g.P + p0)
    finally:
        free(scratch)
        free(imgs)
    return 0


def outer_backward_weight(const floating[:, ::1] x, const floating[:, ::1] gy,
                          floating[:, ::1] gw, tuple geom, Py_ssize_t n_threads,
                          Py_ssize_t ws_bytes):
    """gw[k, c*KK + t] = sum over samples and outputs of gy[n, k, o] * x[n, c, o under t]
    for a layer with few input channels per group (or small planes).

    A work item is one block of L output channels of one group and a run of (input
    channel, tap) pairs (runs only when there are fewer blocks than threads), swept over
    the samples in order: the output-gradient block staged pixel-major, ``bc_dot``
    accumulating one L-lane sum per pair.  Every weight is summed by one thread in a
    fixed order.  x (N, C * D*H*W), gy (N, K * P), gw (K, C/G * KK) overwritten.
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t L = 32 // sizeof(floating)
    cdef Box q = input_box(&g)
    cdef Py_ssize_t N = x.shape[0], K = g.Kg, T = g.CKK
    cdef Py_ssize_t KBg = (K + L - 1) // L
    cdef Py_ssize_t KB = g.G * KBg
    cdef Py_ssize_t runs = min(max(1, (n_threads + KB - 1) // KB), max(1, T // 8))
    cdef Py_ssize_t run = (T + runs - 1) // runs
    runs = (T + run - 1) // run
    cdef Py_ssize_t img = g.Cg * q.Dp * q.Hp * q.Wp
    cdef Py_ssize_t per_thread = img + g.P * L + T * L + L
    cdef Py_ssize_t[::1] offs = _pair_offsets(&g, &q)
    cdef Py_ssize_t[::1] win = _windows(g.OD, g.OH, g.OW, g.SD, g.SH, g.SW, q.Hp, q.Wp, 1)
    cdef Box qy
    qy.Dp, qy.Hp, qy.Wp, qy.d0, qy.h0, qy.w0 = g.OD, g.OH, g.OW, 0, 0, 0
    cdef floating* scratch = _scratch(n_threads, per_thread, <floating> 0)
    cdef floating* xp = NULL
    cdef floating* gyb
    cdef floating* acc
    cdef Py_ssize_t it, n, kb, gi, k0, nk, c, t, t0, t1
    try:
        with nogil, parallel(num_threads=n_threads):
            xp = scratch + threadid() * per_thread
            gyb = xp + img
            acc = gyb + g.P * L
            memset(xp, 0, (img + g.P * L) * sizeof(floating))   # border, idle lanes: once
            for it in prange(KB * runs, schedule="dynamic"):
                gi = (it // runs) // KBg
                kb = (it // runs) % KBg
                k0 = gi * K + kb * L
                t0 = (it % runs) * run
                t1 = min(t0 + run, T)
                nk = min(L, K - kb * L)
                memset(acc, 0, T * L * sizeof(floating))
                for n in range(N):
                    stage_plain(&x[n, 0] + gi * g.Cg * g.img_plane, g.Cg, xp, &q,
                                g.D, g.H, g.W)
                    stage(&gy[n, 0] + k0 * g.P, g.P, nk, gyb, &qy, g.OD, g.OH, g.OW, NULL)
                    if floating is float:
                        bc_dot_f(acc + t0 * L, gyb, xp, &win[0], &offs[t0], t1 - t0, g.P)
                    else:
                        bc_dot_d(acc + t0 * L, gyb, xp, &win[0], &offs[t0], t1 - t0, g.P)
                for c in range(nk):
                    for t in range(t0, t1):
                        gw[k0 + c, t] = acc[t * L + c]
    finally:
        free(scratch)
