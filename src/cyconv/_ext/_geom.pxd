# Convolution geometry in conv view, padded to three spatial dims (see
# cyconv._params.ConvParams.geometry).  Image side = conv input, column side = conv output.
cdef struct Geom:
    Py_ssize_t G, C_img, C_col          # groups, image channels, column channels
    Py_ssize_t D, H, W                  # image size
    Py_ssize_t OD, OH, OW               # column (output) size
    Py_ssize_t KD, KH, KW               # kernel
    Py_ssize_t SD, SH, SW               # stride
    Py_ssize_t PD, PH, PW               # padding before
    Py_ssize_t DD, DH, DW               # dilation
    Py_ssize_t Cg, Kg                   # image / column channels per group
    Py_ssize_t KK, CKK                  # taps per channel, rows of a group's column matrix
    Py_ssize_t img_plane, P             # D*H*W, OD*OH*OW


cdef inline Geom make_geom(tuple t) except *:
    cdef Geom g
    (g.G, g.C_img, g.C_col, g.D, g.H, g.W, g.OD, g.OH, g.OW, g.KD, g.KH, g.KW,
     g.SD, g.SH, g.SW, g.PD, g.PH, g.PW, g.DD, g.DH, g.DW) = t
    g.Cg = g.C_img // g.G
    g.Kg = g.C_col // g.G
    g.KK = g.KD * g.KH * g.KW
    g.CKK = g.Cg * g.KK
    g.img_plane = g.D * g.H * g.W
    g.P = g.OD * g.OH * g.OW
    return g


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline void valid_range(Py_ssize_t off, Py_ssize_t step, Py_ssize_t size,
                             Py_ssize_t n, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the j in [0, n) with 0 <= off + j * step < size (step > 0)."""
    cdef Py_ssize_t a = ceil_div(-off, step)
    cdef Py_ssize_t b = ceil_div(size - off, step)
    if a < 0:
        a = 0
    if a > n:
        a = n
    if b > n:
        b = n
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b
