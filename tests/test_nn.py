"""``cyconv.nn``: layers, containers and losses against PyTorch, plus their contracts.

PyTorch is the oracle: each test builds the same layer in both libraries (same class
name, same arguments), loads the PyTorch module's ``state_dict`` (converted with
``.numpy()``) into the cyconv layer, and compares the forward output, the input
gradient and every parameter gradient.  The cyconv layer runs in float32 and float64;
the PyTorch oracle always runs in float64 on the very same values (the float32 weights
and inputs, widened), so the comparison is against a float64 reference.

Without PyTorch those tests skip; the contract tests (state_dict round trip and its
errors, backward before forward, dtype and device errors, initialisation) still run.
"""
from __future__ import annotations

import importlib.util
import io
import math
import re
from collections import OrderedDict

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, assert_close, to_numpy, torch_or_skip
from cyconv import nn

# PyTorch warns that 'same' with an even kernel copies the input; that is its business.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def _torch():
    torch = torch_or_skip()
    torch.set_num_threads(1)    # the cores are shared; torch is only an oracle here
    return torch


def _torch_dtype(torch, dtype):
    return torch.float32 if np.dtype(dtype) == np.float32 else torch.float64


def numpy_state(tmod):
    """A PyTorch state_dict as users convert it: ``{k: v.numpy()}``."""
    return OrderedDict((k, v.detach().numpy()) for k, v in tmod.state_dict().items())


def compare_with_torch(tmod, cmod, x, dtype, call_kwargs=None, seed=1):
    """Forward, input gradient and every parameter gradient of ``cmod`` vs ``tmod``.

    ``tmod`` holds the same values as ``cmod`` and is widened to float64 here; ``x`` is
    the input in ``dtype``.  Gradients start from a random ``grad_output``.
    """
    torch = _torch()
    call_kwargs = call_kwargs or {}
    tmod = tmod.double()
    y = cmod(x, **call_kwargs)
    gy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    xt = torch.tensor(to_numpy(x), dtype=torch.float64, requires_grad=True)
    yt = tmod(xt, **call_kwargs)
    assert_close(y, yt.detach().numpy(), dtype, what="forward")
    gx = cmod.backward(gy)
    yt.backward(torch.tensor(gy, dtype=torch.float64))
    assert_close(gx, xt.grad.numpy(), dtype, what="input gradient")
    tparams = OrderedDict(tmod.named_parameters())
    cparams = OrderedDict(cmod.named_parameters())
    assert list(cparams) == list(tparams)
    for name, p in cparams.items():
        assert p.grad is not None, name
        assert p.grad.dtype == np.dtype(dtype), name
        assert_close(p.grad, tparams[name].grad.numpy(), dtype, what=f"gradient of {name}")
    return y, gx


def make_pair(name, args, kwargs, dtype, has_params=True):
    """The same layer built by torch.nn and cyconv.nn, holding the same values."""
    torch = _torch()
    if has_params:
        tmod = getattr(torch.nn, name)(*args, **kwargs, dtype=_torch_dtype(torch, dtype))
        cmod = getattr(nn, name)(*args, **kwargs, dtype=dtype)
        cmod.load_state_dict(numpy_state(tmod))
    else:
        tmod = getattr(torch.nn, name)(*args, **kwargs)
        cmod = getattr(nn, name)(*args, **kwargs)
    return tmod, cmod


