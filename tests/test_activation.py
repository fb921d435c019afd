"""Activations (``leaky_relu``, ``sigmoid``, ``tanh``, ``gelu``, ``silu``), ``softmax``,
``log_softmax`` and ``dropout``: functional ops, their gradients and the layers.

References are plain float64 NumPy formulas written here (``math.erf`` for GELU),
PyTorch when importable, and finite differences along a random direction.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import cyconv
from cyconv import nn
from conftest import (DTYPES, assert_close, assert_identical, to_numpy, torch_or_skip,
                      with_layout)

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _ref(name, x, *args):
    """float64 reference of activation ``name`` at ``x``."""
    x = np.asarray(x, np.float64)
    if name == "leaky_relu":
        slope = args[0] if args else 0.01
        return np.where(x > 0, x, x * slope)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu" and (not args or args[0] == "none"):
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name == "gelu":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "silu":
        return x / (1 + np.exp(-x))
    raise KeyError(name)


def _ref_grad(name, x, *args):
    """float64 derivative of activation ``name`` at ``x``, written out by hand."""
    x = np.asarray(x, np.float64)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, args[0] if args else 0.01)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-x))
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2
    if name == "gelu" and (not args or args[0] == "none"):
        return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    if name == "gelu":
        b, k = math.sqrt(2 / math.pi), 0.044715
        t = np.tanh(b * (x + k * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * b * (1 + 3 * k * x * x)
    if name == "silu":
        s = 1 / (1 + np.exp(-x))
        return s * (1 + x * (1 - s))
    raise KeyError(name)


#: (name, extra args, whether the gradient reads the output)
ACTS = [("leaky_relu", (), False), ("leaky_relu", (0.2,), False), ("leaky_relu", (-0.5,), False),
        ("sigmoid", (), True), ("tanh", (), True), ("gelu", ("none",), False),
        ("gelu", ("tanh",), False), ("silu", (), False)]
ACT_IDS = [f"{n}{a}" for n, a, _ in ACTS]
#: the float32 kernels use polynomial approximations: a few ulp relative, and an absolute
#: 1e-5 on data of unit scale (conftest's float32 reference tolerance) where the formula
#: itself cancels (1 + tanh(x) for x << 0)
F32_TOL = 2e-6
F32_ATOL = 1e-5


def _act_close(actual, expected, dtype, what):
    if np.dtype(dtype) == np.float32:
        a = to_numpy(actual).astype(np.float64)
        assert to_numpy(actual).dtype == np.float32, what
        scale = max(1.0, float(np.max(np.abs(expected)))) if np.size(expected) else 1.0
        np.testing.assert_allclose(a, expected, rtol=F32_TOL, atol=F32_ATOL * scale,
                                   err_msg=what)
    else:
        assert_close(actual, expected, dtype, what=what)


def _grad_input(y, x, from_output):
    return y if from_output else x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "negative"])
def test_activation_matches_reference(act, dtype, layout, xp):
    name, args, from_output = act
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 50)) * 4).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    xa = with_layout(x, layout, xp)
    y = getattr(cyconv, name)(xa, *args)
    assert y.shape == x.shape and y.dtype == dtype
    _act_close(y, _ref(name, x, *args), dtype, f"{name} forward")
    gx = getattr(cyconv.grad, name)(with_layout(gy, layout, xp),
                                    _grad_input(y, xa, from_output), *args)
    _act_close(gx, gy.astype(np.float64) * _ref_grad(name, x, *args), dtype, f"{name} grad")
    np.testing.assert_array_equal(to_numpy(xa), x)           # the input is untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_special_values_match_torch(act, dtype):
    torch = torch_or_skip()
    name, args, _ = act
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 30, -30, 100, -100,
                  88.9, -88.9, 1e-4, -1e-4, 9.5, -9.5], dtype)
    y = getattr(cyconv, name)(x, *args)
    fn = getattr(torch.nn.functional, name) if name != "tanh" else torch.tanh
    targs = {"gelu": lambda a: {"approximate": a[0]} if a else {}}.get(name, lambda a: {})(args)
    want = fn(torch.from_numpy(x), *(args if name == "leaky_relu" else ()), **targs).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y, want, rtol=F32_TOL, atol=1e-37)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_gradient_finite_differences(act):
    name, args, from_output = act
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 33)) * 2
    x[np.abs(x) < 1e-3] = 0.5                     # away from leaky_relu's kink
    w = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)
    f = lambda z: float(np.sum(getattr(cyconv, name)(z, *args) * w))  # noqa: E731
    h = 1e-6
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    y = getattr(cyconv, name)(x, *args)
    gx = getattr(cyconv.grad, name)(w, _grad_input(y, x, from_output), *args)
    assert abs(fd - float(np.sum(gx * v))) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_and_layer_match_torch(act, dtype):
    torch = torch_or_skip()
    name, args, _ = act
    layers = {"leaky_relu": lambda: (nn.LeakyReLU(*args), torch.nn.LeakyReLU(*args)),
              "sigmoid": lambda: (nn.Sigmoid(), torch.nn.Sigmoid()),
              "tanh": lambda: (nn.Tanh(), torch.nn.Tanh()),
              "gelu": lambda: (nn.GELU(*args), torch.nn.GELU(*args)),
              "silu": lambda: (nn.SiLU(), torch.nn.SiLU())}
    ours, theirs = layers[name]()
    rng = np.random.default_rng(2)
    for _ in range(2):
        x = (rng.standard_normal((2, 3, 17)) * 3).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(gy))
        y = ours(x)
        gx = ours.backward(gy)
        tol = dict(rtol=F32_TOL, atol=F32_ATOL) if dtype == np.float32 else dict(rtol=1e-12,
                                                                               atol=1e-12)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_thread_count_does_not_change_results(act, num_threads):
    name, args, from_output = act
    x = np.random.default_rng(3).standard_normal(300_001).astype(np.float32) * 5
    out = []
    for n in (1, 2):
        num_threads(n)
        y = getattr(cyconv, name)(x, *args)
        out.append((y, getattr(cyconv.grad, name)(x, _grad_input(y, x, from_output), *args)))
    for a, b in zip(*out):
        assert_identical(a, b, f"{name} 1 vs 2 threads")


@pytest.mark.parametrize("shape", [(), (0,), (0, 3, 4), (1,)], ids=str)
@pytest.mark.parametrize("act", ACTS[:1] + ACTS[3:], ids=ACT_IDS[:1] + ACT_IDS[3:])
def test_activation_empty_and_scalar_inputs(shape, act):
    name, args, from_output = act
    x = np.full(shape, 0.5, np.float32)
    y = getattr(cyconv, name)(x, *args)
    assert y.shape == shape and y.dtype == np.float32
    gx = getattr(cyconv.grad, name)(np.ones(shape, np.float32),
                                    _grad_input(y, x, from_output), *args)
    assert gx.shape == shape


def test_activation_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"^sigmoid: input must be a NumPy or CuPy array, got "
                                        r"list$"):
        cyconv.sigmoid([1.0, 2.0])
    with pytest.raises(TypeError, match=r"^tanh: input has unsupported dtype int64; expected "
                                        r"one of float32, float64$"):
        cyconv.tanh(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"^gelu: approximate must be 'none' or 'tanh', got "
                                         r"'erf'$"):
        cyconv.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match=r"^GELU: approximate must be 'none' or 'tanh', got "
                                         r"'fast'$"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match=r"^leaky_relu: negative_slope must be a number, got "
                                        r"'a'$"):
        cyconv.leaky_relu(x, "a")
    with pytest.raises(ValueError, match=r"^silu: grad_output has shape \(2, 3\), but input "
                                         r"has shape \(3, 2\)$"):
        cyconv.grad.silu(x, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match=r"^sigmoid: grad_output is float32 but output is "
                                        r"float64"):
        cyconv.grad.sigmoid(x, np.zeros((2, 3)))


# -- softmax ------------------------------------------------------------------------------------

def _ref_softmax(x, dim, log):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x
    m = np.max(x, axis=dim, keepdims=True)
    e = np.exp(x - m)
    s = np.sum(e, axis=dim, keepdims=True)
    return (x - m - np.log(s)) if log else e / s


SOFTMAX_CASES = [((5, 7), 1), ((5, 7), 0), ((5, 7), -1), ((2, 64, 3, 5), 1),
                 ((3, 300, 2), 1), ((2, 3, 600), 2), ((4, 2, 3), -3), ((9,), 0), ((), 0),
                 ((), -1), ((0, 5), 1), ((3, 0, 2), 1)]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_matches_reference(case, dtype, log, xp):
    shape, dim = case
    name = "log_softmax" if log else "softmax"
    rng = np.random.default_rng(4)
    x = np.asarray(rng.standard_normal(shape) * 5 + 50).astype(dtype)   # large: no overflow
    gy = np.asarray(rng.standard_normal(shape)).astype(dtype)
    layout = "negative" if x.ndim else "contiguous"
    y = getattr(cyconv, name)(with_layout(x, layout, xp) if x.ndim else xp.asarray(x), dim)
    assert y.shape == shape and y.dtype == dtype
    ref = _ref_softmax(x, dim, log)
    _act_close(y, ref, dtype, f"{name} forward")
    gx = getattr(cyconv.grad, name)(xp.asarray(gy), y, dim)
    g64 = gy.astype(np.float64)
    if log:
        want = g64 - np.exp(ref) * np.sum(g64, axis=dim, keepdims=True)
    else:
        want = ref * (g64 - np.sum(g64 * ref, axis=dim, keepdims=True))
    _act_close(gx, want, dtype, f"{name} grad")


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_gradient_finite_differences_and_torch(log):
    name = "log_softmax" if log else "softmax"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 4))
    w, v = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    f = lambda z: float(np.sum(getattr(cyconv, name)(z, 1) * w))  # noqa: E731
    h = 1e-6
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    y = getattr(cyconv, name)(x, 1)
    gx = getattr(cyconv.grad, name)(w, y, 1)
    assert abs(fd - float(np.sum(gx * v))) <= 1e-7 * max(1.0, abs(fd))
    torch = pytest.importorskip("torch")
    layer = (nn.LogSoftmax if log else nn.Softmax)(dim=1)
    tlayer = (torch.nn.LogSoftmax if log else torch.nn.Softmax)(dim=1)
    tx = torch.from_numpy(x).requires_grad_()
    tlayer(tx).backward(torch.from_numpy(w))
    np.testing.assert_allclose(layer(x), tlayer(torch.from_numpy(x)).numpy(), rtol=1e-13,
                               atol=1e-14)
    np.testing.assert_allclose(layer.backward(w), tx.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_softmax_nan_and_inf_rows_match_torch():
    torch = torch_or_skip()
    x = np.array([[1, 2, np.nan], [-np.inf, -np.inf, -np.inf], [-np.inf, 0, 1],
                  [1e30, -1e30, 0]], np.float32)
    for name in ("softmax", "log_softmax"):
        for dim in (1, 0):
            y = getattr(cyconv, name)(x, dim)
            want = getattr(torch, name)(torch.from_numpy(x), dim).numpy()
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=name)
            np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7, err_msg=name)


def test_softmax_thread_count_does_not_change_results(num_threads):
    x = np.random.default_rng(6).standard_normal((8, 64, 40, 41)).astype(np.float32)
    out = []
    for n in (1, 2):
        num_threads(n)
        y1, y2 = cyconv.softmax(x, 1), cyconv.log_softmax(x, -1)
        out.append((y1, y2, cyconv.grad.softmax(x, y1, 1), cyconv.grad.log_softmax(x, y2, -1)))
    for a, b in zip(*out):
        assert_identical(a, b, "softmax 1 vs 2 threads")


def test_softmax_layer_default_dim_is_torchs_legacy_choice():
    x = np.random.default_rng(7).standard_normal((2, 3, 4))
    np.testing.assert_allclose(nn.Softmax()(x), cyconv.softmax(x, 0))
    np.testing.assert_allclose(nn.LogSoftmax()(x[0]), cyconv.log_softmax(x[0], 1))


def test_softmax_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^softmax: dim=2 is out of range for a 2-D input "
                                         r"\(expected an int in \[-2, 1\]\)$"):
        cyconv.softmax(x, 2)
    with pytest.raises(ValueError, match=r"^log_softmax: dim=None is out of range"):
        cyconv.log_softmax(x, None)
    with pytest.raises(ValueError, match=r"^softmax: grad_output has shape \(3,\), but output "
                                         r"has shape \(2, 3\)$"):
        cyconv.grad.softmax(np.zeros(3, np.float32), x, 1)


# -- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_dropout_scales_kept_elements_and_is_seeded(p, dtype, xp):
    x = xp.asarray(np.random.default_rng(8).standard_normal((40, 500)).astype(dtype))
    cyconv.manual_seed(11)
    y, mask = cyconv.dropout(x, p, return_mask=True)
    cyconv.manual_seed(11)
    y2 = cyconv.dropout(x, p)
    assert_identical(y, y2, "same seed, same mask")
    y, mask, xn = to_numpy(y), to_numpy(mask), to_numpy(x)
    assert mask.dtype == np.bool_ and y.dtype == dtype
    keep = 1 - p
    assert abs(mask.mean() - keep) < 0.02
    scale = dtype(0.0 if p == 1 else 1.0 / (1.0 - p))
    np.testing.assert_array_equal(y, np.where(mask, xn * scale, xn * dtype(0)))
    gy = np.random.default_rng(9).standard_normal(y.shape).astype(dtype)
    gx = cyconv.grad.dropout(xp.asarray(gy), xp.asarray(mask), p)
    np.testing.assert_array_equal(to_numpy(gx), np.where(mask, gy * scale, gy * dtype(0)))


def test_dropout_eval_mode_nan_and_layer():
    x = np.array([np.nan, np.inf, 1.0, 2.0] * 50, np.float32)
    assert cyconv.dropout(x, 0.5, training=False) is x          # PyTorch returns the input
    cyconv.manual_seed(0)
    y, mask = cyconv.dropout(x, 0.5, return_mask=True)
    assert np.isnan(y[~mask & ~np.isfinite(x)]).all()           # NaN/Inf * 0 = NaN, as torch
    layer = nn.Dropout(0.3)
    cyconv.manual_seed(1)
    y = layer(x[2::4])                                         # ones
    gx = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(gx, y)
    layer.eval()
    assert layer(x) is x
    assert layer.backward(x) is x


def test_dropout_threads_and_errors(num_threads):
    x = np.ones(200_001, np.float32)
    out = []
    for n in (1, 2):
        num_threads(n)
        cyconv.manual_seed(5)
        out.append(cyconv.dropout(x, 0.4))
    assert_identical(out[0], out[1], "dropout 1 vs 2 threads")
    for bad in (-0.1, 1.5, "a", True, None):
        with pytest.raises(ValueError, match=r"^dropout: p must be a probability in \[0, 1\], "
                                             r"got "):
            cyconv.dropout(x, bad)
    with pytest.raises(ValueError, match=r"^Dropout: p must be a probability in \[0, 1\], got "
                                         r"1.5$"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match=r"^dropout: mask must be a bool array"):
        cyconv.grad.dropout(x, x, 0.5)


# -- identity -----------------------------------------------------------------------------------

def test_identity_layer():
    x = np.arange(6.0).reshape(2, 3)
    layer = nn.Identity(54, unused="ignored")
    assert layer(x) is x
    assert layer.backward(x) is x
    assert list(layer.state_dict()) == []


# -- the layers benchmark's command line ----------------------------------------------------------

def test_bench_layers_flag_writes_a_report(monkeypatch, tmp_path):
    from cyconv import _bench, _bench_layers
    seen = {}

    def fake_run(threads, repeats, min_time, seed):
        seen.update(threads=threads, repeats=repeats)
        row = {"layer": "BatchNorm2d", "target": 1.0, "check": "ok",
               "ms": {"cyconv": 1.0, "torch": 2.0}, "ratio": 0.5, "met": True, "number": {}}
        return {"settings": {"threads": threads, "repeats": repeats, "min_time": min_time,
                             "warmup": 2, "shape": _bench_layers.SHAPE, "dtype": "float32",
                             "load_average": [0.5, 0.7]},
                "torch": {"version": "x"}, "info": {"version": "0", "simd": "avx2",
                                                    "openmp": True}, "rows": [row]}

    monkeypatch.setattr(_bench_layers, "run", fake_run)
    out = tmp_path / "layers.md"
    assert _bench.main(["--layers", "--repeats", "3", "--out", str(out)]) == 0
    assert seen == {"threads": 2, "repeats": 3}
    text = out.read_text()
    assert "`python -m cyconv bench --layers --repeats 3 --out " in text
    assert "| BatchNorm2d | 1.00 | 2.00 | 0.50 | 1.0 | yes | ok |" in text
    assert (tmp_path / "layers.json").exists()
