"""Direct-loop convolution kernels: forward, input gradient, weight gradient.

No column matrix and no GEMM: each thread owns whole output rows and runs, per kernel
tap, a unit-stride "axpy" over the row that the compiler vectorises (with AVX2+FMA in the
``cyconv._ext.avx2`` build).  This is the fast path where a GEMM has nothing to reuse:
depthwise and thin-group convolutions, and very small channel counts.

Every array is C-contiguous and every shape already checked (``cyconv._params``).

Notes
-----
For output row (n, k, od, oh) and tap (c, kd, kh, kw) the forward pass adds
``w[k, c, kd, kh, kw] * x[n, c, idd, ih, ow*SW + kw*DW - PW]`` over the ``ow`` for which
the input column is inside the image (``_geom.valid_range``), with
``idd = od*SD - PD + kd*DD`` and ``ih = oh*SH - PH + kh*DH``; taps whose row falls in the
padding contribute nothing.  The input gradient is the same sum gathered from the other
side (each thread owns input rows: no atomics, no races), and the weight gradient keeps
one row of partial sums per tap, summed once at the end, so every weight element is
computed by one thread in a fixed order: bit-identical for any thread count.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from cyconv._ext._types cimport floating
from cyconv._ext._geom cimport Geom, make_geom, valid_range


def conv_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                 floating[:, ::1] y, tuple geom, Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """y[n] = conv(x[n], w) + b, one (sample, output channel) plane per work item.

    x (N, C_img * D*H*W), w (C_col, CKK), b (C_col,) or empty, y (N, C_col * P).
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t N = x.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t it, n, k, gi, od, oh, ow, c, kd, kh, kw, idd, ih, off, lo, hi
    cdef const floating* xg
    cdef const floating* wk
    cdef const floating* xrow
    cdef floating* yrow
    cdef floating bv, wv
    for it in prange(N * g.C_col, nogil=True, num_threads=n_threads, schedule="static"):
        n = it // g.C_col
        k = it % g.C_col
        gi = k // g.Kg
        xg = &x[n, 0] + gi * g.Cg * g.img_plane
        wk = &w[k, 0]
        bv = b[k] if has_bias else 0
        for od in range(g.OD):
            for oh in range(g.OH):
                yrow = &y[n, 0] + k * g.P + (od * g.OH + oh) * g.OW
                for ow in range(g.OW):
                    yrow[ow] = bv
                for c in range(g.Cg):
                    for kd in range(g.KD):
                        idd = od * g.SD - g.PD + kd * g.DD
                        if idd < 0 or idd >= g.D:
                            continue
                        for kh in range(g.KH):
                            ih = oh * g.SH - g.PH + kh * g.DH
                            if ih < 0 or ih >= g.H:
                                continue
                            xrow = xg + ((c * g.D + idd) * g.H + ih) * g.W
                            for kw in range(g.KW):
                                wv = wk[((c * g.KD + kd) * g.KH + kh) * g.KW + kw]
                                off = kw * g.DW - g.PW
                                valid_range(off, g.SW, g.W, g.OW, &lo, &hi)
                                if g.SW == 1:
                                    for ow in range(lo, hi):
                                        yrow[ow] = yrow[ow] + wv * xrow[ow + off]
                                else:
                                    for ow in range(lo, hi):
                                        yrow[ow] = yrow[ow] + wv * xrow[ow * g.SW + off]