def random_input(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- every layer against PyTorch --------------------------------------------------------------

# (layer name, constructor args, constructor kwargs, batched input shape)
PARAM_LAYERS = [
    ("Conv1d", (3, 4, 3), {}, (2, 3, 10)),
    ("Conv1d", (3, 4, 3), dict(stride=2, padding=2, dilation=2), (2, 3, 11)),
    ("Conv1d", (4, 6, 4), dict(padding="same", groups=2, bias=False), (2, 4, 9)),
    ("Conv2d", (3, 4, 3), dict(padding=1), (2, 3, 7, 6)),
    ("Conv2d", (4, 6, (3, 2)), dict(stride=(2, 1), padding=(1, 0), groups=2), (2, 4, 8, 5)),
    ("Conv2d", (4, 4, 3), dict(groups=4, dilation=2, padding="valid"), (2, 4, 9, 8)),
    ("Conv2d", (3, 5, (4, 3)), dict(padding="same", dilation=(1, 2)), (2, 3, 7, 8)),
    ("Conv3d", (2, 3, 3), dict(stride=2, padding=1), (2, 2, 5, 6, 4)),
    ("Conv3d", (4, 2, (2, 3, 1)), dict(groups=2, bias=False), (2, 4, 4, 5, 3)),
    ("ConvTranspose1d", (4, 3, 3), dict(stride=2, padding=1, output_padding=1), (2, 4, 6)),
    ("ConvTranspose1d", (4, 6, 3), dict(groups=2, dilation=2, bias=False), (2, 4, 5)),
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 4, 5)),
    ("ConvTranspose2d", (3, 2, (2, 3)), dict(stride=(1, 2), dilation=(2, 1),
                                             output_padding=(1, 0)), (2, 3, 3, 4)),
    ("ConvTranspose3d", (2, 3, 2), dict(stride=2, padding=(0, 1, 0)), (2, 2, 3, 3, 2)),
    ("Linear", (7, 5), {}, (3, 7)),
    ("Linear", (7, 5), dict(bias=False), (2, 3, 7)),
]

PADDING_MODE_LAYERS = [
    (name, args, dict(kwargs, padding_mode=mode), shape)
    for mode in ("reflect", "replicate", "circular")
    for name, args, kwargs, shape in [
        ("Conv1d", (3, 4, 3), dict(padding=2), (2, 3, 7)),
        ("Conv1d", (3, 4, 4), dict(padding="same", dilation=2), (2, 3, 9)),
        ("Conv2d", (3, 4, 3), dict(padding=(2, 1), stride=2), (2, 3, 7, 6)),
        ("Conv2d", (4, 4, 4), dict(padding="same", groups=2), (2, 4, 6, 7)),
        ("Conv3d", (2, 3, 3), dict(padding=1), (2, 2, 4, 5, 3)),
    ]]

PARAMETERLESS_LAYERS = [
    ("ReLU", (), {}, (2, 3, 5, 4)),
    ("MaxPool1d", (3,), dict(stride=2, padding=1), (2, 3, 10)),
    ("MaxPool2d", (2,), {}, (2, 3, 6, 8)),
    ("MaxPool2d", ((3, 2),), dict(stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True),
     (2, 3, 7, 8)),
    ("MaxPool3d", (2,), dict(stride=(1, 2, 2)), (2, 2, 4, 5, 4)),
    ("AvgPool1d", (3,), dict(stride=2, padding=1, count_include_pad=False), (2, 3, 10)),
    ("AvgPool2d", (2,), dict(stride=3, ceil_mode=True), (2, 3, 7, 7)),
    ("AvgPool2d", (3,), dict(stride=2, padding=1, divisor_override=4), (2, 3, 6, 7)),
    ("AvgPool3d", ((2, 1, 2),), dict(padding=(1, 0, 0), count_include_pad=False),
     (2, 2, 4, 3, 4)),
    ("AdaptiveAvgPool1d", (4,), {}, (2, 3, 10)),
    ("AdaptiveAvgPool2d", ((3, 2),), {}, (2, 3, 7, 5)),
    ("AdaptiveAvgPool2d", ((None, 3),), {}, (2, 3, 4, 7)),
    ("AdaptiveAvgPool3d", (2,), {}, (2, 2, 5, 4, 3)),
    ("Flatten", (), {}, (2, 3, 4, 5)),
    ("Flatten", (0, 1), {}, (2, 3, 4)),
]


def _case_id(case):
    name, args, kwargs, _ = case
    parts = [name] + [str(a).replace(" ", "") for a in args]
    parts += [f"{k}={v}".replace(" ", "") for k, v in kwargs.items()]
    return "-".join(parts)


def _input_shape(shape, batched):
    return shape if batched else shape[1:]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", PARAM_LAYERS + PADDING_MODE_LAYERS,
                         ids=[_case_id(c) for c in PARAM_LAYERS + PADDING_MODE_LAYERS])
