"""Float64 reference implementations of convolution, written plainly for the tests.

Nothing here imports cyconv: every function is an independent statement of PyTorch's
semantics (cross-correlation, no kernel flip), so that a bug in the package cannot hide
behind the same bug in its oracle.  The fast functions loop over kernel taps in Python
and let NumPy do the batch x channel x pixel work as a matrix product; the ``*_naive``
functions loop over every output element and exist only to check the fast ones on tiny
shapes.

Conventions (PyTorch's)
-----------------------
- ``x``: ``(N, C_in, *in_size)``; convolution weights ``w``: ``(C_out, C_in/G, *kernel)``;
  transposed-convolution weights: ``(C_in, C_out/G, *kernel)``.
- ``padding`` is always a sequence of ``(before, after)`` pairs, one per spatial dim;
  :func:`padding_pairs` turns every user-facing form into that.
- Every result is float64, whatever the input dtype.

Notes
-----
For one spatial dim with stride ``s``, dilation ``d``, kernel tap ``t`` and padding
``(pb, pa)``, a convolution output pixel ``o`` reads padded input pixel ``o * s + t * d``,
that is input pixel ``o * s + t * d - pb``.  The output size is
``(in + pb + pa - d * (k - 1) - 1) // s + 1``.

A transposed convolution is the adjoint of that map: input pixel ``i`` scatters
``x[i] * w[t]`` into the uncropped output at ``i * s + t * d``; the result is then cropped
by ``pb`` at the front and cut to ``(in - 1) * s - pb - pa + d * (k - 1) + output_padding + 1``.
Equivalently (tinygrad's ``conv_transpose2d``) it is a stride-1 convolution, with dilation
``d``, of the input with ``s - 1`` zeros stuffed between pixels and padded by
``d * (k - 1) - pb`` before and ``d * (k - 1) - pa + output_padding`` after, using the
kernel flipped in space with its two channel axes swapped per group.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "padding_pairs", "same_pairs_tf", "conv_out_size", "conv_transpose_out_size",
    "conv", "conv_input_grad", "conv_weight_grad",
    "conv_transpose", "conv_transpose_zero_stuffed",
    "conv_transpose_input_grad", "conv_transpose_weight_grad",
    "conv_naive", "conv_transpose_naive",
]


# -- sizes and padding ----------------------------------------------------------------

def same_pairs_tf(in_size, kernel_size, stride, dilation):
    """TensorFlow's 'SAME' padding, as in ``GetWindowedOutputSizeVerbose``.

    output = ceil(in / stride);
    needed = max(0, (output - 1) * stride + effective_kernel - in);
    before = needed // 2, after = needed - before.
    """
    pairs = []
    for n, k, s, d in zip(in_size, kernel_size, stride, dilation):
        effective = (k - 1) * d + 1
        out = (n + s - 1) // s
        needed = max(0, (out - 1) * s + effective - n)
        pairs.append((needed // 2, needed - needed // 2))
    return tuple(pairs)


def _per_dim(value, nd):
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    value = tuple(int(v) for v in value)
    assert len(value) == nd, (value, nd)
    return value


def padding_pairs(padding, nd, in_size=None, kernel_size=None, stride=1, dilation=1):
    """Every padding form of the convolutions -> a tuple of ``nd`` (before, after) pairs.

    Forms: int; tuple of ints; tuple of (before, after) pairs; 'valid'; 'same' (which
    needs ``in_size``, ``kernel_size``, ``stride`` and ``dilation``).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return same_pairs_tf(in_size, kernel_size, _per_dim(stride, nd),
                                 _per_dim(dilation, nd))
        raise ValueError(padding)
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * nd
    pairs = []
    for p in padding:
        if isinstance(p, (int, np.integer)):
            pairs.append((int(p), int(p)))
        else:
            pb, pa = p
            pairs.append((int(pb), int(pa)))
    assert len(pairs) == nd, (padding, nd)
    return tuple(pairs)


def conv_out_size(in_size, kernel_size, stride, pairs, dilation):
    """Spatial output size of a convolution."""
    return tuple((n + pb + pa - d * (k - 1) - 1) // s + 1
                 for n, k, s, (pb, pa), d in zip(in_size, kernel_size, stride, pairs, dilation))


