"""NaN and Inf through the backward passes: they reach exactly the gradients whose sums
contain them, whatever the algorithm.

The forward tests (``test_conv.py``) pin the convention: padding is a real zero, so a
non-finite *weight* times padding is NaN at the borders, as in PyTorch and in the
im2col path.  In the backward passes the sums run over real (output, tap) pairs only:

* weight gradient: ``gw[k, c, tap] = sum gy[o] * xpad[o*s + tap*d]``; an Inf input pixel
  reaches the taps that read it and no other (a kernel that also multiplies the zeros of
  a padded output-gradient grid by input pixels would turn the other taps NaN);
* input gradient (and a transposed convolution's output): ``gx[i] = sum w[tap] * gy[o]``
  over the outputs that read pixel ``i``; an Inf weight reaches the pixels its tap read
  (a kernel that runs it as a forward convolution of a zero-padded output gradient
  would add 0 * Inf = NaN at the borders).

Positive inputs, weights and output gradients keep every sum free of Inf - Inf, so the
expected pattern is exactly "+Inf where reached, finite elsewhere" (and NaN for NaN).
The expected masks come from the float64 reference run on indicator arrays.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from cyconv import grad
import reference
from conftest import DTYPES, ConvCase

ALGORITHMS = ["im2col", "direct"]

CASES = [
    # depthwise, no padding: rows of an output plane are shorter than the input's
    ConvCase(2, 2, 3, 3, 3, (6, 13), (3, 3)),
    # two output channels per input channel, padding 1
    ConvCase(2, 2, 3, 6, 3, (7, 12), (3, 3), padding=1),
    # depthwise 3x3 'same', rows of 1-2 vectors (dw_same3 / dw_same3_dot, in place)
    ConvCase(2, 2, 3, 3, 3, (5, 13), (3, 3), padding=1),
    ConvCase(2, 2, 2, 4, 2, (4, 8), (3, 3), padding="same"),
    # dense, 8 channels: the channel-blocked forward kernel serves 'direct' input grads
    ConvCase(2, 1, 8, 8, 1, (6, 11), (3, 3)),
    # unit width stride, height stride 2, width dilation
    ConvCase(2, 2, 4, 4, 1, (9, 8), (3, 2), stride=(2, 1), padding="same", dilation=(1, 2)),
    ConvCase(1, 2, 2, 4, 2, (15,), (3,), stride=2, padding=((1, 2),), dilation=2),
    ConvCase(1, 1, 2, 2, 2, (19,), (4,)),
    ConvCase(3, 1, 2, 3, 1, (5, 6, 7), (2, 3, 3)),
]


def _positive(rng, shape, dtype):
    return rng.uniform(0.5, 1.0, shape).astype(dtype)


def _pixels(shape, rng):
    """First, last and two random positions (the first and last column are where a kernel
    that overruns a row would meet the neighbouring row)."""
    yield (0,) * len(shape)
    yield tuple(n - 1 for n in shape)
    for _ in range(2):
        yield tuple(int(rng.integers(n)) for n in shape)


def _gy_shape(case):
    y = getattr(cyconv, case.op)(np.zeros(case.x_shape), np.zeros(case.w_shape),
                                 **case.kwargs)
    return y.shape


def _check_reach(clean, rng, reached, run, what):
    """Each probed position of ``clean`` set to +Inf, then NaN: ``run`` must give that
    value exactly where ``reached`` (the reference on an indicator of the position) is
    positive, and finite values everywhere else."""
    for pos in _pixels(clean.shape, rng):
        indicator = np.zeros(clean.shape)
        indicator[pos] = 1.0
        mask = reached(indicator) > 0
        for value in (np.inf, np.nan):
            dirty = clean.copy()
            dirty[pos] = value
            got = run(dirty)
            hit = np.isnan(got) if np.isnan(value) else got == value
            np.testing.assert_array_equal(hit, mask, err_msg=f"{what} {value} at {pos}")
            assert np.isfinite(got[~mask]).all(), f"{what} {value} at {pos}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nonfinite_input_reaches_exactly_its_weight_grads(case, dtype, algorithm):
    rng = np.random.default_rng(1)
    gy = _positive(rng, _gy_shape(case), dtype)
    wgrad = getattr(grad, f"{case.op}_weight")
    _check_reach(_positive(rng, case.x_shape, dtype), rng,
                 lambda ind: reference.conv_weight_grad(ind, case.w_shape, np.ones(gy.shape),
                                                        **case.kwargs),
                 lambda x: wgrad(x, case.w_shape, gy, **case.kwargs, algorithm=algorithm),
                 case.id)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nonfinite_weight_reaches_exactly_its_input_grads(case, dtype, algorithm):
    rng = np.random.default_rng(2)
    gy = _positive(rng, _gy_shape(case), dtype)
    igrad = getattr(grad, f"{case.op}_input")
    _check_reach(_positive(rng, case.w_shape, dtype), rng,
                 lambda ind: reference.conv_input_grad(case.x_shape, ind, np.ones(gy.shape),
                                                       **case.kwargs),
                 lambda w: igrad(case.x_shape, w, gy, **case.kwargs, algorithm=algorithm),
                 case.id)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride", [1, 2])
def test_inf_weight_reaches_exactly_its_transposed_outputs(stride, algorithm):
    """A transposed convolution is an input gradient: same rule for its output."""
    rng = np.random.default_rng(3)
    x = _positive(rng, (2, 4, 5, 6), np.float32)
    w = _positive(rng, (4, 3, 3, 3), np.float32)
    tap = (1, 2, 0, 2)
    indicator = np.zeros(w.shape)
    indicator[tap] = 1.0
    mask = reference.conv_transpose(np.ones(x.shape), indicator, None, stride, 1) > 0
    w[tap] = np.inf
    y = cyconv.conv_transpose2d(x, w, stride=stride, padding=1, algorithm=algorithm)
    np.testing.assert_array_equal(y == np.inf, mask)
    assert np.isfinite(y[~mask]).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nonfinite_output_grad_matches_the_reference(case, algorithm):
    """A NaN or Inf in the output gradient: both gradients hold NaN and Inf exactly where
    the float64 reference does (padding counts as real zeros there, as in the forward
    pass: Inf * padding is NaN in the weight gradient)."""
    rng = np.random.default_rng(4)
    x = _positive(rng, case.x_shape, np.float64)
    w = _positive(rng, case.w_shape, np.float64)
    gy0 = _positive(rng, _gy_shape(case), np.float64)
    for pixel in _pixels(gy0.shape, rng):
        for value in (np.inf, np.nan):
            gy = gy0.copy()
            gy[pixel] = value
            gw = getattr(grad, f"{case.op}_weight")(x, case.w_shape, gy, **case.kwargs,
                                                    algorithm=algorithm)
            gx = getattr(grad, f"{case.op}_input")(case.x_shape, w, gy, **case.kwargs,
                                                   algorithm=algorithm)
            with np.errstate(invalid="ignore"):          # Inf * 0 in the reference
                want_gw = reference.conv_weight_grad(x, case.w_shape, gy, **case.kwargs)
                want_gx = reference.conv_input_grad(case.x_shape, w, gy, **case.kwargs)
            for got, want in ((gw, want_gw), (gx, want_gx)):
                what = f"{case.id} {value} at {pixel}"
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
                np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=what)