def test_layer_matches_torch(case, dtype, batched):
    name, args, kwargs, shape = case
    tmod, cmod = make_pair(name, args, kwargs, dtype)
    x = random_input(_input_shape(shape, batched), dtype)
    compare_with_torch(tmod, cmod, x, dtype)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", PARAMETERLESS_LAYERS,
                         ids=[_case_id(c) for c in PARAMETERLESS_LAYERS])
def test_parameterless_layer_matches_torch(case, dtype, batched):
    name, args, kwargs, shape = case
    tmod, cmod = make_pair(name, args, kwargs, dtype, has_params=False)
    x = random_input(_input_shape(shape, batched), dtype)
    compare_with_torch(tmod, cmod, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_unbatched_equals_first_sample_of_batched(dtype):
    """Every padding mode: an unbatched call gives batched[0], forward and backward."""
    for mode in ("zeros", "reflect", "replicate", "circular"):
        layer = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, dtype=dtype)
        x = random_input((1, 3, 5, 6), dtype)
        y_b = layer(x)
        gy = random_input(y_b.shape, dtype, seed=3)
        gx_b = layer.backward(gy)
        gw_b = layer.weight.grad.copy()
        layer.zero_grad()
        y_u = layer(x[0])
        gx_u = layer.backward(gy[0])
        assert_close(y_u, y_b[0], dtype, kind="parity", what=mode)
        assert_close(gx_u, gx_b[0], dtype, kind="parity", what=mode)
        assert_close(layer.weight.grad, gw_b, dtype, kind="parity", what=mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("output_size", [(9, 11), (10, 12), (2, 6, 10, 11)],
                         ids=["min", "max", "with-batch-dims"])
def test_conv_transpose_output_size_matches_torch(dtype, output_size):
    tmod, cmod = make_pair("ConvTranspose2d", (6, 4, 3), dict(stride=2, padding=1, groups=2),
                           dtype)
    x = random_input((2, 6, 5, 6), dtype)
    y, _ = compare_with_torch(tmod, cmod, x, dtype, dict(output_size=output_size))
    assert y.shape[-2:] == tuple(output_size[-2:])


def test_conv_transpose_output_size_out_of_range():
    layer = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    x = np.zeros((1, 2, 5, 6), np.float32)
    msg = ("ConvTranspose2d: requested an output size of (11, 11), but valid sizes range from "
           "(9, 11) to (10, 12) (for an input of (5, 6))")
    with pytest.raises(ValueError, match=re.escape(msg)):
        layer(x, output_size=(11, 11))
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        layer(x, output_size=(1, 2, 10))


def test_non_zero_padding_mode_enforces_pad_limits():
    """Reflect padding must be smaller than the input (C10): a clear ValueError."""
    layer = nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect")
    with pytest.raises(ValueError, match="reflect"):
        layer(np.zeros((1, 1, 4, 4), np.float32))


# -- separable blocks against the equivalent PyTorch pairs --------------------------------------

def torch_depthwise_separable(torch, c_in, c_out, k, stride, padding, dilation, bias):
    return torch.nn.Sequential(OrderedDict(
        depthwise=torch.nn.Conv2d(c_in, c_in, k, stride, padding, dilation, groups=c_in,
                                  bias=bias),
        pointwise=torch.nn.Conv2d(c_in, c_out, 1, bias=bias)))


def torch_spatial_separable(torch, c_in, c_out, k, stride, padding, bias):
    return torch.nn.Sequential(OrderedDict(
        vertical=torch.nn.Conv2d(c_in, c_out, (k, 1), (stride, 1), (padding, 0), bias=bias),
        horizontal=torch.nn.Conv2d(c_out, c_out, (1, k), (1, stride), (0, padding),
                                   bias=bias)))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("args", [(3, 5, 3, 1, 1, 1, True), (4, 6, (3, 2), 2, 0, 1, False),
                                  (2, 3, 3, 1, 2, 2, True)], ids=str)
def test_depthwise_separable_matches_torch_pair(args, dtype, batched):
    torch = _torch()
    c_in, c_out, k, s, p, d, bias = args
    tmod = torch_depthwise_separable(torch, c_in, c_out, k, s, p, d, bias)
    cmod = nn.DepthwiseSeparableConv2d(c_in, c_out, k, stride=s, padding=p, dilation=d,
                                       bias=bias, dtype=dtype)
    expected_keys = ["depthwise.weight", "pointwise.weight"]
    if bias:
        expected_keys = ["depthwise.weight", "depthwise.bias", "pointwise.weight",
                         "pointwise.bias"]
    assert list(cmod.state_dict()) == expected_keys
    cmod.load_state_dict(numpy_state(tmod))
    x = random_input(_input_shape((2, c_in, 9, 8), batched), dtype)
    compare_with_torch(tmod, cmod, x, dtype)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("args", [(3, 4, 3, 1, 1, True), (2, 5, 5, 2, 2, False),
                                  (3, 3, 3, 2, 0, True)], ids=str)
def test_spatial_separable_matches_torch_pair(args, dtype, batched):
    torch = _torch()
    c_in, c_out, k, s, p, bias = args
    tmod = torch_spatial_separable(torch, c_in, c_out, k, s, p, bias)
    cmod = nn.SpatialSeparableConv2d(c_in, c_out, k, stride=s, padding=p, bias=bias,
                                     dtype=dtype)
    assert cmod.vertical.weight.shape == (c_out, c_in, k, 1)
    assert cmod.horizontal.weight.shape == (c_out, c_out, 1, k)
    assert cmod.vertical.stride == (s, 1) and cmod.horizontal.stride == (1, s)
    cmod.load_state_dict(numpy_state(tmod))
    x = random_input(_input_shape((2, c_in, 9, 10), batched), dtype)
    compare_with_torch(tmod, cmod, x, dtype)


def test_spatial_separable_same_padding_keeps_size():
    layer = nn.SpatialSeparableConv2d(2, 3, 5, padding="same")
    assert layer(np.zeros((1, 2, 7, 9), np.float32)).shape == (1, 3, 7, 9)
    layer = nn.SpatialSeparableConv2d(2, 3, 3, stride=2, padding="same")
    assert layer(np.zeros((1, 2, 7, 9), np.float32)).shape == (1, 3, 4, 5)


# -- whole networks end to end ------------------------------------------------------------------

def encoder_decoder(lib, dtype):
    """11 layers: reflect-padded conv, separable blocks, pooling, a transposed head."""
    m = lib.nn
    if lib is cyconv:
        sep_d = nn.DepthwiseSeparableConv2d(8, 16, 3, padding=1, dtype=dtype)
        sep_s = nn.SpatialSeparableConv2d(16, 16, 3, padding=1, dtype=dtype)
        kw = dict(dtype=dtype)
    else:
        sep_d = torch_depthwise_separable(lib, 8, 16, 3, 1, 1, 1, True).to(dtype)
        sep_s = torch_spatial_separable(lib, 16, 16, 3, 1, 1, True).to(dtype)
        kw = dict(dtype=dtype)
    return m.Sequential(
        m.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", **kw),
        m.ReLU(),
        m.MaxPool2d(2),
        sep_d,
        m.ReLU(),
        sep_s,
        m.ReLU(),
        m.AvgPool2d(2),
        m.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, **kw),
        m.ReLU(),
        m.ConvTranspose2d(8, 4, 2, stride=2, **kw),
    )