def conv_transpose_out_size(in_size, kernel_size, stride, pairs, dilation, output_padding):
    """Spatial output size of a transposed convolution."""
    return tuple((n - 1) * s - pb - pa + d * (k - 1) + op + 1
                 for n, k, s, (pb, pa), d, op in zip(in_size, kernel_size, stride, pairs,
                                                     dilation, output_padding))


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _taps(kernel_size):
    return itertools.product(*(range(k) for k in kernel_size))


def _window(taps, stride, dilation, out_size):
    """Index of the padded-input pixels that kernel tap ``taps`` reads, per output pixel."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                 for t, s, d, o in zip(taps, stride, dilation, out_size))


# -- convolution and its gradients ------------------------------------------------------

def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """N-D convolution (cross-correlation), batched input ``(N, C_in, *in_size)``.

    ``padding`` may be any form :func:`padding_pairs` accepts.  Returns float64
    ``(N, C_out, *out_size)``.
    """
    x, w = _f64(x), _f64(w)
    nd = x.ndim - 2
    N, C_in = x.shape[:2]
    C_out, Cg = w.shape[:2]
    G = groups
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    pairs = padding_pairs(padding, nd, x.shape[2:], kernel_size, stride, dilation)
    assert C_in == Cg * G and C_out % G == 0
    Kg = C_out // G
    out_size = conv_out_size(x.shape[2:], kernel_size, stride, pairs, dilation)
    xp = np.pad(x, ((0, 0), (0, 0)) + pairs)
    xp = xp.reshape((N, G, Cg) + xp.shape[2:])
    wg = w.reshape((G, Kg, Cg) + kernel_size)
    P = math.prod(out_size)
    y = np.zeros((N, G, Kg, P))
    for taps in _taps(kernel_size):
        cols = xp[(Ellipsis,) + _window(taps, stride, dilation, out_size)]
        cols = np.ascontiguousarray(cols).reshape(N, G, Cg, P)
        # (G, Kg, Cg) @ (N, G, Cg, P) -> (N, G, Kg, P)
        y += wg[(Ellipsis,) + taps] @ cols
    y = y.reshape((N, C_out) + out_size)
    if b is not None:
        y += _f64(b).reshape((1, C_out) + (1,) * nd)
    return y


def conv_input_grad(input_size, w, gy, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv` with respect to its input, for a batched ``input_size``.

    The adjoint of the gather in :func:`conv`: every tap scatters ``w[tap]^T @ gy`` back
    onto the padded input pixels it read; the padding is then cropped away.
    """
    w, gy = _f64(w), _f64(gy)
    nd = len(input_size) - 2
    N, C_in = input_size[:2]
    in_size = tuple(input_size[2:])
    C_out, Cg = w.shape[:2]
    G = groups
    Kg = C_out // G
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    pairs = padding_pairs(padding, nd, in_size, kernel_size, stride, dilation)
    out_size = gy.shape[2:]
    padded = tuple(n + pb + pa for n, (pb, pa) in zip(in_size, pairs))
    gxp = np.zeros((N, G, Cg) + padded)
    gyg = gy.reshape(N, G, Kg, math.prod(out_size))
    wg = w.reshape((G, Kg, Cg) + kernel_size)
    for taps in _taps(kernel_size):
        # (G, Cg, Kg) @ (N, G, Kg, P) -> (N, G, Cg, P)
        contrib = np.swapaxes(wg[(Ellipsis,) + taps], -1, -2) @ gyg
        gxp[(Ellipsis,) + _window(taps, stride, dilation, out_size)] += contrib.reshape(
            (N, G, Cg) + tuple(out_size))
    crop = tuple(slice(pb, pb + n) for n, (pb, _) in zip(in_size, pairs))
    return gxp[(Ellipsis,) + crop].reshape((N, C_in) + in_size)


