"""The per-channel direct kernel's row paths (``cyconv/_ext/direct.pyx``).

Forward convolutions with unit width stride and rows of at least one vector write their
output rows in place with a register-blocked row kernel (3 rows × 4 vectors, or 1 row ×
8 vectors, the last vector of a row overlapping the one before it); depthwise 1-D/2-D
layers also stage their input row by row, and those with three unit-spaced kernel rows
and unit height stride go through ``dw_rows`` (each loaded input vector feeds up to three
output rows).  Widths around every vector-count boundary,
heights that leave 0, 1 and 2 rows after the 3-row blocks, height strides, dilation,
asymmetric padding and bias are checked against the float64 reference, for both dtypes.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
import reference
from conftest import DTYPES, assert_close

WIDTHS = (4, 5, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 65, 70)
HEIGHTS = (1, 2, 3, 4, 5, 7)


def _check(x, w, b, dtype, **kw):
    nd = x.ndim - 2
    y = getattr(cyconv, f"conv{nd}d")(x, w, b, **kw, algorithm="direct")
    pairs = reference.padding_pairs(kw.get("padding", 0), nd, x.shape[2:], w.shape[2:],
                                    kw.get("stride", 1), kw.get("dilation", 1))
    expected = reference.conv(x, w, b, kw.get("stride", 1), pairs, kw.get("dilation", 1),
                              kw.get("groups", 1))
    assert_close(y, expected, dtype, what=f"x{x.shape} w{w.shape} {kw}")


def _arrays(rng, dtype, x_shape, w_shape, bias):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_depthwise_2d_every_width_and_height(width, dtype):
    rng = np.random.default_rng(width)
    for i, h in enumerate(HEIGHTS):
        x, w, b = _arrays(rng, dtype, (2, 3, h, width), (3, 1, 3, 3), bias=i % 2 == 0)
        _check(x, w, b, dtype, padding=1, groups=3)
        _check(x, w, b, dtype, padding="same", stride=(2, 1), groups=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_grouped_2d_every_width(width, dtype):
    """Two and three channels per group: the row kernel accumulates over channels."""
    rng = np.random.default_rng(100 + width)
    x, w, b = _arrays(rng, dtype, (1, 6, 5, width), (4, 3, 3, 2), bias=True)
    _check(x, w, b, dtype, padding=((1, 1), (0, 1)), groups=2)
    x, w, b = _arrays(rng, dtype, (2, 4, 7, width), (6, 2, 2, 3), bias=False)
    _check(x, w, b, dtype, padding=(2, 1), dilation=(2, 1), groups=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_depthwise_1d_and_3d(width, dtype):
    rng = np.random.default_rng(200 + width)
    x, w, b = _arrays(rng, dtype, (3, 4, width), (4, 1, 5), bias=True)
    _check(x, w, b, dtype, padding="same", groups=4)
    _check(x, w, b, dtype, padding=3, dilation=2, groups=4)
    x, w, b = _arrays(rng, dtype, (1, 2, 3, 4, width), (2, 1, 2, 3, 3), bias=True)
    _check(x, w, b, dtype, padding=1, groups=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_large_kernel_and_wide_padding(dtype):
    """Padding wider than the kernel reach: whole output rows read only padding."""
    rng = np.random.default_rng(7)
    x, w, b = _arrays(rng, dtype, (2, 5, 9, 37), (5, 1, 7, 7), bias=True)
    _check(x, w, b, dtype, padding=(8, 3), groups=5)
    _check(x, w, b, dtype, padding=((0, 9), (4, 0)), stride=(3, 1), groups=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", (1, 2, 3, 5))
def test_depthwise_three_kernel_rows(kw, dtype):
    """``dw_rows``: kernel widths and width dilations, asymmetric padding, two output
    channels per input channel, heights leaving every remainder after its 3-row blocks,
    and planes too large to stage at once (staged three rows at a time)."""
    rng = np.random.default_rng(300 + kw)
    for i, (h, width) in enumerate(((1, 8), (2, 9), (4, 17), (5, 33), (6, 40), (7, 63),
                                    (50, 45), (41, 70))):
        x, w, b = _arrays(rng, dtype, (2, 3, h, width), (6, 1, 3, kw), bias=i % 2 == 1)
        _check(x, w, b, dtype, padding=((1, 1), (kw // 2, (kw - 1) // 2)), groups=3)
        _check(x, w, b, dtype, padding=((2, 0), (kw, 1)), dilation=(1, 3), groups=3)
        if h >= 3 and width >= kw + 8:          # no padding: OW still a whole vector
            _check(x, w, b, dtype, groups=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", (4, 5, 8, 9, 12, 15, 16, 17, 24, 28, 31, 33, 40, 56, 65))
def test_depthwise_same3_reads_x_in_place(width, dtype):
    """``dw_same3`` (3x3, padding 1, unit strides): the padding comes from zero rows
    and from zero lanes shifted into the first and last vector of each row, not from a
    staged copy.  Every width around the vector counts (one vector holding both edges
    included; column strips of one and two vectors), heights 1 and 2 (a strip's first
    row is also its last), a channel multiplier, bias; NaN in the outermost input
    columns and rows reaches exactly the outputs whose windows hold it."""
    rng = np.random.default_rng(400 + width)
    for i, h in enumerate((1, 2, 3, 4, 5, 8, 29)):
        x, w, b = _arrays(rng, dtype, (2, 3, h, width), (6, 1, 3, 3), bias=i % 2 == 0)
        _check(x, w, b, dtype, padding=1, groups=3)
    x, w, b = _arrays(rng, dtype, (1, 2, 6, width), (2, 1, 3, 3), bias=True)
    x[0, 0, :, 0] = np.nan                     # left column of channel 0
    x[0, 1, -1, -1] = np.nan                   # bottom-right corner of channel 1
    y = cyconv.conv2d(x, w, b, padding=1, groups=2, algorithm="direct")
    expect = np.zeros(y.shape, bool)
    expect[0, 0, :, :2] = True
    expect[0, 1, -2:, -2:] = True
    assert np.array_equal(np.isnan(y), expect)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", (8, 33, 65, 300))
def test_depthwise_same3_both_kernels(width, dtype):
    """Planes of up to ``DW_STRIPS_MAX`` bytes go through rolling column strips, larger
    ones through 3-row blocks: heights either side of the limit, the larger ones leaving
    every remainder after the blocks; NaN in a middle row reaches exactly the 3x3 outputs
    around it, and NaN in the corners exactly the 2x2 outputs there, in both kernels."""
    # rows of the tallest plane that still goes in strips
    strips_max = cyconv._ext.kernels("direct").DW_STRIPS_MAX
    limit = strips_max // (width * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(600 + width)
    for h in (limit - 1, limit, limit + 1, limit + 2, limit + 3):
        x, w, b = _arrays(rng, dtype, (1, 2, h, width), (4, 1, 3, 3), bias=h % 2 == 0)
        _check(x, w, b, dtype, padding=1, groups=2)
    for h in (limit, limit + 1):
        x = rng.uniform(0.5, 1.0, (1, 2, h, width)).astype(dtype)
        w = rng.uniform(0.5, 1.0, (2, 1, 3, 3)).astype(dtype)
        x[0, 0, h // 2, width // 2] = np.nan
        x[0, 1, 0, 0] = x[0, 1, -1, -1] = np.nan
        y = cyconv.conv2d(x, w, padding=1, groups=2, algorithm="direct")
        expect = np.zeros(y.shape, bool)
        expect[0, 0, h // 2 - 1:h // 2 + 2, width // 2 - 1:width // 2 + 2] = True
        expect[0, 1, :2, :2] = expect[0, 1, -2:, -2:] = True
        assert np.array_equal(np.isnan(y), expect), f"height {h}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", (4, 8, 9, 12, 16, 17, 23, 28, 33, 56))
def test_depthwise_same3_weight_grad(width, dtype):
    """``dw_same3_dot``: the weight gradient of 3x3 'same' depthwise planes, read in
    place (blocks of up to 3 rows; the last vector of a row overlaps the one before it,
    its shared lanes masked off).  Heights leaving every remainder, a channel multiplier;
    then +Inf in each of the last 9 input columns in turn reaches exactly the taps that
    read it (the masked lanes must add +0, not 0 * Inf), and +Inf in each of the last 9
    output-gradient columns gives Inf and NaN (Inf * padding) exactly where the float64
    reference does."""
    rng = np.random.default_rng(500 + width)
    for h in (1, 2, 3, 4, 5, 8, 29):
        x, w, _ = _arrays(rng, dtype, (2, 3, h, width), (6, 1, 3, 3), bias=False)
        gy = rng.standard_normal((2, 6, h, width)).astype(dtype)
        gw = cyconv.grad.conv2d_weight(x, w.shape, gy, padding=1, groups=3,
                                       algorithm="direct")
        ref = reference.conv_weight_grad(x, w.shape, gy, padding=1, groups=3)
        assert_close(gw, ref, dtype, what=f"x{x.shape}")
    x = rng.uniform(0.5, 1.0, (1, 1, 4, width)).astype(dtype)
    gy = rng.uniform(0.5, 1.0, (1, 1, 4, width)).astype(dtype)
    for col in range(max(0, width - 9), width):
        dirty = x.copy()
        dirty[0, 0, 2, col] = np.inf
        indicator = np.zeros(x.shape)
        indicator[0, 0, 2, col] = 1.0
        reached = reference.conv_weight_grad(indicator, (1, 1, 3, 3), np.ones(gy.shape),
                                             padding=1) > 0
        gw = cyconv.grad.conv2d_weight(dirty, (1, 1, 3, 3), gy, padding=1,
                                       algorithm="direct")
        np.testing.assert_array_equal(gw == np.inf, reached, err_msg=f"Inf at column {col}")
        assert np.isfinite(gw[~reached]).all()
        dirty = gy.copy()
        dirty[0, 0, 2, col] = np.inf
        with np.errstate(invalid="ignore"):          # Inf * padding in the reference
            ref = reference.conv_weight_grad(x, (1, 1, 3, 3), dirty, padding=1)
        gw = cyconv.grad.conv2d_weight(x, (1, 1, 3, 3), dirty, padding=1, algorithm="direct")
        for test in (np.isnan, np.isposinf):
            np.testing.assert_array_equal(test(gw), test(ref),
                                          err_msg=f"{test.__name__}, gy Inf at column {col}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_3d_one_deep_is_not_a_2d_plane(dtype):
    """A one-deep 3-D depthwise input with a 3-deep kernel and depth padding 1 has one
    output depth, like a 2-D plane, but its kernel's outer depth taps read padding: the
    2-D row kernels (dw_rows, and the in-place dw_same3, dw_same3_dot) must not take it."""
    rng = np.random.default_rng(7)
    x, w, b = _arrays(rng, dtype, (2, 3, 1, 6, 10), (3, 1, 3, 3, 3), bias=True)
    _check(x, w, b, dtype, padding=1, groups=3)
    gy = rng.standard_normal((2, 3, 1, 6, 10)).astype(dtype)
    gx = cyconv.grad.conv3d_input(x.shape, w, gy, padding=1, groups=3, algorithm="direct")
    assert_close(gx, reference.conv_input_grad(x.shape, w, gy, padding=1, groups=3), dtype,
                 what="conv3d_input")
    gw = cyconv.grad.conv3d_weight(x, w.shape, gy, padding=1, groups=3, algorithm="direct")
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, padding=1, groups=3), dtype,
                 what="conv3d_weight")