def small_classifier(lib, dtype):
    m = lib.nn
    return m.Sequential(
        m.Conv2d(1, 6, 3, padding=1, dtype=dtype), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(6, 8, 3, padding=1, padding_mode="circular", dtype=dtype), m.ReLU(),
        m.AdaptiveAvgPool2d(2), m.Flatten(), m.Linear(32, 16, dtype=dtype), m.ReLU(),
        m.Linear(16, 10, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_encoder_decoder_network_matches_torch(dtype):
    torch = _torch()
    tmod = encoder_decoder(torch, _torch_dtype(torch, dtype))
    cmod = encoder_decoder(cyconv, dtype)
    assert len(list(cmod.modules())) >= 12
    assert list(cmod.state_dict()) == list(tmod.state_dict())
    cmod.load_state_dict(numpy_state(tmod))
    x = random_input((2, 3, 16, 12), dtype)
    y, _ = compare_with_torch(tmod, cmod, x, dtype)
    assert y.shape == (2, 4, 16, 12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_classifier_with_cross_entropy_matches_torch(dtype):
    torch = _torch()
    tmod = small_classifier(torch, _torch_dtype(torch, dtype))
    cmod = small_classifier(cyconv, dtype)
    cmod.load_state_dict(numpy_state(tmod))
    tmod = tmod.double()
    x = random_input((5, 1, 8, 8), dtype)
    target = np.array([3, 0, 9, 3, 7])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(cmod(x), target)
    cmod.backward(loss_fn.backward())
    xt = torch.tensor(x, dtype=torch.float64)
    lt = torch.nn.CrossEntropyLoss()(tmod(xt), torch.tensor(target))
    lt.backward()
    assert loss.shape == ()
    assert_close(loss, lt.detach().numpy(), dtype, what="loss")
    tparams = dict(tmod.named_parameters())
    for name, p in cmod.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), dtype, what=name)


def test_backward_accumulates_into_grad():
    layer = nn.Conv2d(2, 3, 3)
    x = random_input((2, 2, 5, 5), np.float64).astype(np.float32)
    gy = np.ones((2, 3, 3, 3), np.float32)
    layer(x)
    layer.backward(gy)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(gy)
    assert_close(layer.weight.grad, 2 * once.astype(np.float64), np.float32, kind="parity")
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


# -- losses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(6, 5), (5,), (3, 4, 2, 3)], ids=str)
def test_cross_entropy_matches_torch(shape, dtype, reduction):
    torch = _torch()
    rng = np.random.default_rng(0)
    logits = (4 * rng.standard_normal(shape)).astype(dtype)
    cls_axis = 0 if len(shape) == 1 else 1
    t_shape = tuple(s for i, s in enumerate(shape) if i != cls_axis)
    target = rng.integers(0, shape[cls_axis], size=t_shape)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    loss = loss_fn(logits, target)
    gl = None if reduction != "none" else rng.standard_normal(t_shape).astype(dtype)
    g = loss_fn.backward(gl)
    lt_in = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss(reduction=reduction)(lt_in, torch.tensor(target))
    lt.backward(None if gl is None else torch.tensor(gl, dtype=torch.float64))
    assert loss.dtype == np.dtype(dtype)
    assert_close(loss, lt.detach().numpy(), dtype, what="loss")
    assert_close(g, lt_in.grad.numpy(), dtype, what="gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mse_matches_torch(dtype, reduction):
    torch = _torch()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    t = rng.standard_normal((4, 3, 5)).astype(dtype)
    loss_fn = nn.MSELoss(reduction=reduction)
    loss = loss_fn(x, t)
    gl = None if reduction != "none" else rng.standard_normal(x.shape).astype(dtype)
    g = loss_fn.backward(gl)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.MSELoss(reduction=reduction)(xt, torch.tensor(t, dtype=torch.float64))
    lt.backward(None if gl is None else torch.tensor(gl, dtype=torch.float64))
    assert_close(loss, lt.detach().numpy(), dtype, what="loss")
    assert_close(g, xt.grad.numpy(), dtype, what="gradient")


def test_cross_entropy_is_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss_fn = nn.CrossEntropyLoss()
    assert float(loss_fn(logits, np.array([0]))) == 0.0
    assert float(loss_fn(logits, np.array([2]))) == pytest.approx(2000.0)
    assert np.isfinite(loss_fn.backward()).all()


def test_loss_errors():
    ce = nn.CrossEntropyLoss()
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "CrossEntropyLoss: target contains class 4, outside [0, 4) for logits of shape "
            "(3, 4)")):
        ce(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=re.escape(
            "CrossEntropyLoss: target has shape (2,), expected (3,) for logits of shape (3, 4)")):
        ce(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        ce(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.CrossEntropyLoss(reduction="avg")
    mse = nn.MSELoss()
    with pytest.raises(ValueError, match=re.escape(
            "MSELoss: input has shape (2, 3) but target has (3,); they must match")):
        mse(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(TypeError, match=re.escape(
            "MSELoss: input is float32 but target is float64; convert with "
            "target.astype(np.float32)")):
        mse(np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(RuntimeError, match="MSELoss.backward was called before forward"):
        nn.MSELoss().backward()


# -- state_dict ---------------------------------------------------------------------------------

def test_state_dict_round_trip_between_cyconv_models():
    cyconv.manual_seed(1)
    a = small_classifier(cyconv, np.float32)
    cyconv.manual_seed(2)
    b = small_classifier(cyconv, np.float32)
    x = random_input((3, 1, 8, 8), np.float32)
    assert not np.array_equal(a(x), b(x))
    info = b.load_state_dict(a.state_dict())
    assert info.missing_keys == [] and info.unexpected_keys == []
    np.testing.assert_array_equal(a(x), b(x))


def test_state_dict_is_a_snapshot_and_load_copies():
    layer = nn.Linear(3, 2)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias"] and sd["weight"].shape == (2, 3)
    before = sd["weight"].copy()
    layer.weight.data += 1
    np.testing.assert_array_equal(sd["weight"], before)
    weight_array = layer.weight.data
    layer.load_state_dict(sd)
    assert layer.weight.data is weight_array            # copied in place
    sd["weight"][...] = 7
    np.testing.assert_array_equal(layer.weight.data, before)


def test_load_state_dict_keeps_dtype():
    layer = nn.Conv1d(2, 3, 3)                          # float32
    sd = {k: v.astype(np.float64) + 0.5 for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, sd["weight"].astype(np.float32))


def test_torch_cyconv_torch_round_trip():
    """I2: a grouped, strided transposed conv with output_padding, there and back."""
    torch = _torch()
    tmod = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                    dtype=torch.float64)
    cmod = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                              dtype=np.float64)
    cmod.load_state_dict(numpy_state(tmod))
    back = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                    dtype=torch.float64)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in cmod.state_dict().items()})
    x = random_input((2, 4, 5, 5), np.float64)
    y = cmod(x)
    with torch.no_grad():
        y_back = back(torch.from_numpy(x)).numpy()
    assert_close(y, y_back, np.float64)


