"""Transposed convolutions: ``cyconv.conv_transpose{1,2,3}d`` and their gradients.

Checked against the scatter reference, the zero-stuffed-convolution form and PyTorch;
gradients against the reference, PyTorch autograd and finite differences.  A transposed
convolution is the input gradient of a convolution, so the two must agree bit for bit
(same weights, same algorithm); ``output_padding`` rows must hold computed values.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
import reference
from conftest import (DTYPES, GROUP_FORMS, ConvTransposeCase, assert_close, assert_identical,
                      batch, ref_conv_transpose, ref_conv_transpose_input_grad,
                      ref_conv_transpose_weight_grad, to_numpy, torch_conv_transpose,
                      with_layout)

ALGORITHMS = ["im2col", "direct", "auto"]
IN_SIZES = {1: (7,), 2: (5, 6), 3: (3, 4, 5)}
KERNELS = {1: [(3,), (4,)], 2: [(3, 2), (3, 3)], 3: [(2, 3, 3), (3, 1, 2)]}
STRIDES = {1: [1, 2, 3, (2,)], 2: [1, 2, 3, (2, 1)], 3: [1, 2, 3, (1, 2, 3)]}
DILATIONS = {1: [1, 2, (3,)], 2: [1, 2, (1, 2)], 3: [1, 2, (2, 1, 1)]}
PADDINGS = {1: [0, 1, (2,)], 2: [0, 1, (1, 0)], 3: [0, 1, (0, 1, 2)]}
BATCH_FORMS = [(2, "contiguous"), (None, "contiguous"), (0, "contiguous"), (2, "strided"),
               (2, "channels_last"), (2, "negative")]


def _per_dim(v, nd):
    return reference._per_dim(v, nd)


def _output_padding(kind, stride, dilation, nd):
    """'zero'; 'one' (1 wherever allowed); 'max' (max(stride, dilation) - 1 per dim)."""
    s, d = _per_dim(stride, nd), _per_dim(dilation, nd)
    if kind == "zero":
        return 0
    if kind == "one":
        ops = tuple(min(1, max(a, b) - 1) for a, b in zip(s, d))
    else:
        ops = tuple(max(a, b) - 1 for a, b in zip(s, d))
    return ops[0] if len(set(ops)) == 1 else ops


def transpose_grid(seed=4242):
    """Every (nd, stride, output_padding kind) combination, the rest drawn from a seeded
    generator.  With stride 1, dilation 2 is forced half the time, so that
    ``output_padding < dilation`` with stride 1 is exercised."""
    rng = np.random.default_rng(seed)
    cases = []
    for nd in (1, 2, 3):
        for stride in STRIDES[nd]:
            for op_kind in ("zero", "one", "max"):
                while True:
                    C_in, C_out, G = list(GROUP_FORMS.values())[rng.integers(len(GROUP_FORMS))]
                    dilation = DILATIONS[nd][rng.integers(len(DILATIONS[nd]))]
                    if stride == 1 and op_kind != "zero" and rng.integers(2):
                        dilation = 2
                    N, layout = BATCH_FORMS[rng.integers(len(BATCH_FORMS))]
                    case = ConvTransposeCase(
                        nd=nd, N=N, C_in=C_in, C_out=C_out, groups=G, in_size=IN_SIZES[nd],
                        kernel_size=KERNELS[nd][rng.integers(2)], stride=stride,
                        padding=PADDINGS[nd][rng.integers(3)],
                        output_padding=_output_padding(op_kind, stride, dilation, nd),
                        dilation=dilation, bias=bool(rng.integers(2)), layout=layout)
                    if min(case.out_size) >= 1:
                        break
                cases.append(case)
    return cases


SPECIAL_CASES = [
    # output_padding < dilation with stride 1 (PyTorch allows it)
    ConvTransposeCase(1, 2, 3, 4, 1, (7,), (3,), stride=1, padding=1, output_padding=1,
                      dilation=2, bias=True),
    ConvTransposeCase(2, 2, 4, 6, 2, (5, 6), (3, 3), stride=1, padding=(1, 0),
                      output_padding=(1, 0), dilation=(2, 1)),
    # DCGAN-style upsampling and a 3-D one with output_padding
    ConvTransposeCase(2, 2, 6, 4, 1, (4, 5), (4, 4), stride=2, padding=1, bias=True),
    ConvTransposeCase(3, 1, 4, 4, 2, (3, 4, 3), (3, 3, 3), stride=2, padding=1,
                      output_padding=1, bias=True),
    ConvTransposeCase(1, 0, 3, 6, 3, (7,), (4,), stride=3, padding=2, output_padding=2),
    ConvTransposeCase(2, None, 3, 3, 3, (5, 6), (3, 3), stride=2, padding=1,
                      output_padding=1, bias=True),
    ConvTransposeCase(2, 3, 5, 7, 1, (4, 3), (1, 1), stride=2),                 # 1x1
    ConvTransposeCase(2, 2, 8, 8, 8, (5, 6), (3, 3), stride=2, padding=1,
                      output_padding=1, layout="channels_last"),
]

CASES = transpose_grid() + SPECIAL_CASES
IDS = [c.id for c in CASES]


def run(case, x, w, b=None, algorithm="auto"):
    return getattr(cyconv, case.op)(x, w, b, **case.kwargs, algorithm=algorithm)


def grad_input(case, w, gy, algorithm="auto"):
    return getattr(cyconv.grad, f"{case.op}_input")(case.x_shape, w, gy, **case.kwargs,
                                                     algorithm=algorithm)


def grad_weight(case, x, gy, algorithm="auto"):
    return getattr(cyconv.grad, f"{case.op}_weight")(x, case.w_shape, gy, **case.kwargs,
                                                      algorithm=algorithm)


def _gy(case, xp, dtype):
    return with_layout(case.grad_output(dtype), case.layout, xp)


# -- the references themselves ---------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scatter_reference_matches_zero_stuffed_form(case):
    x, w, b = case.numpy_arrays(np.float64)
    args = (batch(x, case), w, b, case.stride, case.padding, case.output_padding,
            case.groups, case.dilation)
    np.testing.assert_allclose(reference.conv_transpose(*args),
                               reference.conv_transpose_zero_stuffed(*args),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.nd < 3][::4], ids=lambda c: c.id)
def test_scatter_reference_matches_elementwise_loops(case):
    x, w, b = case.numpy_arrays(np.float64)
    args = (batch(x, case), w, b, case.stride, case.padding, case.output_padding,
            case.groups, case.dilation)
    np.testing.assert_allclose(reference.conv_transpose(*args),
                               reference.conv_transpose_naive(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_torch(case):
    x, w, b = case.numpy_arrays(np.float64)
    bb = np.zeros(case.C_out) if b is None else b
    gy = case.grad_output(np.float64)
    ty, tgx, tgw, _ = torch_conv_transpose(case, x, w, bb, gy=gy)
    assert_close(ref_conv_transpose(case, x, w, bb), ty, np.float64, what="forward")
    assert_close(ref_conv_transpose_input_grad(case, w, gy), tgx, np.float64, what="input")
    assert_close(ref_conv_transpose_weight_grad(case, x, gy), tgw, np.float64, what="weight")


# -- forward ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_transpose_matches_reference(case, dtype, algorithm, xp):
    x, w, b = case.arrays(xp, dtype)
    y = run(case, x, w, b, algorithm)
    assert type(y) is type(x)
    assert_close(y, ref_conv_transpose(case, x, w, b), dtype, what=f"{case.id} {algorithm}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_transpose_matches_torch(case, dtype):
    x, w, b = case.arrays(np, dtype)
    assert_close(run(case, x, w, b), torch_conv_transpose(case, x, w, b), dtype, what=case.id)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_matches_direct(case, dtype):
    x, w, b = case.arrays(np, dtype)
    gy = _gy(case, np, dtype)
    pairs = [("forward", run(case, x, w, b, "im2col"), run(case, x, w, b, "direct")),
             ("input", grad_input(case, w, gy, "im2col"), grad_input(case, w, gy, "direct")),
             ("weight", grad_weight(case, x, gy, "im2col"), grad_weight(case, x, gy, "direct"))]
    for name, a, d in pairs:
        assert_close(d, to_numpy(a).astype(np.float64), dtype, kind="parity",
                     what=f"{name} {case.id}")


def _conv_view_matches(case):
    """True when the convolution of the transposed output has the transposed input's size
    (output_padding < stride in every dim), so grad.conv_input can express the op."""
    return all(o < s for o, s in zip(_per_dim(case.output_padding, case.nd),
                                     _per_dim(case.stride, case.nd)))


SHARED_CORE_CASES = [c for c in CASES if _conv_view_matches(c)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SHARED_CORE_CASES, ids=lambda c: c.id)
def test_conv_transpose_is_conv_input_grad_bit_for_bit(case, dtype, algorithm):
    """conv_transpose(x, w) == grad.conv_input(y_shape, w, x), and the transposed op's
    gradients are the convolution and its weight gradient, with the same weights and the
    same algorithm."""
    nd = case.nd
    x, w, _ = case.arrays(np, dtype)
    gy = _gy(case, np, dtype)
    conv_kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                   groups=case.groups, algorithm=algorithm)
    y = run(case, x, w, None, algorithm)
    assert_identical(y, getattr(cyconv.grad, f"conv{nd}d_input")(case.y_shape, w, x, **conv_kw),
                     f"forward {case.id}")
    assert_identical(grad_input(case, w, gy, algorithm),
                     getattr(cyconv, f"conv{nd}d")(gy, w, None, **conv_kw),
                     f"input gradient {case.id}")
    assert_identical(grad_weight(case, x, gy, algorithm),
                     getattr(cyconv.grad, f"conv{nd}d_weight")(gy, case.w_shape, x, **conv_kw),
                     f"weight gradient {case.id}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd, stride, dilation, padding", [
    (1, 2, 1, 1), (2, 2, 1, 1), (3, 2, 1, 1),   # output_padding < stride
    (1, 1, 2, 1), (2, 1, 2, 2),                 # output_padding < dilation, stride 1
])
def test_output_padding_rows_hold_computed_values(nd, stride, dilation, padding, algorithm):
    """The extra rows output_padding adds are real outputs, not zeros: with padding >=
    output_padding they receive contributions from the input."""
    case = ConvTransposeCase(nd, 2, 3, 4, 1, (4, 5, 3)[:nd], (3,) * nd, stride=stride,
                             padding=padding, output_padding=1, dilation=dilation)
    x, w, _ = case.numpy_arrays(np.float64)
    y = run(case, x, w, None, algorithm)
    expected = ref_conv_transpose(case, x, w)
    assert_close(y, expected, np.float64, what=case.id)
    for axis in range(2, 2 + nd):
        last = np.take(y, -1, axis=axis)
        assert np.abs(last).min() > 0, f"{case.id}: output_padding row on axis {axis} is zero"
        np.testing.assert_allclose(last, np.take(expected, -1, axis=axis), rtol=1e-12)
    # and the size is PyTorch's
    no_op = ConvTransposeCase(nd, 2, 3, 4, 1, (4, 5, 3)[:nd], (3,) * nd, stride=stride,
                              padding=padding, output_padding=0, dilation=dilation)
    assert y.shape[2:] == tuple(n + 1 for n in no_op.out_size)


# -- gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grads_match_reference(case, dtype, algorithm, xp):
    x, w, _ = case.arrays(xp, dtype)
    gy = _gy(case, xp, dtype)
    assert_close(grad_input(case, w, gy, algorithm), ref_conv_transpose_input_grad(case, w, gy),
                 dtype, what=f"input {case.id} {algorithm}")
    assert_close(grad_weight(case, x, gy, algorithm),
                 ref_conv_transpose_weight_grad(case, x, gy), dtype,
                 what=f"weight {case.id} {algorithm}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grads_match_torch_autograd(case, dtype):
    x, w, b = case.arrays(np, dtype)
    if b is None:
        b = np.zeros(case.C_out, dtype)
    gy = _gy(case, np, dtype)
    _, tgx, tgw, tgb = torch_conv_transpose(case, x, w, b, gy=gy)
    assert_close(grad_input(case, w, gy), tgx, dtype, what=f"input {case.id}")
    assert_close(grad_weight(case, x, gy), tgw, dtype, what=f"weight {case.id}")
    assert_close(cyconv.grad.bias(gy, channel_axis=1 if case.batched else 0), tgb, dtype,
                 what=f"bias {case.id}")


FD_CASES = [c for c in CASES if c.N][::3]


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", FD_CASES, ids=lambda c: c.id)
def test_finite_differences(case, algorithm):
    rng = np.random.default_rng(31)
    x, w, _ = case.numpy_arrays(np.float64, seed=5)
    b = rng.uniform(-1, 1, case.C_out)
    r = rng.uniform(-1, 1, case.y_shape)

    def f(x_, w_, b_):
        return float(np.vdot(run(case, x_, w_, b_, algorithm), r))

    h = 1e-3
    for name, analytic, shift in (
            ("input", grad_input(case, w, r, algorithm), lambda v, e: (x + e * v, w, b)),
            ("weight", grad_weight(case, x, r, algorithm), lambda v, e: (x, w + e * v, b)),
            ("bias", cyconv.grad.bias(r), lambda v, e: (x, w, b + e * v))):
        v = rng.uniform(-1, 1, analytic.shape)
        numeric = (f(*shift(v, h)) - f(*shift(v, -h))) / (2 * h)
        exact = float(np.vdot(analytic, v))
        assert abs(numeric - exact) <= 1e-8 * max(1.0, abs(exact)), (
            f"{name} {case.id} {algorithm}: finite difference {numeric!r} vs gradient {exact!r}")


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adjoint_identities(case, algorithm):
    """<conv_transpose(x, w), y> = <x, conv_transpose_input(y)> = <w, conv_transpose_weight(x, y)>,
    and conv_transpose is the adjoint of the convolution with the same weight."""
    x, w, _ = case.numpy_arrays(np.float64)
    y = case.grad_output(np.float64)
    lhs = float(np.vdot(run(case, x, w, None, algorithm), y))
    scale = max(1.0, float(np.abs(x).sum() * np.abs(w).max() * np.abs(y).max(initial=0)))
    assert abs(lhs - float(np.vdot(x, grad_input(case, w, y, algorithm)))) <= 1e-12 * scale
    assert abs(lhs - float(np.vdot(w, grad_weight(case, x, y, algorithm)))) <= 1e-12 * scale
    if _conv_view_matches(case):
        conv_y = getattr(cyconv, f"conv{case.nd}d")(
            y, w, None, stride=case.stride, padding=case.padding, dilation=case.dilation,
            groups=case.groups, algorithm=algorithm)
        assert abs(lhs - float(np.vdot(x, conv_y))) <= 1e-12 * scale


def test_unbatched_equals_batched_first_sample():
    case = ConvTransposeCase(2, 1, 4, 6, 2, (5, 6), (3, 3), stride=2, padding=1,
                             output_padding=1, bias=True)
    x, w, b = case.numpy_arrays(np.float32)
    for algorithm in ("im2col", "direct"):
        y1 = run(case, x, w, b, algorithm)
        y0 = cyconv.conv_transpose2d(x[0], w, b, **case.kwargs, algorithm=algorithm)
        assert_identical(y0, y1[0], algorithm)
        unb = ConvTransposeCase(2, None, 4, 6, 2, (5, 6), (3, 3), stride=2, padding=1,
                                output_padding=1)
        gy = case.grad_output(np.float32)
        assert_identical(grad_input(unb, w, gy[0], algorithm),
                         grad_input(case, w, gy, algorithm)[0], algorithm)
        assert_identical(grad_weight(unb, x[0], gy[0], algorithm),
                         grad_weight(case, x, gy, algorithm), algorithm)


def test_empty_batch_with_bias():
    for nd in (1, 2, 3):
        case = ConvTransposeCase(nd, 0, 4, 6, 2, (3, 4, 5)[:nd], (3,) * nd, stride=2,
                                 padding=1, output_padding=1, bias=True)
        x, w, b = case.numpy_arrays(np.float32)
        for algorithm in ALGORITHMS:
            y = run(case, x, w, b, algorithm)
            assert y.shape == case.y_shape and y.dtype == np.float32


def test_inputs_not_modified():
    case = ConvTransposeCase(2, 2, 4, 6, 2, (5, 6), (3, 3), stride=2, padding=1,
                             output_padding=1, bias=True, layout="negative")
    x, w, b = case.arrays(np, np.float32)
    gy = _gy(case, np, np.float32)
    copies = [a.copy() for a in (x, w, b, gy)]
    for algorithm in ALGORITHMS:
        run(case, x, w, b, algorithm)
        grad_input(case, w, gy, algorithm)
        grad_weight(case, x, gy, algorithm)
    for a, c in zip((x, w, b, gy), copies):
        assert_identical(a, c, "input modified")