def conv_backward_input(const floating[:, ::1] gy, const floating[:, ::1] w,
                        const floating[::1] b, floating[:, ::1] gx, tuple geom,
                        Py_ssize_t n_threads, Py_ssize_t ws_bytes):
    """gx[n] = conv_input(gy[n], w) (+ b), one (sample, image channel) plane per item.

    gy (N, C_col * P), w (C_col, CKK), b (C_img,) or empty, gx (N, C_img * D*H*W).
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t N = gy.shape[0]
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t it, n, c, gi, cl, idd, ih, iw, k, kd, kh, kw, t, od, oh, ow, off, lo, hi
    cdef floating* gxrow
    cdef const floating* gyrow
    cdef const floating* wk
    cdef floating bv, wv
    for it in prange(N * g.C_img, nogil=True, num_threads=n_threads, schedule="static"):
        n = it // g.C_img
        c = it % g.C_img
        gi = c // g.Cg
        cl = c % g.Cg
        bv = b[c] if has_bias else 0
        for idd in range(g.D):
            for ih in range(g.H):
                gxrow = &gx[n, 0] + ((c * g.D + idd) * g.H + ih) * g.W
                for iw in range(g.W):
                    gxrow[iw] = bv
                for k in range(gi * g.Kg, (gi + 1) * g.Kg):
                    wk = &w[k, 0] + cl * g.KK
                    for kd in range(g.KD):
                        t = idd + g.PD - kd * g.DD
                        if t < 0 or t % g.SD != 0 or t // g.SD >= g.OD:
                            continue
                        od = t // g.SD
                        for kh in range(g.KH):
                            t = ih + g.PH - kh * g.DH
                            if t < 0 or t % g.SH != 0 or t // g.SH >= g.OH:
                                continue
                            oh = t // g.SH
                            gyrow = &gy[n, 0] + k * g.P + (od * g.OH + oh) * g.OW
                            for kw in range(g.KW):
                                wv = wk[(kd * g.KH + kh) * g.KW + kw]
                                off = kw * g.DW - g.PW
                                valid_range(off, g.SW, g.W, g.OW, &lo, &hi)
                                if g.SW == 1:
                                    for ow in range(lo, hi):
                                        gxrow[ow + off] = gxrow[ow + off] + wv * gyrow[ow]
                                else:
                                    for ow in range(lo, hi):
                                        gxrow[ow * g.SW + off] = (gxrow[ow * g.SW + off]
                                                                  + wv * gyrow[ow])


def conv_backward_weight(const floating[:, ::1] x, const floating[:, ::1] gy,
                         floating[:, ::1] gw, tuple geom, Py_ssize_t n_threads,
                         Py_ssize_t ws_bytes):
    """gw[k, c] = sum over samples and pixels, one (output, input channel) pair per item.

    x (N, C_img * D*H*W), gy (N, C_col * P), gw (C_col, CKK) overwritten.
    """
    cdef Geom g = make_geom(geom)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t per_thread = g.KK * g.OW
    cdef floating* scratch = <floating*> malloc(n_threads * per_thread * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("cyconv: could not allocate the weight-gradient workspace")
    cdef Py_ssize_t it, k, cl, gi, n, od, oh, ow, kd, kh, kw, idd, ih, off, lo, hi, tap
    cdef floating* acc
    cdef floating* a
    cdef const floating* gyrow
    cdef const floating* xrow
    cdef const floating* xc
    cdef floating s
    try:
        with nogil, parallel(num_threads=n_threads):
            acc = scratch + threadid() * per_thread
            for it in prange(g.C_col * g.Cg, schedule="static"):
                k = it // g.Cg
                cl = it % g.Cg
                gi = k // g.Kg
                memset(acc, 0, per_thread * sizeof(floating))
                for n in range(N):
                    xc = &x[n, 0] + (gi * g.Cg + cl) * g.img_plane
                    for od in range(g.OD):
                        for oh in range(g.OH):
                            gyrow = &gy[n, 0] + k * g.P + (od * g.OH + oh) * g.OW
                            for kd in range(g.KD):
                                idd = od * g.SD - g.PD + kd * g.DD
                                if idd < 0 or idd >= g.D:
                                    continue
                                for kh in range(g.KH):
                                    ih = oh * g.SH - g.PH + kh * g.DH
                                    if ih < 0 or ih >= g.H:
                                        continue
                                    xrow = xc + (idd * g.H + ih) * g.W
                                    for kw in range(g.KW):
                                        a = acc + ((kd * g.KH + kh) * g.KW + kw) * g.OW
                                        off = kw * g.DW - g.PW
                                        valid_range(off, g.SW, g.W, g.OW, &lo, &hi)
                                        if g.SW == 1:
                                            for ow in range(lo, hi):
                                                a[ow] = a[ow] + gyrow[ow] * xrow[ow + off]
                                        else:
                                            for ow in range(lo, hi):
                                                a[ow] = a[ow] + gyrow[ow] * xrow[ow * g.SW + off]
                for tap in range(g.KK):
                    s = 0
                    a = acc + tap * g.OW
                    for ow in range(g.OW):
                        s = s + a[ow]
                    gw[k, cl * g.KK + tap] = s
    finally:
        free(scratch)