def test_load_state_dict_errors():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(4, 2))
    good = model.state_dict()
    missing = dict(good)
    del missing["2.bias"]
    with pytest.raises(ValueError, match=re.escape(
            "Sequential.load_state_dict: missing keys ['2.bias']")):
        model.load_state_dict(missing)
    extra = dict(good, **{"1.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=re.escape("unexpected keys ['1.weight']")):
        model.load_state_dict(extra)
    bad_shape = dict(good, **{"0.weight": np.zeros((2, 1, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=re.escape(
            "Sequential.load_state_dict: shape mismatch for '0.weight': the state_dict has "
            "(2, 1, 5, 5), the model (2, 1, 3, 3)")):
        model.load_state_dict(bad_shape)
    # nothing was copied by the failed loads
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, good[k])
    info = model.load_state_dict(missing, strict=False)
    assert info.missing_keys == ["2.bias"] and info.unexpected_keys == []


# -- errors and contracts -----------------------------------------------------------------------

ALL_LAYERS = [
    lambda: nn.Conv1d(1, 1, 1), lambda: nn.Conv2d(1, 1, 1), lambda: nn.Conv3d(1, 1, 1),
    lambda: nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"),
    lambda: nn.ConvTranspose1d(1, 1, 1), lambda: nn.ConvTranspose2d(1, 1, 1),
    lambda: nn.ConvTranspose3d(1, 1, 1), lambda: nn.DepthwiseSeparableConv2d(1, 1, 1),
    lambda: nn.SpatialSeparableConv2d(1, 1, 1), lambda: nn.ReLU(), lambda: nn.MaxPool2d(1),
    lambda: nn.AvgPool2d(1), lambda: nn.AdaptiveAvgPool2d(1), lambda: nn.Flatten(),
    lambda: nn.Linear(1, 1), lambda: nn.Sequential(nn.ReLU()), lambda: nn.CrossEntropyLoss(),
]


@pytest.mark.parametrize("factory", ALL_LAYERS, ids=lambda f: repr(f()).split("(")[0])
def test_backward_before_forward_raises(factory):
    layer = factory()
    with pytest.raises(RuntimeError, match=re.escape(
            f"{type(layer).__name__}.backward was called before forward")):
        layer.backward(np.ones((1, 1, 1, 1), np.float32))


def test_dtype_mismatch_hint():
    layer = nn.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match=re.escape(
            "Conv2d: input is float64 but the layer's weight is float32; convert with "
            "x.astype(np.float32) or build the layer with dtype=np.float64")):
        layer(np.zeros((1, 3, 5, 5)))
    with pytest.raises(TypeError, match="Linear: input is float32 but the layer's weight is "
                                        "float64"):
        nn.Linear(3, 2, dtype=np.float64)(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="float16 is supported for CuPy"):
        nn.Conv2d(1, 1, 1, dtype=np.float16)
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array, got builtins.list"):
        layer([[1.0]])


def test_constructor_errors():
    with pytest.raises(ValueError, match=re.escape(
            "Conv2d: groups=3 does not divide in_channels=4")):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="Conv2d: padding_mode must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=re.escape(
            'ConvTranspose2d: only "zeros" padding_mode is supported for ConvTranspose2d, '
            "got 'circular'")):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="circular")
    with pytest.raises(ValueError, match="Conv2d: stride must be positive"):
        nn.Conv2d(1, 1, 3, stride=0)
    with pytest.raises(ValueError, match="Conv1d: unknown padding 'full'"):
        nn.Conv1d(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match="ConvTranspose2d: padding must be an int or a tuple"):
        nn.ConvTranspose2d(1, 1, 3, padding="same")
    with pytest.raises(ValueError, match="ConvTranspose1d: output_padding=.2,. must be"):
        nn.ConvTranspose1d(1, 1, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="SpatialSeparableConv2d: kernel_size must be a "
                                         "positive int"):
        nn.SpatialSeparableConv2d(1, 1, (3, 3))
    with pytest.raises(ValueError, match="Linear: in_features must be a non-negative int"):
        nn.Linear(-1, 2)


