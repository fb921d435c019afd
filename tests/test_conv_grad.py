"""Convolution gradients: ``cyconv.grad.conv{1,2,3}d_input/_weight`` and ``grad.bias``.

Checked against the float64 reference, PyTorch autograd, float64 central finite
differences on a random scalar projection (Chainer's ``check_backward``), the adjoint
identities ``<conv(x, w), y> = <x, conv_input(y)> = <w, conv_weight(x, y)>``, and for
determinism (the weight gradient is bit-identical run to run with 2 threads).
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from conftest import (DTYPES, SPECIAL_CONV_CASES, ConvCase, assert_close, assert_identical,
                      conv_grid, ref_conv_input_grad, ref_conv_weight_grad, to_numpy,
                      torch_conv, with_layout)

ALGORITHMS = ["im2col", "direct", "auto"]
CASES = conv_grid(seed=777) + SPECIAL_CONV_CASES
IDS = [c.id for c in CASES]


def grad_input(case, w, gy, algorithm="auto", input_size=None):
    fn = getattr(cyconv.grad, f"conv{case.nd}d_input")
    size = case.x_shape if input_size is None else input_size
    return fn(size, w, gy, **case.kwargs, algorithm=algorithm)


def grad_weight(case, x, gy, algorithm="auto", weight_size=None):
    fn = getattr(cyconv.grad, f"conv{case.nd}d_weight")
    size = case.w_shape if weight_size is None else weight_size
    return fn(x, size, gy, **case.kwargs, algorithm=algorithm)


def forward(case, x, w, b=None, algorithm="auto"):
    return getattr(cyconv, case.op)(x, w, b, **case.kwargs, algorithm=algorithm)


def _gy(case, xp, dtype):
    return with_layout(case.grad_output(dtype), case.layout, xp)


# -- against the reference and PyTorch ---------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_input_grad_matches_reference(case, dtype, algorithm, xp):
    x, w, b = case.arrays(xp, dtype)
    gy = _gy(case, xp, dtype)
    gx = grad_input(case, w, gy, algorithm)
    assert type(gx) is type(w)
    assert_close(gx, ref_conv_input_grad(case, w, gy), dtype, what=f"{case.id} {algorithm}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_weight_grad_matches_reference(case, dtype, algorithm, xp):
    x, w, b = case.arrays(xp, dtype)
    gy = _gy(case, xp, dtype)
    gw = grad_weight(case, x, gy, algorithm)
    assert type(gw) is type(x)
    assert_close(gw, ref_conv_weight_grad(case, x, gy), dtype, what=f"{case.id} {algorithm}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grads_match_torch_autograd(case, dtype):
    x, w, b = case.arrays(np, dtype)
    if b is None:
        b = np.zeros(case.C_out, dtype)
    gy = _gy(case, np, dtype)
    _, tgx, tgw, tgb = torch_conv(case, x, w, b, gy=gy)
    assert_close(grad_input(case, w, gy), tgx, dtype, what=f"input {case.id}")
    assert_close(grad_weight(case, x, gy), tgw, dtype, what=f"weight {case.id}")
    gb = cyconv.grad.bias(gy, channel_axis=1 if case.batched else 0)
    assert_close(gb, tgb, dtype, what=f"bias {case.id}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_matches_direct(case, dtype):
    x, w, b = case.arrays(np, dtype)
    gy = _gy(case, np, dtype)
    for name, fn, arg in (("input", grad_input, w), ("weight", grad_weight, x)):
        a = fn(case, arg, gy, "im2col")
        d = fn(case, arg, gy, "direct")
        assert_close(d, to_numpy(a).astype(np.float64), dtype, kind="parity",
                     what=f"{name} {case.id}")


# -- batch forms and sizes ----------------------------------------------------------------------

def test_unbatched_input_size_gives_unbatched_gradient():
    case = ConvCase(2, None, 4, 6, 2, (7, 9), (3, 3), stride=2, padding="same")
    x, w, _ = case.numpy_arrays(np.float64)
    gy = case.grad_output(np.float64)
    for algorithm in ALGORITHMS:
        gx = grad_input(case, w, gy, algorithm)
        assert gx.shape == case.x_shape
        batched = cyconv.grad.conv2d_input((1,) + case.x_shape, w, gy[None], **case.kwargs,
                                           algorithm=algorithm)
        assert_identical(gx, batched[0], algorithm)
        gw = grad_weight(case, x, gy, algorithm)
        assert_identical(gw, cyconv.grad.conv2d_weight(x[None], case.w_shape, gy[None],
                                                       **case.kwargs, algorithm=algorithm),
                         algorithm)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_empty_batch(nd):
    case = ConvCase(nd, 0, 4, 6, 2, (7, 6, 5)[:nd], (3,) * nd, stride=2, padding="same",
                    bias=True)
    x, w, _ = case.numpy_arrays(np.float32)
    gy = case.grad_output(np.float32)
    for algorithm in ALGORITHMS:
        gx = grad_input(case, w, gy, algorithm)
        assert gx.shape == case.x_shape and gx.dtype == np.float32
        gw = grad_weight(case, x, gy, algorithm)
        assert gw.shape == case.w_shape and gw.dtype == np.float32
        assert not gw.any(), "an empty batch has a zero weight gradient"
    gb = cyconv.grad.bias(gy)
    assert gb.shape == (6,) and gb.dtype == np.float32 and not gb.any()


def test_sizes_as_lists_and_numpy_ints():
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), padding=1)
    x, w, _ = case.numpy_arrays(np.float64)
    gy = case.grad_output(np.float64)
    gx = grad_input(case, w, gy)
    gw = grad_weight(case, x, gy)
    assert_identical(grad_input(case, w, gy, input_size=list(case.x_shape)), gx)
    assert_identical(grad_input(case, w, gy, input_size=tuple(np.int64(v) for v in
                                                              case.x_shape)), gx)
    assert_identical(grad_weight(case, x, gy, weight_size=list(case.w_shape)), gw)


def test_input_size_given_as_torch_size():
    torch = pytest.importorskip("torch")
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), padding=1)
    x, w, _ = case.numpy_arrays(np.float64)
    gy = case.grad_output(np.float64)
    assert_identical(grad_input(case, w, gy, input_size=torch.Size(case.x_shape)),
                     grad_input(case, w, gy))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_asymmetric_padding_equals_explicit_pad(nd):
    """Gradients with (before, after) pairs = gradients of np.pad + 'valid', cropped."""
    pairs = ((0, 2), (1, 0), (2, 1))[:nd]
    case = ConvCase(nd, 2, 3, 4, 1, (9, 8, 7)[:nd], (3,) * nd, stride=2, padding=pairs)
    x, w, _ = case.numpy_arrays(np.float64)
    gy = case.grad_output(np.float64)
    xpad = np.pad(x, ((0, 0), (0, 0)) + pairs)
    valid = ConvCase(nd, 2, 3, 4, 1, xpad.shape[2:], (3,) * nd, stride=2, padding="valid")
    assert valid.out_size == case.out_size
    crop = (Ellipsis,) + tuple(slice(pb, pb + n) for (pb, _), n in zip(pairs, case.in_size))
    for algorithm in ("im2col", "direct"):
        gx_valid = to_numpy(grad_input(valid, w, gy, algorithm))[crop]
        assert_close(grad_input(case, w, gy, algorithm), gx_valid, np.float64,
                     kind="parity", what=f"input {algorithm}")
        assert_close(grad_weight(case, x, gy, algorithm),
                     to_numpy(grad_weight(valid, xpad, gy, algorithm)), np.float64,
                     kind="parity", what=f"weight {algorithm}")


# -- bias ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_sums_all_but_channel_axis(dtype):
    rng = np.random.default_rng(5)
    gy = rng.uniform(-1, 1, (3, 5, 4, 6)).astype(dtype)
    assert_close(cyconv.grad.bias(gy), gy.astype(np.float64).sum(axis=(0, 2, 3)), dtype)
    assert_close(cyconv.grad.bias(gy[0], channel_axis=0),
                 gy[0].astype(np.float64).sum(axis=(1, 2)), dtype)
    assert_close(cyconv.grad.bias(gy, channel_axis=-1),
                 gy.astype(np.float64).sum(axis=(0, 1, 2)), dtype)
    assert_close(cyconv.grad.bias(gy[:, :, ::-2, 1:]), gy[:, :, ::-2, 1:].astype(
        np.float64).sum(axis=(0, 2, 3)), dtype)


def test_bias_grad_float32_accumulates_in_float64():
    """1e6 ones plus a large value: naive float32 accumulation would drift."""
    gy = np.ones((1, 1, 1000, 1000), np.float32)
    gy[0, 0, 0, 0] = 2.0 ** 24
    assert cyconv.grad.bias(gy)[0] == np.float32(2.0 ** 24 + 999_999)


# -- finite differences and adjoint identities (float64) ----------------------------------------

FD_CASES = [c for c in CASES if c.batched and c.N][::3] + [
    ConvCase(2, 2, 3, 6, 3, (7, 8), (3, 3), stride=2, padding="same", dilation=(2, 1),
             bias=True),
    ConvCase(1, 3, 4, 6, 2, (11,), (4,), stride=3, padding=((2, 1),), bias=True),
]


def _projection(case, algorithm):
    """f(x, w, b) = <conv(x, w, b), r> with r random, and the float64 arrays."""
    rng = np.random.default_rng(21)
    x, w, b = case.numpy_arrays(np.float64, seed=3)
    b = rng.uniform(-1, 1, case.C_out)
    r = rng.uniform(-1, 1, case.y_shape)

    def f(x_, w_, b_):
        return float(np.vdot(forward(case, x_, w_, b_, algorithm), r))
    return f, x, w, b, r, rng


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
def test_finite_differences(case, algorithm):
    f, x, w, b, r, rng = _projection(case, algorithm)
    h = 1e-3
    gx = grad_input(case, w, r, algorithm)
    gw = grad_weight(case, x, r, algorithm)
    gb = cyconv.grad.bias(r)
    for name, analytic, shift in (
            ("input", gx, lambda v, e: (x + e * v, w, b)),
            ("weight", gw, lambda v, e: (x, w + e * v, b)),
            ("bias", gb, lambda v, e: (x, w, b + e * v))):
        v = rng.uniform(-1, 1, analytic.shape)
        numeric = (f(*shift(v, h)) - f(*shift(v, -h))) / (2 * h)
        exact = float(np.vdot(analytic, v))
        assert abs(numeric - exact) <= 1e-8 * max(1.0, abs(exact)), (
            f"{name} {case.id} {algorithm}: finite difference {numeric!r} vs gradient {exact!r}")


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adjoint_identities(case, algorithm):
    """<conv(x, w), y> = <x, conv_input(y)> = <w, conv_weight(x, y)>."""
    x, w, _ = case.numpy_arrays(np.float64)
    y = case.grad_output(np.float64)
    lhs = float(np.vdot(forward(case, x, w, None, algorithm), y))
    via_input = float(np.vdot(x, grad_input(case, w, y, algorithm)))
    via_weight = float(np.vdot(w, grad_weight(case, x, y, algorithm)))
    scale = max(1.0, float(np.abs(x).sum() * np.abs(w).max() * np.abs(y).max(initial=0)))
    assert abs(lhs - via_input) <= 1e-12 * scale, (lhs, via_input)
    assert abs(lhs - via_weight) <= 1e-12 * scale, (lhs, via_weight)


# -- determinism ---------------------------------------------------------------------------------

#: big enough to run on several threads (checked in test_det_cases_are_threaded)
DET_CASES = [
    ConvCase(2, 8, 8, 16, 1, (14, 13), (3, 3), padding=1),
    ConvCase(2, 16, 16, 32, 16, (31, 29), (3, 3), stride=2, padding="same"),
    ConvCase(1, 9, 16, 24, 2, (301,), (5,), stride=2, padding=((3, 1),)),
    ConvCase(3, 5, 4, 8, 1, (6, 7, 8), (3, 3, 2), padding=1),
]


def test_det_cases_are_threaded():
    from cyconv._params import conv_params
    serial = getattr(cyconv._cpu, "SERIAL_FLOPS", 10**6)
    for case in DET_CASES:
        p = conv_params(case.op, case.nd, case.x_shape, case.w_shape, **case.kwargs)
        assert p.flops >= 1.5 * serial, (case.id, p.flops)


@pytest.mark.parametrize("algorithm", ["im2col", "direct", "auto"])
@pytest.mark.parametrize("case", DET_CASES, ids=[c.id for c in DET_CASES])
def test_weight_grad_deterministic_with_2_threads(case, algorithm, num_threads):
    num_threads(2)
    x, w, _ = case.numpy_arrays(np.float32)
    gy = case.grad_output(np.float32)
    first = grad_weight(case, x, gy, algorithm)
    for run in range(4):
        assert_identical(grad_weight(case, x, gy, algorithm), first,
                         f"{case.id} {algorithm}: run {run + 2} of 5")
    first_gx = grad_input(case, w, gy, algorithm)
    for run in range(4):
        assert_identical(grad_input(case, w, gy, algorithm), first_gx,
                         f"input {case.id} {algorithm}: run {run + 2} of 5")


def test_gradients_do_not_modify_inputs():
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), stride=2, padding="same", layout="negative")
    x, w, _ = case.arrays(np, np.float32)
    gy = _gy(case, np, np.float32)
    copies = [a.copy() for a in (x, w, gy)]
    for algorithm in ALGORITHMS:
        grad_input(case, w, gy, algorithm)
        grad_weight(case, x, gy, algorithm)
        cyconv.grad.bias(gy)
    for a, c in zip((x, w, gy), copies):
        assert_identical(a, c, "input modified")
