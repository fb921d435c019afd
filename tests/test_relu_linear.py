"""``cyconv.relu``, ``cyconv.grad.relu`` and ``cyconv.linear``.

References are plain float64 NumPy (``np.where`` for ReLU, an explicit sum over the
feature axis for linear), PyTorch when importable, and finite differences.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, assert_close, assert_identical, to_numpy, with_layout

# -- ReLU -------------------------------------------------------------------------------------

RELU_SHAPES = [(), (0,), (7,), (3, 5), (2, 3, 4, 5), (2, 3, 4, 5, 6), (5, 40000)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "negative", "fortran"])
def test_relu_matches_reference(shape, dtype, layout, xp):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    xa = with_layout(x, layout, xp) if x.ndim else xp.asarray(x)
    y = cyconv.relu(xa)
    assert y.shape == shape and y.dtype == dtype
    np.testing.assert_array_equal(to_numpy(y), np.where(x > 0, x, 0).astype(dtype))
    gy = rng.uniform(-1, 1, shape).astype(dtype)
    gx = cyconv.grad.relu(xp.asarray(gy), y)
    assert gx.shape == shape and gx.dtype == dtype
    np.testing.assert_array_equal(to_numpy(gx), np.where(to_numpy(y) > 0, gy, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(dtype):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-30, 1e-30, -5, 5], dtype)
    y = cyconv.relu(x)
    np.testing.assert_array_equal(y, [np.nan, 0, np.inf, 0, 0, 0, dtype(1e-30), 0, 5])
    assert np.signbit(y[3])                     # -0.0 passes through, as in PyTorch
    gx = cyconv.grad.relu(np.ones_like(x), y)
    # gradient where output > 0 or NaN (PyTorch's threshold_backward: out <= 0 -> 0)
    np.testing.assert_array_equal(gx, [1, 0, 1, 0, 0, 0, 1, 0, 1])


def test_relu_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 5))
    x[0, 0, :3] = [np.nan, -0.0, 0.0]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.relu(xt)
    y = cyconv.relu(x)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    assert np.array_equal(np.signbit(y), np.signbit(yt.detach().numpy()))
    gy = np.random.default_rng(1).uniform(-1, 1, x.shape)
    yt.backward(torch.tensor(gy))
    np.testing.assert_array_equal(cyconv.grad.relu(gy, y), xt.grad.numpy())


def test_relu_grad_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (4, 50))
    x[np.abs(x) < 1e-3] = 0.5               # away from the kink
    gy, v = rng.uniform(-1, 1, x.shape), rng.uniform(-1, 1, x.shape)
    h = 1e-6
    numeric = (np.sum(cyconv.relu(x + h * v) * gy) - np.sum(cyconv.relu(x - h * v) * gy)) / (2 * h)
    assert abs(np.sum(cyconv.grad.relu(gy, cyconv.relu(x)) * v) - numeric) <= 1e-8


@pytest.mark.parametrize("n", [1, 2, 3])
def test_relu_thread_count_does_not_change_results(n, num_threads):
    x = np.random.default_rng(0).uniform(-1, 1, 3_000_001).astype(np.float32)
    num_threads(1)
    y1 = cyconv.relu(x)
    g1 = cyconv.grad.relu(x, y1)
    num_threads(n)
    assert_identical(cyconv.relu(x), y1)
    assert_identical(cyconv.grad.relu(x, y1), g1)
    np.testing.assert_array_equal(y1, np.maximum(x, 0))


def test_relu_leaves_input_alone_and_returns_new_array():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    x.flags.writeable = False
    before = x.copy()
    y = cyconv.relu(x)
    cyconv.grad.relu(x, y)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(x, y)


def test_relu_errors():
    with pytest.raises(TypeError, match="relu: input is float16; float16 is supported for "
                                        "CuPy \\(GPU\\) arrays only"):
        cyconv.relu(np.zeros(3, np.float16))
    with pytest.raises(TypeError, match="relu: input has unsupported dtype int64"):
        cyconv.relu(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="relu: grad_output is float32 but output is float64"):
        cyconv.grad.relu(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(ValueError) as info:
        cyconv.grad.relu(np.ones((2, 3)), np.ones((3, 2)))
    assert str(info.value) == "relu: grad_output has shape (2, 3), but output has shape (3, 2)"


# -- linear -----------------------------------------------------------------------------------

def ref_linear(x, w, b):
    """y[..., o] = sum_i x[..., i] * w[o, i] + b[o], in float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    y = (x[..., None, :] * w).sum(-1)
    return y if b is None else y + np.asarray(b, np.float64)