def test_channel_mismatch_is_reported_by_the_op():
    with pytest.raises(ValueError, match="has 4 channels"):
        nn.Conv2d(3, 2, 3)(np.zeros((1, 4, 5, 5), np.float32))


# -- initialisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("factory, fan_in", [
    (lambda: nn.Conv2d(16, 32, 3), 16 * 9),
    (lambda: nn.Conv2d(16, 32, 3, groups=4), 4 * 9),
    (lambda: nn.ConvTranspose2d(16, 32, 3, groups=2), 16 * 9),   # weight dim 1 = 32 / 2
    (lambda: nn.Conv1d(8, 64, 5), 40),
    (lambda: nn.Linear(100, 300), 100),
], ids=["conv2d", "conv2d-groups", "conv_transpose2d", "conv1d", "linear"])
def test_init_follows_torch_defaults(factory, fan_in):
    cyconv.manual_seed(0)
    layer = factory()
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data.astype(np.float64)
    assert layer.weight.dtype == np.float32
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.98 * bound                       # uniform up to the bound
    assert abs(w.mean()) < 0.05 * bound
    assert w.var() == pytest.approx(bound ** 2 / 3, rel=0.1)   # variance of U(-b, b)
    b = layer.bias.data
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound


def test_init_bounds_match_torch():
    torch = _torch()
    for tm, cm in [(torch.nn.Conv2d(6, 8, 3, groups=2), nn.Conv2d(6, 8, 3, groups=2)),
                   (torch.nn.ConvTranspose1d(4, 6, 5), nn.ConvTranspose1d(4, 6, 5)),
                   (torch.nn.Linear(20, 30), nn.Linear(20, 30))]:
        # PyTorch's defaults: weight kaiming_uniform(a=sqrt(5)) and bias U(-b, b), both
        # with b = 1/sqrt(fan_in) (fan_in as torch computes it from the weight)
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(tm.weight)
        bound = 1.0 / np.sqrt(fan_in)
        for name, tp in tm.named_parameters():
            cp = getattr(cm, name).data
            assert cp.shape == tuple(tp.shape)
            assert np.abs(cp).max() <= bound * (1 + 1e-6)
            assert tp.abs().max().item() <= bound * (1 + 1e-6)
            if cp.size >= 30:   # P(max < b/2) = 2**-size: negligible
                assert np.abs(cp).max() >= 0.5 * bound


