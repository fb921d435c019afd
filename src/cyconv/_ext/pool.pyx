"""Pooling, padding and element-wise kernels, forward and backward, float32 and float64.

Pooling kernels read the geometry padded to 3 spatial dims (``PoolParams.geometry()``,
``PoolShape.geometry()``) and view every array as ``(planes, plane elements)``, planes =
N * C, C-contiguous.  Threads split the planes (``prange``): each plane is read and
written by exactly one thread, so the scatter-adds of the backward kernels need no
atomics, and results are bit-identical for any thread count.  ReLU and pad split
element blocks or output rows the same way.

The callers (:mod:`cyconv._cpu_pool`) pass geometries checked by :mod:`cyconv._params`;
each ``def`` below re-checks the array extents against the geometry it is given (and
the pad maps against the input), and every window is clipped to the plane, so a call
cannot read or write out of bounds.

Notes
-----
Max pooling runs row by row: for one output row ``y[od, oh, :]`` it visits the kernel
taps in PyTorch's order (kd, kh, kw) and, per tap, updates the whole row in a loop over
``ow`` that reads the input with the pooling stride (unit stride when stride is 1)::

    for kw in range(KW):                       # 2-D form, one input row ih
        for ow in valid(kw):                   # 0 <= ow * SW - PW + kw * DW < W
            v = x[ih, ow * SW - PW + kw * DW]
            if v > y[oh, ow] or v != v:        # strict >: the first maximum wins;
                y[oh, ow] = v                  # a NaN always wins (the last one scanned)
                idx[oh, ow] = ih * W + ...

Each output element thus sees its window in PyTorch's scan order, so values and
indices match ``torch.nn.functional.max_pool*d`` exactly, ties and NaNs included,
while the inner loop is a branch-free select the compiler vectorises.  Average pooling
sums the same way and divides each element by its PyTorch divisor afterwards.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp

cnp.import_array()

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport ceil_div, valid_range

cdef enum:
    # Elements per ReLU work item: large enough to amortise scheduling, small enough to
    # balance two to a few dozen threads.
    BLOCK = 16384


cdef struct PoolGeom:
    Py_ssize_t D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW, DD, DH, DW
    Py_ssize_t plane, out_plane


cdef PoolGeom make_pool_geom(tuple t) except *:
    cdef PoolGeom g
    (g.D, g.H, g.W, g.OD, g.OH, g.OW, g.KD, g.KH, g.KW, g.SD, g.SH, g.SW,
     g.PD, g.PH, g.PW, g.DD, g.DH, g.DW) = t
    g.plane = g.D * g.H * g.W
    g.out_plane = g.OD * g.OH * g.OW
    return g


cdef PoolGeom make_shape_geom(tuple t) except *:
    """A PoolGeom holding only the sizes (D, H, W, OD, OH, OW) of a PoolShape."""
    cdef PoolGeom g
    (g.D, g.H, g.W, g.OD, g.OH, g.OW) = t
    g.KD = g.KH = g.KW = g.SD = g.SH = g.SW = g.DD = g.DH = g.DW = 1
    g.PD = g.PH = g.PW = 0
    g.plane = g.D * g.H * g.W
    g.out_plane = g.OD * g.OH * g.OW
    return g


cdef int check_planes(str name, Py_ssize_t got_rows, Py_ssize_t got_cols, Py_ssize_t rows,
                      Py_ssize_t cols) except -1:
    """The kernels' own shape check (the callers check every shape first)."""
    if got_rows != rows or got_cols != cols:
        raise ValueError(f"pool kernel: {name} has shape ({got_rows}, {got_cols}), "
                         f"expected ({rows}, {cols})")
    return 0


# ---------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------

cdef inline Py_ssize_t first_tap(Py_ssize_t o, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d,
                                 Py_ssize_t n) noexcept nogil:
    """The first in-bounds input index of window ``o`` along one dim (PyTorch's initial
    argmax).  A window with no element in bounds (possible only with dilation > 1)
    gets the nearest index, n - 1, so every index stays inside the plane."""
    cdef Py_ssize_t i = o * s - p
    if i < 0:
        i += ceil_div(-i, d) * d
    if i >= n:
        i = n - 1
    return i


