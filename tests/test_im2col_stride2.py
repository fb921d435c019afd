"""The im2col path's width-stride-2 rows (``gather2``/``scatter2`` in ``_simd.h``).

A stride-2 row of the column matrix is gathered from every other input element, and the
input gradient (and transposed convolution) scatters it back, with vector loads, lane
shuffles and a blend, stopping one element early so that nothing past the row's last
strided element is touched.  Output widths around every vector-count boundary of both
dtypes, padding that clips either end of a row, dilation and odd input widths are checked
against the float64 reference, forward, input gradient and weight gradient.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
import reference
from conftest import DTYPES, assert_close

# input widths giving stride-2 rows of 1 .. 41 elements (vectors of 4 and 8 lanes)
WIDTHS = (3, 8, 9, 10, 16, 17, 18, 19, 25, 33, 34, 35, 50, 81)


def _arrays(dtype, width, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 5, width)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return x, w, b


CASES = [dict(stride=2), dict(stride=2, padding=1), dict(stride=(1, 2), padding=(0, 3)),
         dict(stride=2, padding=2, dilation=(1, 2)), dict(stride=2, padding=((1, 0), (0, 2)))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_stride2_rows_forward_and_gradients(width, case, dtype):
    kw = CASES[case]
    x, w, b = _arrays(dtype, width, seed=width * 10 + case)
    what = f"x{x.shape} {kw}"
    pairs = reference.padding_pairs(kw.get("padding", 0), 2, x.shape[2:], w.shape[2:],
                                    kw["stride"], kw.get("dilation", 1))
    ref_kw = dict(stride=kw["stride"], padding=pairs, dilation=kw.get("dilation", 1))
    y = cyconv.conv2d(x, w, b, **kw, algorithm="im2col")
    assert_close(y, reference.conv(x, w, b, **ref_kw), dtype, what="forward " + what)

    gy = np.random.default_rng(width).standard_normal(y.shape).astype(dtype)
    gx = cyconv.grad.conv2d_input(x.shape, w, gy, **kw, algorithm="im2col")
    assert_close(gx, reference.conv_input_grad(x.shape, w, gy, **ref_kw), dtype,
                 what="input grad " + what)
    gw = cyconv.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm="im2col")
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **ref_kw), dtype,
                 what="weight grad " + what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", (7, 16, 17, 33, 64, 65))
def test_stride2_transposed_1d(length, dtype):
    """A transposed stride-2 convolution is the scatter (col2im) side alone."""
    rng = np.random.default_rng(length)
    x = rng.standard_normal((2, 5, length)).astype(dtype)
    w = rng.standard_normal((5, 3, 4)).astype(dtype)
    y = cyconv.conv_transpose1d(x, w, None, stride=2, padding=1, algorithm="im2col")
    ref = reference.conv_transpose(x, w, None, (2,), ((1, 1),), (0,), 1, (1,))
    assert_close(y, ref, dtype, what=f"conv_transpose1d length {length}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", (17, 33, 37))
def test_stride2_scatter_writes_only_its_elements(width, dtype):
    """The input gradient of a 1x1 stride-2 convolution is gy on the even columns and
    exactly zero (+0.0) on the odd ones, including the element after the last tap."""
    w = np.ones((1, 1, 1, 1), dtype)
    ow = (width + 1) // 2
    gy = np.arange(1, 3 * ow + 1, dtype=dtype).reshape(1, 1, 3, ow)
    gx = cyconv.grad.conv2d_input((1, 1, 3, width), w, gy, stride=(1, 2),
                                  algorithm="im2col")
    assert np.array_equal(gx[..., 0::2], gy)
    odd = gx[..., 1::2]
    assert np.array_equal(odd, np.zeros_like(odd)) and not np.signbit(odd).any()