def test_manual_seed_reproduces_initialisation():
    cyconv.manual_seed(123)
    a = small_classifier(cyconv, np.float32).state_dict()
    cyconv.manual_seed(123)
    b = small_classifier(cyconv, np.float32).state_dict()
    cyconv.manual_seed(124)
    c = small_classifier(cyconv, np.float32).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="manual_seed: seed must be a non-negative int"):
        cyconv.manual_seed(-1)


# -- module API ---------------------------------------------------------------------------------

def test_module_traversal_train_eval_and_repr():
    model = nn.Sequential(nn.DepthwiseSeparableConv2d(2, 4, 3), nn.ReLU(), nn.Flatten())
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.depthwise.weight", "0.depthwise.bias", "0.pointwise.weight",
                     "0.pointwise.bias"]
    assert len(list(model.parameters())) == 4
    assert [n for n, _ in model.named_modules()] == ["", "0", "0.depthwise", "0.pointwise",
                                                     "1", "2"]
    assert model.eval() is model and not any(m.training for m in model.modules())
    assert model.train() is model and all(m.training for m in model.modules())
    assert "(depthwise): Conv2d(2, 2, kernel_size=(3, 3), stride=(1, 1), groups=2)" in repr(model)
    assert len(model) == 3 and isinstance(model[-1], nn.Flatten)
    assert list(model[1:].state_dict()) == []