cdef inline void max_row(const floating* xr, Py_ssize_t off, Py_ssize_t step,
                         floating* yr, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """yr[ow] = max(yr[ow], xr[ow * step + off]) for ow in [lo, hi), NaN winning."""
    cdef Py_ssize_t ow
    cdef floating v, m
    if step == 1:
        for ow in range(lo, hi):
            v = xr[ow + off]
            m = yr[ow]
            yr[ow] = v if ((v > m) | (v != v)) else m
    else:
        for ow in range(lo, hi):
            v = xr[ow * step + off]
            m = yr[ow]
            yr[ow] = v if ((v > m) | (v != v)) else m


cdef inline void max_row_idx(const floating* xr, Py_ssize_t off, Py_ssize_t step,
                             floating* yr, int64_t* ir, Py_ssize_t base,
                             Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """max_row that also records the flat plane index ``base + ow * step`` of the winner."""
    cdef Py_ssize_t ow
    cdef floating v, m
    cdef bint take
    if step == 1:
        for ow in range(lo, hi):
            v = xr[ow + off]
            m = yr[ow]
            take = (v > m) | (v != v)
            yr[ow] = v if take else m
            ir[ow] = (base + ow) if take else ir[ow]
    else:
        for ow in range(lo, hi):
            v = xr[ow * step + off]
            m = yr[ow]
            take = (v > m) | (v != v)
            yr[ow] = v if take else m
            ir[ow] = (base + ow * step) if take else ir[ow]


cdef void max_pool_plane(const floating* x, floating* y, int64_t* idx, const PoolGeom* g,
                         const int64_t* first) noexcept nogil:
    """One plane: y (OD, OH, OW) = max over each window of x (D, H, W); idx (or NULL)
    receives the flat index of each maximum.  ``first`` holds first_tap() for every od,
    then every oh, then every ow."""
    cdef Py_ssize_t od, oh, ow, kd, kh, kw, id_, ih, lo, hi, off, row
    cdef floating* yr
    cdef int64_t* ir = NULL
    cdef const int64_t* fh = first + g.OD
    cdef const int64_t* fw = first + g.OD + g.OH
    for od in range(g.OD):
        for oh in range(g.OH):
            yr = y + (od * g.OH + oh) * g.OW
            for ow in range(g.OW):
                yr[ow] = -INFINITY
            if idx != NULL:
                ir = idx + (od * g.OH + oh) * g.OW
                row = (first[od] * g.H + fh[oh]) * g.W
                for ow in range(g.OW):
                    ir[ow] = row + fw[ow]
            for kd in range(g.KD):
                id_ = od * g.SD - g.PD + kd * g.DD
                if id_ < 0 or id_ >= g.D:
                    continue
                for kh in range(g.KH):
                    ih = oh * g.SH - g.PH + kh * g.DH
                    if ih < 0 or ih >= g.H:
                        continue
                    row = (id_ * g.H + ih) * g.W
                    for kw in range(g.KW):
                        off = kw * g.DW - g.PW
                        valid_range(off, g.SW, g.W, g.OW, &lo, &hi)
                        if idx == NULL:
                            max_row(x + row, off, g.SW, yr, lo, hi)
                        else:
                            max_row_idx(x + row, off, g.SW, yr, ir, row + off, lo, hi)


def max_pool_forward(const floating[:, ::1] x, floating[:, ::1] y, int64_t[:, ::1] idx,
                     tuple geom, Py_ssize_t n_threads):
    """Max pooling of ``x`` (planes, D*H*W) into ``y`` (planes, OD*OH*OW).

    ``idx`` (same shape as ``y``, or None) receives PyTorch's indices: the flat index
    within the input plane of each maximum.  NumPy equivalent of one output element:
    ``window.max()`` with NaN propagation, index of the first maximum (the last NaN).
    """
    cdef PoolGeom g = make_pool_geom(geom)
    cdef Py_ssize_t P = x.shape[0], pl, i
    check_planes("x", x.shape[0], x.shape[1], P, g.plane)
    check_planes("y", y.shape[0], y.shape[1], P, g.out_plane)
    if idx is not None:
        check_planes("idx", idx.shape[0], idx.shape[1], P, g.out_plane)
    if P == 0 or g.out_plane == 0:
        return
    cdef int64_t* first = <int64_t*> malloc((g.OD + g.OH + g.OW) * sizeof(int64_t))
    if first == NULL:
        raise MemoryError()
    for i in range(g.OD):
        first[i] = first_tap(i, g.SD, g.PD, g.DD, g.D)
    for i in range(g.OH):
        first[g.OD + i] = first_tap(i, g.SH, g.PH, g.DH, g.H)
    for i in range(g.OW):
        first[g.OD + g.OH + i] = first_tap(i, g.SW, g.PW, g.DW, g.W)
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef int64_t* ip = NULL
    if idx is not None:
        ip = &idx[0, 0]
    with nogil:
        if n_threads == 1:       # no parallel region for a serial call (small ops)
            for pl in range(P):
                max_pool_plane(xp + pl * g.plane, yp + pl * g.out_plane,
                               (ip + pl * g.out_plane) if ip != NULL else NULL, &g, first)
        else:
            for pl in prange(P, schedule="static", num_threads=n_threads):
                max_pool_plane(xp + pl * g.plane, yp + pl * g.out_plane,
                               (ip + pl * g.out_plane) if ip != NULL else NULL, &g, first)
    free(first)


cdef Py_ssize_t max_unpool_plane(const floating* gy, const int64_t* idx, floating* gx,
                                 Py_ssize_t n_out, Py_ssize_t plane) noexcept nogil:
    """gx = 0; gx[idx[o]] += gy[o]; returns how many indices fell outside [0, plane)."""
    cdef Py_ssize_t o, k, bad = 0
    memset(gx, 0, plane * sizeof(floating))
    for o in range(n_out):
        k = idx[o]
        if k < 0 or k >= plane:
            bad += 1
        else:
            gx[k] += gy[o]
    return bad


def max_pool_backward(const floating[:, ::1] gy, const int64_t[:, ::1] idx,
                      floating[:, ::1] gx, Py_ssize_t n_threads):
    """Scatter ``gy`` (planes, n_out) into ``gx`` (planes, plane) at ``idx``: the gradient
    of max pooling.  Indices outside the plane are skipped and counted; the count is
    returned (the caller raises when it is not 0).  ``gx`` is overwritten."""
    cdef Py_ssize_t P = gy.shape[0], n_out = gy.shape[1], plane = gx.shape[1], pl
    cdef Py_ssize_t bad = 0
    check_planes("idx", idx.shape[0], idx.shape[1], P, n_out)
    check_planes("gx", gx.shape[0], gx.shape[1], P, plane)
    if P == 0 or plane == 0:
        return 0
    if n_out == 0:
        gx[:, :] = 0
        return 0
    cdef const floating* gyp = &gy[0, 0]
    cdef const int64_t* ip = &idx[0, 0]
    cdef floating* gxp = &gx[0, 0]
    with nogil:
        for pl in prange(P, schedule="static", num_threads=n_threads):
            bad += max_unpool_plane(gyp + pl * n_out, ip + pl * n_out, gxp + pl * plane,
                                    n_out, plane)
    return bad


# ---------------------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------------------

cdef void avg_counts(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t k, Py_ssize_t s,
                     Py_ssize_t p, bint count_include_pad, double* out) noexcept nogil:
    """PyTorch's per-dim divisor factor of every window: its extent clipped to
    [-p, n_in + p) with count_include_pad, else to [0, n_in)."""
    cdef Py_ssize_t o, start, end
    for o in range(n_out):
        start = o * s - p
        end = start + k
        if end > n_in + p:
            end = n_in + p
        if not count_include_pad:
            if start < 0:
                start = 0
            if end > n_in:
                end = n_in
        out[o] = <double>(end - start)


cdef void avg_pool_plane(const floating* x, floating* y, const PoolGeom* g,
                         const double* cnt, double divisor) noexcept nogil:
    """One plane: y = window sums of x divided by divisor, or by the product of the
    per-dim counts ``cnt`` (od part, then oh, then ow) when divisor is 0."""
    cdef Py_ssize_t od, oh, ow, kd, kh, kw, id_, ih, lo, hi, off, row
    cdef floating* yr
    cdef const floating* xr
    cdef double dh
    cdef const double* ch = cnt + g.OD
    cdef const double* cw = cnt + g.OD + g.OH
    for od in range(g.OD):
        for oh in range(g.OH):
            yr = y + (od * g.OH + oh) * g.OW
            for ow in range(g.OW):
                yr[ow] = 0
            for kd in range(g.KD):
                id_ = od * g.SD - g.PD + kd
                if id_ < 0 or id_ >= g.D:
                    continue
                for kh in range(g.KH):
                    ih = oh * g.SH - g.PH + kh
                    if ih < 0 or ih >= g.H:
                        continue
                    row = (id_ * g.H + ih) * g.W
                    for kw in range(g.KW):
                        off = kw - g.PW
                        valid_range(off, g.SW, g.W, g.OW, &lo, &hi)
                        xr = x + row
                        if g.SW == 1:
                            for ow in range(lo, hi):
                                yr[ow] += xr[ow + off]
                        else:
                            for ow in range(lo, hi):
                                yr[ow] += xr[ow * g.SW + off]
            if divisor != 0:
                for ow in range(g.OW):
                    yr[ow] = yr[ow] / <floating>divisor
            else:
                dh = cnt[od] * ch[oh]
                for ow in range(g.OW):
                    yr[ow] = yr[ow] / <floating>(dh * cw[ow])


cdef void avg_unpool_plane(const floating* gy, floating* gx, const PoolGeom* g,
                           const double* cnt, double divisor) noexcept nogil:
    """One plane of the average-pooling gradient: gx = 0, then each gy element divided
    by its divisor is added to every in-bounds element of its window."""
    cdef Py_ssize_t od, oh, ow, id_, ih, iw, d0, d1, h0, h1, w0, w1
    cdef floating v
    cdef const double* ch = cnt + g.OD
    cdef const double* cw = cnt + g.OD + g.OH
    memset(gx, 0, g.plane * sizeof(floating))
    for od in range(g.OD):
        d0 = od * g.SD - g.PD
        d1 = min(d0 + g.KD, g.D)
        d0 = max(d0, 0)
        for oh in range(g.OH):
            h0 = oh * g.SH - g.PH
            h1 = min(h0 + g.KH, g.H)
            h0 = max(h0, 0)
            for ow in range(g.OW):
                w0 = ow * g.SW - g.PW
                w1 = min(w0 + g.KW, g.W)
                w0 = max(w0, 0)
                if divisor != 0:
                    v = gy[(od * g.OH + oh) * g.OW + ow] / <floating>divisor
                else:
                    v = gy[(od * g.OH + oh) * g.OW + ow] / <floating>(cnt[od] * ch[oh] * cw[ow])
                for id_ in range(d0, d1):
                    for ih in range(h0, h1):
                        for iw in range((id_ * g.H + ih) * g.W + w0,
                                        (id_ * g.H + ih) * g.W + w1):
                            gx[iw] += v


cdef object avg_count_array(PoolGeom* g, bint count_include_pad):
    cnt_arr = np.empty(g.OD + g.OH + g.OW, np.float64)
    cdef double[::1] cnt = cnt_arr
    if g.OD + g.OH + g.OW:
        avg_counts(g.OD, g.D, g.KD, g.SD, g.PD, count_include_pad, &cnt[0])
        avg_counts(g.OH, g.H, g.KH, g.SH, g.PH, count_include_pad, &cnt[g.OD])
        avg_counts(g.OW, g.W, g.KW, g.SW, g.PW, count_include_pad, &cnt[g.OD + g.OH])
    return cnt_arr


def avg_pool_forward(const floating[:, ::1] x, floating[:, ::1] y, tuple geom,
                     bint count_include_pad, Py_ssize_t divisor_override,
                     Py_ssize_t n_threads):
    """Average pooling of ``x`` (planes, D*H*W) into ``y`` (planes, OD*OH*OW) with
    PyTorch's divisors; ``divisor_override`` 0 means none.  Dilation must be 1."""
    cdef PoolGeom g = make_pool_geom(geom)
    cdef Py_ssize_t P = x.shape[0], pl
    check_planes("x", x.shape[0], x.shape[1], P, g.plane)
    check_planes("y", y.shape[0], y.shape[1], P, g.out_plane)
    if P == 0 or g.out_plane == 0:
        return
    cdef double[::1] cnt = avg_count_array(&g, count_include_pad)
    cdef double divisor = <double>divisor_override
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    with nogil:
        for pl in prange(P, schedule="static", num_threads=n_threads):
            avg_pool_plane(xp + pl * g.plane, yp + pl * g.out_plane, &g, &cnt[0], divisor)


def avg_pool_backward(const floating[:, ::1] gy, floating[:, ::1] gx, tuple geom,
                      bint count_include_pad, Py_ssize_t divisor_override,
                      Py_ssize_t n_threads):
    """Gradient of :func:`avg_pool_forward`: ``gx`` (planes, D*H*W) is overwritten."""
    cdef PoolGeom g = make_pool_geom(geom)
    cdef Py_ssize_t P = gy.shape[0], pl
    check_planes("gy", gy.shape[0], gy.shape[1], P, g.out_plane)
    check_planes("gx", gx.shape[0], gx.shape[1], P, g.plane)
    if P == 0 or g.plane == 0:
        return
    cdef double[::1] cnt = avg_count_array(&g, count_include_pad)
    cdef double divisor = <double>divisor_override
    cdef const floating* gyp = &gy[0, 0]
    cdef floating* gxp = &gx[0, 0]
    with nogil:
        for pl in prange(P, schedule="static", num_threads=n_threads):
            avg_unpool_plane(gyp + pl * g.out_plane, gxp + pl * g.plane, &g, &cnt[0],
                             divisor)


# ---------------------------------------------------------------------------------------
# Adaptive average pooling
# ---------------------------------------------------------------------------------------

cdef object adaptive_ranges(Py_ssize_t n_out, Py_ssize_t n_in):
    """int64 (n_out, 2): [floor(o * in / out), ceil((o + 1) * in / out)) per output."""
    r = np.empty((n_out, 2), np.int64)
    cdef int64_t[:, ::1] rv = r
    cdef Py_ssize_t o
    for o in range(n_out):
        rv[o, 0] = (o * n_in) // n_out
        rv[o, 1] = ((o + 1) * n_in + n_out - 1) // n_out
    return r


cdef inline double row_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """sum(a[:n]) in double, with eight independent partial sums (so the additions
    pipeline and vectorise; a single running sum waits on every add)."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
        i += 8
    while i < n:
        s0 += a[i]
        i += 1
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


cdef void adaptive_plane(const floating* x, floating* y, const PoolGeom* g,
                         const int64_t* rd, const int64_t* rh, const int64_t* rw,
                         bint backward) noexcept nogil:
    """One plane: forward y = window means of x (summed in double); backward (x = gy,
    y = gx) scatters gy / count over each window."""
    cdef Py_ssize_t od, oh, ow, id_, ih, iw, o
    cdef double s, count
    cdef floating v
    if backward:
        memset(y, 0, g.plane * sizeof(floating))
    for od in range(g.OD):
        for oh in range(g.OH):
            for ow in range(g.OW):
                o = (od * g.OH + oh) * g.OW + ow
                count = <double>((rd[2 * od + 1] - rd[2 * od]) * (rh[2 * oh + 1] - rh[2 * oh])
                                 * (rw[2 * ow + 1] - rw[2 * ow]))
                if backward:
                    v = x[o] / <floating>count
                    for id_ in range(rd[2 * od], rd[2 * od + 1]):
                        for ih in range(rh[2 * oh], rh[2 * oh + 1]):
                            for iw in range((id_ * g.H + ih) * g.W + rw[2 * ow],
                                            (id_ * g.H + ih) * g.W + rw[2 * ow + 1]):
                                y[iw] += v
                else:
                    s = 0
                    for id_ in range(rd[2 * od], rd[2 * od + 1]):
                        for ih in range(rh[2 * oh], rh[2 * oh + 1]):
                            s += row_sum(x + (id_ * g.H + ih) * g.W + rw[2 * ow],
                                         rw[2 * ow + 1] - rw[2 * ow])
                    y[o] = <floating>(s / count)


cdef adaptive_run(const floating[:, ::1] a, floating[:, ::1] b, PoolGeom g, bint backward,
                  Py_ssize_t n_threads):
    cdef Py_ssize_t P = a.shape[0], pl
    cdef Py_ssize_t n_a = g.plane if not backward else g.out_plane
    cdef Py_ssize_t n_b = g.out_plane if not backward else g.plane
    check_planes("gy" if backward else "x", a.shape[0], a.shape[1], P, n_a)
    check_planes("gx" if backward else "y", b.shape[0], b.shape[1], P, n_b)
    if P == 0 or n_b == 0:
        return
    if n_a == 0:                      # empty output_size: the gradient is 0
        b[:, :] = 0
        return
    cdef int64_t[:, ::1] rd = adaptive_ranges(g.OD, g.D)
    cdef int64_t[:, ::1] rh = adaptive_ranges(g.OH, g.H)
    cdef int64_t[:, ::1] rw = adaptive_ranges(g.OW, g.W)
    cdef const floating* ap = &a[0, 0]
    cdef floating* bp = &b[0, 0]
    with nogil:
        for pl in prange(P, schedule="static", num_threads=n_threads):
            adaptive_plane(ap + pl * n_a, bp + pl * n_b, &g, &rd[0, 0], &rh[0, 0], &rw[0, 0],
                           backward)


def adaptive_avg_pool_forward(const floating[:, ::1] x, floating[:, ::1] y, tuple sizes,
                              Py_ssize_t n_threads):
    """Adaptive average pooling of ``x`` (planes, D*H*W) into ``y`` (planes, OD*OH*OW);
    ``sizes`` = (D, H, W, OD, OH, OW), every output size >= 1."""
    adaptive_run(x, y, make_shape_geom(sizes), False, n_threads)


def adaptive_avg_pool_backward(const floating[:, ::1] gy, floating[:, ::1] gx, tuple sizes,
                               Py_ssize_t n_threads):
    """Gradient of :func:`adaptive_avg_pool_forward`: ``gx`` is overwritten."""
    adaptive_run(gy, gx, make_shape_geom(sizes), True, n_threads)


cdef void adaptive_max_plane(const floating* x, floating* y, int64_t* idx, const PoolGeom* g,
                             const int64_t* rd, const int64_t* rh,
                             const int64_t* rw) noexcept nogil:
    """One plane: y = the maximum of each adaptive window of x, scanned in (d, h, w)
    order (the first maximum wins, a NaN always wins: PyTorch's rule); idx = its flat
    plane index (the window's first element for an all -inf window)."""
    cdef Py_ssize_t od, oh, ow, id_, ih, iw, o, row, best
    cdef floating m, v
    for od in range(g.OD):
        for oh in range(g.OH):
            for ow in range(g.OW):
                o = (od * g.OH + oh) * g.OW + ow
                m = -INFINITY
                best = (rd[2 * od] * g.H + rh[2 * oh]) * g.W + rw[2 * ow]
                for id_ in range(rd[2 * od], rd[2 * od + 1]):
                    for ih in range(rh[2 * oh], rh[2 * oh + 1]):
                        row = (id_ * g.H + ih) * g.W
                        for iw in range(row + rw[2 * ow], row + rw[2 * ow + 1]):
                            v = x[iw]
                            if v > m or v != v:
                                m = v
                                best = iw
                y[o] = m
                idx[o] = best


def adaptive_max_pool_forward(const floating[:, ::1] x, floating[:, ::1] y,
                              int64_t[:, ::1] idx, tuple sizes, Py_ssize_t n_threads):
    """Adaptive max pooling of ``x`` (planes, D*H*W) into ``y`` and the int64 plane
    indices ``idx`` (planes, OD*OH*OW); windows [floor(o * in / out),
    ceil((o + 1) * in / out)).  NumPy equivalent of one output: ``window.max()`` with
    NaN propagation and ``argmax`` of the first maximum."""
    cdef PoolGeom g = make_shape_geom(sizes)
    cdef Py_ssize_t P = x.shape[0], pl
    check_planes("x", x.shape[0], x.shape[1], P, g.plane)
    check_planes("y", y.shape[0], y.shape[1], P, g.out_plane)
    check_planes("idx", idx.shape[0], idx.shape[1], P, g.out_plane)
    if P == 0 or g.out_plane == 0:
        return
    cdef int64_t[:, ::1] rd = adaptive_ranges(g.OD, g.D)
    cdef int64_t[:, ::1] rh = adaptive_ranges(g.OH, g.H)
    cdef int64_t[:, ::1] rw = adaptive_ranges(g.OW, g.W)
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef int64_t* ip = &idx[0, 0]
    with nogil:
        for pl in prange(P, schedule="static", num_threads=n_threads):
            adaptive_max_plane(xp + pl * g.plane, yp + pl * g.out_plane,
                               ip + pl * g.out_plane, &g, &rd[0, 0], &rh[0, 0], &rw[0, 0])


# ---------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------

cdef inline void relu_block(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = 0 if v < 0 else v          # NaN and -0.0 pass through, as in PyTorch


cdef inline void relu_grad_block(const floating* gy, const floating* out, floating* gx,
                                 Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = 0 if out[i] <= 0 else gy[i]   # PyTorch's threshold_backward


cdef int check_flat(str op, cnp.ndarray x, cnp.ndarray out) except -1:
    """A ReLU kernel's input ``x`` and its output ``out``: C-contiguous, native float32
    or float64 (both the same), of one size, ``out`` writeable."""
    cdef int t = cnp.PyArray_TYPE(x)
    if t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE:
        raise TypeError(f"{op} kernel: float32 or float64 arrays, got {x.dtype}")
    if (cnp.PyArray_TYPE(out) != t or not cnp.PyArray_IS_C_CONTIGUOUS(x)
            or not cnp.PyArray_IS_C_CONTIGUOUS(out) or not cnp.PyArray_ISNOTSWAPPED(x)
            or not cnp.PyArray_ISNOTSWAPPED(out)
            or cnp.PyArray_SIZE(x) != cnp.PyArray_SIZE(out)):
        raise ValueError(f"{op} kernel: arrays must be C-contiguous, of one native dtype "
                         f"and size; got {x.dtype.str} {(<object> x).shape} and "
                         f"{out.dtype.str} {(<object> out).shape}")
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError(f"{op} kernel: the output array is read-only")
    return 0


cdef void relu_flat(const floating* x, floating* y, Py_ssize_t n,
                    Py_ssize_t n_threads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK, b
    if n_threads == 1:           # no parallel region for a serial call (small ops)
        relu_block(x, y, n)
        return
    for b in prange(nb, schedule="static", num_threads=n_threads):
        relu_block(x + b * BLOCK, y + b * BLOCK, min(BLOCK, n - b * BLOCK))


cdef void relu_grad_flat(const floating* gy, const floating* out, floating* gx,
                         Py_ssize_t n, Py_ssize_t n_threads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK, b
    if n_threads == 1:
        relu_grad_block(gy, out, gx, n)
        return
    for b in prange(nb, schedule="static", num_threads=n_threads):
        relu_grad_block(gy + b * BLOCK, out + b * BLOCK, gx + b * BLOCK,
                        min(BLOCK, n - b * BLOCK))


def relu_forward(cnp.ndarray x, cnp.ndarray y, Py_ssize_t n_threads):
    """y = max(x, 0) element-wise (NaN and -0.0 pass through), arrays of any shape.

    Takes ndarrays rather than typed memoryviews: a small ReLU's cost is its call
    overhead, and acquiring two buffers costs as much as the arithmetic.
    """
    check_flat("relu", x, y)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        with nogil:
            relu_flat(<const float*> cnp.PyArray_DATA(x), <float*> cnp.PyArray_DATA(y), n,
                      n_threads)
    else:
        with nogil:
            relu_flat(<const double*> cnp.PyArray_DATA(x), <double*> cnp.PyArray_DATA(y), n,
                      n_threads)


def relu_backward(cnp.ndarray gy, cnp.ndarray out, cnp.ndarray gx, Py_ssize_t n_threads):
    """gx = gy where out > 0 (or NaN), else 0: the ReLU gradient from its output."""
    check_flat("relu", gy, gx)
    check_flat("relu", out, gx)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(gy)
    if cnp.PyArray_TYPE(gy) == cnp.NPY_FLOAT:
        with nogil:
            relu_grad_flat(<const float*> cnp.PyArray_DATA(gy),
                           <const float*> cnp.PyArray_DATA(out),
                           <float*> cnp.PyArray_DATA(gx), n, n_threads)
    else:
        with nogil:
            relu_grad_flat(<const double*> cnp.PyArray_DATA(gy),
                           <const double*> cnp.PyArray_DATA(out),
                           <double*> cnp.PyArray_DATA(gx), n, n_threads)


# ---------------------------------------------------------------------------------------
# Pad
# ---------------------------------------------------------------------------------------

cdef inline void pad_gather(const floating* xr, floating* y, const int64_t* m3,
                            Py_ssize_t o_lo, Py_ssize_t o_hi, Py_ssize_t B,
                            floating value) noexcept nogil:
    """y[o3, b] = xr[m3[o3], b] or ``value`` where m3[o3] == -1, for o3 in [o_lo, o_hi)."""
    cdef Py_ssize_t o3, b
    if B == 1:
        for o3 in range(o_lo, o_hi):
            y[o3] = xr[m3[o3]] if m3[o3] >= 0 else value
    else:
        for o3 in range(o_lo, o_hi):
            if m3[o3] >= 0:
                for b in range(B):
                    y[o3 * B + b] = xr[m3[o3] * B + b]
            else:
                for b in range(B):
                    y[o3 * B + b] = value


cdef void pad_row(const floating* x, floating* y, Py_ssize_t s1, Py_ssize_t s2,
                  const int64_t* m3, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t I2,
                  Py_ssize_t I3, Py_ssize_t O3, Py_ssize_t B, floating value) noexcept nogil:
    """One output row y[o3, b] = x[s1, s2, m3[o3], b] (x: one input plane (I1, I2, I3, B)),
    or ``value`` where a source index is -1.  On [r0, r1) the map is a run of consecutive
    input indices, copied straight."""
    cdef Py_ssize_t o3
    cdef const floating* xr
    if s1 < 0 or s2 < 0:
        for o3 in range(O3 * B):
            y[o3] = value
        return
    xr = x + (s1 * I2 + s2) * I3 * B
    pad_gather(xr, y, m3, 0, r0, B, value)
    if r1 > r0:
        memcpy(y + r0 * B, xr + m3[r0] * B, (r1 - r0) * B * sizeof(floating))
    pad_gather(xr, y, m3, r1, O3, B, value)


cdef int check_map(str name, object m, Py_ssize_t n_in) except -1:
    """Every entry of a pad map must be -1 or a valid input index."""
    if m.shape[0] and (np.min(m) < -1 or np.max(m) >= n_in):
        raise ValueError(f"pad kernel: {name} holds indices outside [-1, {n_in})")
    return 0


def pad_forward(const floating[:, ::1] x, floating[:, ::1] y, const int64_t[::1] m1,
                const int64_t[::1] m2, const int64_t[::1] m3, tuple in_size, Py_ssize_t B,
                double value, Py_ssize_t n_threads):
    """Gather-pad three consecutive dims: x (P, I1*I2*I3*B) -> y (P, O1*O2*O3*B) with
    ``y[p, o1, o2, o3, b] = x[p, m1[o1], m2[o2], m3[o3], b]``, or ``value`` where any
    map holds -1 (``PadParams.source_map``).  ``in_size`` = (I1, I2, I3)."""
    cdef Py_ssize_t I1, I2, I3
    I1, I2, I3 = in_size
    cdef Py_ssize_t P = y.shape[0], O1 = m1.shape[0], O2 = m2.shape[0], O3 = m3.shape[0]
    cdef Py_ssize_t r, p, o1, o2, rows = P * O1 * O2
    check_planes("x", x.shape[0], x.shape[1], P, I1 * I2 * I3 * B)
    check_planes("y", y.shape[0], y.shape[1], P, O1 * O2 * O3 * B)
    check_map("m1", m1, I1)
    check_map("m2", m2, I2)
    check_map("m3", m3, I3)
    if rows == 0 or O3 * B == 0:
        return
    # The longest run of consecutive source indices in m3 (the interior of the row).
    cdef Py_ssize_t o = 0, e, r0 = 0, r1 = 0
    while o < O3:
        if m3[o] < 0:
            o += 1
            continue
        e = o + 1
        while e < O3 and m3[e] == m3[e - 1] + 1:
            e += 1
        if e - o > r1 - r0:
            r0, r1 = o, e
        o = e
    cdef const floating* xp = NULL
    if x.shape[1]:
        xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef floating v = <floating>value
    with nogil:
        for r in prange(rows, schedule="static", num_threads=n_threads):
            p = r // (O1 * O2)
            o1 = (r // O2) % O1
            o2 = r % O2
            pad_row(xp + p * I1 * I2 * I3 * B, yp + r * O3 * B, m1[o1], m2[o2], &m3[0],
                    r0, r1, I2, I3, O3, B, v)


cdef void unpad_row(const floating* gy, floating* gx, Py_ssize_t i1, Py_ssize_t i2,
                    const int64_t* p1, const int64_t* s1, const int64_t* p2,
                    const int64_t* s2, const int64_t* p3, const int64_t* s3,
                    Py_ssize_t O2, Py_ssize_t O3, Py_ssize_t I3, Py_ssize_t B) noexcept nogil:
    """One gradient row gx[i3, b] (of plane gx, i1, i2) = the sum of gy[o1, o2, o3, b]
    (gy: one output plane (O1, O2, O3, B)) over the output indices that read (i1, i2, i3),
    visited in increasing order."""
    cdef Py_ssize_t i3, j1, j2, j3, b
    cdef const floating* src
    cdef floating* dst
    memset(gx, 0, I3 * B * sizeof(floating))
    for j1 in range(p1[i1], p1[i1 + 1]):
        for j2 in range(p2[i2], p2[i2 + 1]):
            for i3 in range(I3):
                dst = gx + i3 * B
                for j3 in range(p3[i3], p3[i3 + 1]):
                    src = gy + ((s1[j1] * O2 + s2[j2]) * O3 + s3[j3]) * B
                    for b in range(B):
                        dst[b] += src[b]


cdef int check_csr(str name, object ptr, object src, Py_ssize_t n_in,
                   Py_ssize_t n_out) except -1:
    """A CSR preimage: ptr (n_in + 1) non-decreasing from 0 to len(src); src in [0, n_out)."""
    if (ptr.shape[0] != n_in + 1 or ptr[0] != 0 or ptr[n_in] != src.shape[0]
            or np.any(np.diff(ptr) < 0)
            or (src.shape[0] and (np.min(src) < 0 or np.max(src) >= n_out))):
        raise ValueError(f"pad kernel: {name} is not a preimage of {n_in} inputs in "
                         f"{n_out} outputs")
    return 0


def pad_backward(const floating[:, ::1] gy, floating[:, ::1] gx,
                 const int64_t[::1] ptr1, const int64_t[::1] src1,
                 const int64_t[::1] ptr2, const int64_t[::1] src2,
                 const int64_t[::1] ptr3, const int64_t[::1] src3,
                 tuple out_size, Py_ssize_t B, Py_ssize_t n_threads):
    """Gradient of :func:`pad_forward` as a gather: gy (P, O1*O2*O3*B) -> gx
    (P, I1*I2*I3*B), where input index i of dim k is read by the output indices
    ``src_k[ptr_k[i]:ptr_k[i + 1]]`` (increasing).  Reflect, replicate and circular
    padding read an input element from several outputs; their gradients are summed,
    always in the same order, with no atomics.  ``out_size`` = (O1, O2, O3)."""
    cdef Py_ssize_t O1, O2, O3
    O1, O2, O3 = out_size
    cdef Py_ssize_t I1 = ptr1.shape[0] - 1, I2 = ptr2.shape[0] - 1, I3 = ptr3.shape[0] - 1
    cdef Py_ssize_t P = gx.shape[0], r, p, i1, i2, rows
    check_csr("dim 1", np.asarray(ptr1), np.asarray(src1), I1, O1)
    check_csr("dim 2", np.asarray(ptr2), np.asarray(src2), I2, O2)
    check_csr("dim 3", np.asarray(ptr3), np.asarray(src3), I3, O3)
    check_planes("gy", gy.shape[0], gy.shape[1], P, O1 * O2 * O3 * B)
    check_planes("gx", gx.shape[0], gx.shape[1], P, I1 * I2 * I3 * B)
    rows = P * I1 * I2
    if rows == 0 or I3 * B == 0:
        return
    cdef const floating* gyp = NULL
    if gy.shape[1]:
        gyp = &gy[0, 0]
    cdef floating* gxp = &gx[0, 0]
    # Empty src arrays have no element to point at; their loops never read them.
    cdef const int64_t* s1 = &src1[0] if src1.shape[0] else NULL
    cdef const int64_t* s2 = &src2[0] if src2.shape[0] else NULL
    cdef const int64_t* s3 = &src3[0] if src3.shape[0] else NULL
    with nogil:
        for r in prange(rows, schedule="static", num_threads=n_threads):
            p = r // (I1 * I2)
            i1 = (r // I2) % I1
            i2 = r % I2
            unpad_row(gyp + p * O1 * O2 * O3 * B, gxp + r * I3 * B, i1, i2,
                      &ptr1[0], s1, &ptr2[0], s2, &ptr3[0], s3, O2, O3, I3, B)