LINEAR_CASES = [  # (input shape, out_features, bias)
    ((5,), 3, True), ((4, 7), 6, True), ((4, 7), 6, False), ((2, 3, 7), 5, True),
    ((2, 3, 4, 9), 1, False), ((0, 7), 3, True), ((3, 0), 4, True), ((6, 1), 8, False),
    ((33, 65), 17, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LINEAR_CASES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "negative"])
def test_linear_matches_reference(case, dtype, layout, xp):
    shape, out, bias = case
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = rng.uniform(-1, 1, (out, shape[-1])).astype(dtype)
    b = rng.uniform(-1, 1, out).astype(dtype) if bias else None
    lay = lambda a: None if a is None else with_layout(a, layout, xp)  # noqa: E731
    y = cyconv.linear(lay(x), lay(w), lay(b))
    assert y.shape == shape[:-1] + (out,) and y.dtype == dtype
    assert_close(y, ref_linear(x, w, b), dtype)


def test_linear_transposed_weight_view():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    wt = rng.uniform(-1, 1, (6, 3)).astype(np.float32)      # a Fortran-ordered (3, 6) view
    assert_close(cyconv.linear(x, wt.T), ref_linear(x, wt.T, None), np.float32)


def test_linear_and_its_gradients_match_torch():
    """Forward against F.linear; the documented gradient formulas (what the layers
    compute with plain matmuls) against autograd."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w, b = rng.uniform(-1, 1, (2, 3, 7)), rng.uniform(-1, 1, (5, 7)), rng.uniform(-1, 1, 5)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.linear(xt, wt, bt)
    y = cyconv.linear(x, w, b)
    assert_close(y, yt.detach().numpy(), np.float64)
    gy = rng.uniform(-1, 1, y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(gy @ w, xt.grad.numpy(), np.float64)
    assert_close(gy.reshape(-1, 5).T @ x.reshape(-1, 7), wt.grad.numpy(), np.float64)
    assert_close(cyconv.grad.bias(gy, channel_axis=-1), bt.grad.numpy(), np.float64)


def test_linear_nan_poisons_exactly_its_rows():
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    y = cyconv.linear(x, np.ones((5, 3)), np.zeros(5))
    assert np.isnan(y[2]).all() and not np.isnan(np.delete(y, 2, axis=0)).any()


def test_linear_leaves_inputs_alone():
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1, 1, s) for s in ((4, 3), (2, 3), (2,))]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    cyconv.linear(*arrays)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


W = np.zeros((3, 4))
LINEAR_ERRORS = [
    (lambda: cyconv.linear(np.zeros((2, 4)), np.zeros(4)),
     "linear: weight must be 2-D (out_features, in_features), got 1-D (4,) (input (2, 4))"),
    (lambda: cyconv.linear(np.zeros(()), W),
     "linear: input must have at least 1 dim (*, in_features), got shape ()"),
    (lambda: cyconv.linear(np.zeros((2, 5)), W),
     "linear: input (2, 5) has 5 features in its last dim, but weight (3, 4) expects 4"),
    (lambda: cyconv.linear(np.zeros((2, 4)), W, np.zeros(4)),
     "linear: bias must have shape (3,), got (4,) (weight (3, 4))"),
    (lambda: cyconv.linear(np.zeros((2, 4)), W, np.zeros((1, 3))),
     "linear: bias must have shape (3,), got (1, 3) (weight (3, 4))"),
]


@pytest.mark.parametrize("call, message", LINEAR_ERRORS,
                         ids=[str(i) for i in range(len(LINEAR_ERRORS))])
def test_linear_error_messages(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_linear_dtype_errors():
    with pytest.raises(TypeError, match="linear: input is float32 but weight is float64; "
                                        "convert with weight.astype\\(np.float32\\)"):
        cyconv.linear(np.zeros((2, 4), np.float32), W)
    with pytest.raises(TypeError, match="linear: input is float16; float16 is supported for "
                                        "CuPy \\(GPU\\) arrays only"):
        cyconv.linear(np.zeros((2, 4), np.float16), W.astype(np.float16))
    with pytest.raises(TypeError, match="linear: input has unsupported dtype int64"):
        cyconv.linear(np.zeros((2, 4), np.int64), W)