def test_sequential_summary_prints_shape_chain():
    model = small_classifier(cyconv, np.float32)
    x = random_input((2, 1, 8, 8), np.float32)
    y = model(x)
    out = io.StringIO()
    model.summary((1, 1, 8, 8), file=out)
    text = out.getvalue()
    for shape in ["(1, 1, 8, 8)", "(1, 6, 8, 8)", "(1, 6, 4, 4)", "(1, 8, 2, 2)", "(1, 32)",
                  "(1, 10)"]:
        assert shape in text
    n = sum(p.size for p in model.parameters())
    assert f"total parameters: {n:,} (float32)" in text
    # the pending backward still refers to the batch of 2, not to summary's input
    assert model.backward(np.ones_like(y)).shape == (2, 1, 8, 8)


def test_to_dtype_and_device_errors():
    layer = nn.Conv2d(2, 3, 3)
    x = random_input((1, 2, 5, 5), np.float64)
    assert layer.to(np.float64) is layer
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    assert layer(x).dtype == np.float64
    assert layer.to("cpu").weight.dtype == np.float64
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        layer.to("tpu")
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(RuntimeError, match="the 'cuda' device needs CuPy"):
            layer.to("cuda")
        with pytest.raises(RuntimeError, match="needs CuPy"):
            nn.Linear(2, 2, device="cuda")


@pytest.mark.parametrize("xp", ["cupy"], indirect=True)
def test_layers_run_on_gpu_like_cpu(xp):
    """The same model on 'cuda' (CuPy arrays) matches the CPU, forward and backward."""
    cyconv.manual_seed(0)
    cpu = small_classifier(cyconv, np.float32)
    gpu = small_classifier(cyconv, np.float32).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    x = random_input((3, 1, 8, 8), np.float32)
    y = cpu(x)
    gx = cpu.backward(np.ones_like(y))
    yg = gpu(xp.asarray(x))
    gxg = gpu.backward(xp.ones_like(yg))
    assert_close(yg, y.astype(np.float64), np.float32, kind="parity")
    assert_close(gxg, gx.astype(np.float64), np.float32, kind="parity")
    with pytest.raises(TypeError, match="input is a NumPy array"):
        gpu(x)