def conv_weight_grad(x, weight_size, gy, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv` with respect to its weight ``(C_out, C_in/G, *kernel)``.

    ``gw[k, c, tap] = sum over n and output pixels o of gy[n, k, o] * xpad[n, c, o*s + tap*d]``
    (within each group).  The output size is read from ``gy``.
    """
    x, gy = _f64(x), _f64(gy)
    nd = x.ndim - 2
    N = x.shape[0]
    C_out, Cg = weight_size[:2]
    kernel_size = tuple(weight_size[2:])
    G = groups
    Kg = C_out // G
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    pairs = padding_pairs(padding, nd, x.shape[2:], kernel_size, stride, dilation)
    out_size = gy.shape[2:]
    P = math.prod(out_size)
    xp = np.pad(x, ((0, 0), (0, 0)) + pairs).reshape((N, G, Cg) + tuple(
        n + pb + pa for n, (pb, pa) in zip(x.shape[2:], pairs)))
    gyg = gy.reshape(N, G, Kg, P)
    gw = np.zeros((G, Kg, Cg) + kernel_size)
    for taps in _taps(kernel_size):
        cols = xp[(Ellipsis,) + _window(taps, stride, dilation, out_size)]
        cols = np.ascontiguousarray(cols).reshape(N, G, Cg, P)
        # sum_n (N, G, Kg, P) @ (N, G, P, Cg) -> (G, Kg, Cg)
        gw[(Ellipsis,) + taps] = (gyg @ np.swapaxes(cols, -1, -2)).sum(axis=0)
    return gw.reshape((C_out, Cg) + kernel_size)


# -- transposed convolution --------------------------------------------------------------

def conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1):
    """N-D transposed convolution, written as a scatter over kernel taps.

    ``x``: ``(N, C_in, *in_size)``, ``w``: ``(C_in, C_out/G, *kernel)``.  ``padding``: an
    int, per-dim ints or (before, after) pairs.  Input pixel ``i`` adds ``x[i] * w[tap]``
    to the uncropped output at ``i * stride + tap * dilation``; the output is the window
    starting at ``pad_before`` of length given by :func:`conv_transpose_out_size`
    (positions past the uncropped output, reachable through ``output_padding``, receive
    nothing but the bias).
    """
    x, w = _f64(x), _f64(w)
    nd = x.ndim - 2
    N, C_in = x.shape[:2]
    in_size = x.shape[2:]
    G = groups
    Cg_in = C_in // G
    Cg_out = w.shape[1]
    C_out = Cg_out * G
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    output_padding = _per_dim(output_padding, nd)
    pairs = padding_pairs(padding, nd)
    out_size = conv_transpose_out_size(in_size, kernel_size, stride, pairs, dilation,
                                       output_padding)
    full = tuple(max((n - 1) * s + d * (k - 1) + 1, pb + o)
                 for n, s, d, k, (pb, _), o in zip(in_size, stride, dilation, kernel_size,
                                                   pairs, out_size))
    yfull = np.zeros((N, G, Cg_out) + full)
    P = math.prod(in_size)
    xg = x.reshape(N, G, Cg_in, P)
    wg = w.reshape((G, Cg_in, Cg_out) + kernel_size)
    for taps in _taps(kernel_size):
        # (G, Cg_out, Cg_in) @ (N, G, Cg_in, P) -> (N, G, Cg_out, P)
        contrib = np.swapaxes(wg[(Ellipsis,) + taps], -1, -2) @ xg
        yfull[(Ellipsis,) + _window(taps, stride, dilation, in_size)] += contrib.reshape(
            (N, G, Cg_out) + tuple(in_size))
    crop = tuple(slice(pb, pb + o) for (pb, _), o in zip(pairs, out_size))
    y = yfull[(Ellipsis,) + crop].reshape((N, C_out) + out_size)
    if b is not None:
        y = y + _f64(b).reshape((1, C_out) + (1,) * nd)
    return y


def conv_transpose_zero_stuffed(x, w, b=None, stride=1, padding=0, output_padding=0,
                                groups=1, dilation=1):
    """The same transposed convolution, as a convolution of a zero-stuffed input.

    Stuff ``stride - 1`` zeros between input pixels, pad by ``d*(k-1) - pb`` before and
    ``d*(k-1) - pa + output_padding`` after (a negative amount crops), then run a
    stride-1 convolution with dilation ``d`` and the kernel flipped in space with its
    channel axes swapped per group: ``(C_in, C_out/G, *k) -> (C_out, C_in/G, *k)``.
    """
    x, w = _f64(x), _f64(w)
    nd = x.ndim - 2
    N, C_in = x.shape[:2]
    in_size = x.shape[2:]
    G = groups
    Cg_in = C_in // G
    Cg_out = w.shape[1]
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    output_padding = _per_dim(output_padding, nd)
    pairs = padding_pairs(padding, nd)

    stuffed = np.zeros((N, C_in) + tuple((n - 1) * s + 1 for n, s in zip(in_size, stride)))
    stuffed[(Ellipsis,) + tuple(slice(None, None, s) for s in stride)] = x
    widths, crops = [], []
    for n, k, d, (pb, pa), op in zip(stuffed.shape[2:], kernel_size, dilation, pairs,
                                      output_padding):
        before, after = d * (k - 1) - pb, d * (k - 1) - pa + op
        widths.append((max(before, 0), max(after, 0)))
        crops.append(slice(max(-before, 0), n - max(-after, 0)))
    stuffed = stuffed[(Ellipsis,) + tuple(crops)]
    stuffed = np.pad(stuffed, ((0, 0), (0, 0)) + tuple(widths))

    flip = (Ellipsis,) + (slice(None, None, -1),) * nd
    wt = w.reshape((G, Cg_in, Cg_out) + kernel_size)[flip]
    wt = np.swapaxes(wt, 1, 2).reshape((G * Cg_out, Cg_in) + kernel_size)
    return conv(stuffed, wt, b, stride=1, padding=0, dilation=dilation, groups=G)


def conv_transpose_input_grad(input_size, w, gy, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1):
    """Gradient of :func:`conv_transpose` with respect to its input.

    The adjoint of a transposed convolution is the convolution with the same weight
    (read as ``(C_out_conv = C_in, C_in_conv/G = C_out/G, *k)``).  When
    ``output_padding >= stride`` (allowed when dilation > stride) that convolution is
    longer than the input; the extra tail is cut off.
    """
    gx = conv(gy, w, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return gx[(Ellipsis,) + tuple(slice(0, n) for n in input_size[2:])]


def conv_transpose_weight_grad(x, weight_size, gy, stride=1, padding=0, output_padding=0,
                               groups=1, dilation=1):
    """Gradient of :func:`conv_transpose` with respect to its weight ``(C_in, C_out/G, *k)``.

    ``gw[c, k, tap] = sum over n, i of x[n, c, i] * gy[n, k, i*s + tap*d - pb]``: the weight
    gradient of a convolution whose input is ``gy`` and whose output gradient is ``x``.
    """
    return conv_weight_grad(gy, weight_size, x, stride=stride, padding=padding,
                            dilation=dilation, groups=groups)


# -- element-by-element loops, to check the functions above on tiny shapes ---------------

def conv_naive(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`conv` as one Python loop per output element (tiny shapes only)."""
    x, w = _f64(x), _f64(w)
    nd = x.ndim - 2
    N, C_in = x.shape[:2]
    in_size = x.shape[2:]
    C_out, Cg = w.shape[:2]
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    pairs = padding_pairs(padding, nd, in_size, kernel_size, stride, dilation)
    out_size = conv_out_size(in_size, kernel_size, stride, pairs, dilation)
    Kg = C_out // groups
    y = np.zeros((N, C_out) + out_size)
    for n, k in itertools.product(range(N), range(C_out)):
        g = k // Kg
        for o in itertools.product(*(range(v) for v in out_size)):
            acc = 0.0 if b is None else float(b[k])
            for c in range(Cg):
                for t in _taps(kernel_size):
                    i = tuple(oo * s + tt * d - pb for oo, s, tt, d, (pb, _) in
                              zip(o, stride, t, dilation, pairs))
                    if all(0 <= ii < nn for ii, nn in zip(i, in_size)):
                        acc += x[(n, g * Cg + c) + i] * w[(k, c) + t]
            y[(n, k) + o] = acc
    return y


def conv_transpose_naive(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                         dilation=1):
    """:func:`conv_transpose` as one Python loop per input element and tap (tiny shapes)."""
    x, w = _f64(x), _f64(w)
    nd = x.ndim - 2
    N, C_in = x.shape[:2]
    in_size = x.shape[2:]
    Cg_in = C_in // groups
    Cg_out = w.shape[1]
    C_out = Cg_out * groups
    kernel_size = w.shape[2:]
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    output_padding = _per_dim(output_padding, nd)
    pairs = padding_pairs(padding, nd)
    out_size = conv_transpose_out_size(in_size, kernel_size, stride, pairs, dilation,
                                       output_padding)
    y = np.zeros((N, C_out) + out_size)
    if b is not None:
        y += _f64(b).reshape((1, C_out) + (1,) * nd)
    for n, c in itertools.product(range(N), range(C_in)):
        g = c // Cg_in
        for i in itertools.product(*(range(v) for v in in_size)):
            for k in range(Cg_out):
                for t in _taps(kernel_size):
                    o = tuple(ii * s + tt * d - pb for ii, s, tt, d, (pb, _) in
                              zip(i, stride, t, dilation, pairs))
                    if all(0 <= oo < nn for oo, nn in zip(o, out_size)):
                        y[(n, g * Cg_out + k) + o] += x[(n, c) + i] * w[(c, k) + t]
    return y
