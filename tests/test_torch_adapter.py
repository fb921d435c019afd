"""``cyconv.torch``: autograd functions, functional wrappers, modules and ``convert``.

PyTorch is the oracle.  Each op runs through ``cyconv.torch`` in float32 and float64;
the reference is ``torch.nn.functional`` in float64 on the very same values (float32
inputs widened), so forward outputs and the gradients of input, weight and bias are all
compared against a float64 computation with the suite's tolerance table.
``torch.autograd.gradcheck`` checks the backward passes on small float64 cases, and a
small CNN trained for 20 SGD steps gives the same losses with and without ``convert``.
"""
from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional
ct = pytest.importorskip("cyconv.torch")

# PyTorch warns that 'same' with an even kernel copies the input; that is its business.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)    # the cores are shared; torch is only an oracle here
    yield
    torch.set_num_threads(before)


def _np_dtype(dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _check_against(out, grads, ref_out, ref_grads, dtype, what):
    """Compare an output and a list of gradients (None where absent) with references."""
    assert out.dtype == dtype, f"{what}: output dtype {out.dtype}"
    assert_close(out.detach().numpy(), ref_out.detach().numpy(), _np_dtype(dtype),
                 what=f"{what} output")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        if r is None:
            assert g is None, f"{what}: gradient {i} should be None"
            continue
        assert g is not None and g.dtype == dtype, f"{what}: gradient {i} dtype"
        assert_close(g.numpy(), r.numpy(), _np_dtype(dtype), what=f"{what} gradient {i}")


def _run(fn, tensors, gy_seed=99):
    """fn(*tensors) and the gradients of <fn(...), gy> w.r.t. each tensor needing one."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    gy = _rand(out.shape, out.dtype, gy_seed)
    out.backward(gy)
    return out, [None if t is None else t.grad for t in leaves]


def _widen(tensors):
    return [None if t is None else t.to(torch.float64) for t in tensors]


# -- convolutions ------------------------------------------------------------------------------

def _conv_cases():
    cases = []
    for nd in (1, 2, 3):
        size = {1: (11,), 2: (9, 8), 3: (6, 5, 5)}[nd]
        k = (3,) * nd
        cases += [
            (nd, 2, 4, 6, size, k, dict()),
            (nd, 2, 4, 6, size, k, dict(stride=2, padding=1)),
            (nd, 2, 4, 6, size, k, dict(padding="same", dilation=2)),
            (nd, 1, 4, 6, size, (2,) * nd, dict(padding="same")),      # even kernel
            (nd, 2, 4, 4, size, k, dict(padding="valid", stride=(2,) + (1,) * (nd - 1))),
            (nd, 2, 4, 6, size, k, dict(groups=2, dilation=(1,) * (nd - 1) + (2,),
                                        padding=1)),
            (nd, 3, 4, 8, size, k, dict(groups=4, stride=2)),          # depthwise x2
            (nd, None, 3, 5, size, k, dict(padding=1)),                # unbatched
        ]
    return cases


CONV_CASES = _conv_cases()


def _conv_id(case):
    nd, n, cin, cout, size, k, kw = case
    args = ",".join(f"{key}={v}" for key, v in kw.items()).replace(" ", "")
    return f"conv{nd}d-N{n}-{cin}to{cout}-k{k[0]}-{args}"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[_conv_id(c) for c in CONV_CASES])
def test_conv_matches_torch(case, dtype, bias):
    nd, n, cin, cout, size, k, kw = case
    groups = kw.get("groups", 1)
    x = _rand(((n,) if n else ()) + (cin,) + size, dtype, 0)
    w = _rand((cout, cin // groups) + k, dtype, 1)
    b = _rand((cout,), dtype, 2) if bias else None
    ours = getattr(ct, f"conv{nd}d")
    ref = getattr(F, f"conv{nd}d")
    out, grads = _run(lambda x, w, b: ours(x, w, b, **kw), [x, w, b])
    ref_out, ref_grads = _run(lambda x, w, b: ref(x, w, b, **kw), _widen([x, w, b]))
    _check_against(out, grads, ref_out, ref_grads, dtype, _conv_id(case))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("form", ["same-stride2", "pairs"])
def test_conv_padding_beyond_torch(nd, form, dtype):
    """'same' for stride > 1 (TensorFlow's rule) and (before, after) pairs: the torch
    reference pads explicitly with F.pad and runs a 'valid' convolution."""
    size = {1: (10,), 2: (9, 10), 3: (7, 6, 5)}[nd]
    x, w, b = _rand((2, 3) + size, dtype, 0), _rand((4, 3) + (3,) * nd, dtype, 1), \
        _rand((4,), dtype, 2)
    if form == "same-stride2":
        kw = dict(padding="same", stride=2)
        # out = ceil(in / 2); total = (out - 1) * 2 + 3 - in, the odd unit after.
        pairs = []
        for n in size:
            total = max(0, (-(-n // 2) - 1) * 2 + 3 - n)
            pairs.append((total // 2, total - total // 2))
    else:
        pairs = [(0, 1), (2, 0), (1, 2)][:nd]
        kw = dict(padding=tuple(pairs), stride=1)
    flat = [v for pr in reversed(pairs) for v in pr]
    ours = getattr(ct, f"conv{nd}d")
    ref = getattr(F, f"conv{nd}d")
    out, grads = _run(lambda x, w, b: ours(x, w, b, **kw), [x, w, b])
    ref_out, ref_grads = _run(lambda x, w, b: ref(F.pad(x, flat), w, b, stride=kw["stride"]),
                              _widen([x, w, b]))
    _check_against(out, grads, ref_out, ref_grads, dtype, f"conv{nd}d {form}")


def _convt_cases():
    cases = []
    for nd in (1, 2, 3):
        size = {1: (7,), 2: (5, 6), 3: (4, 3, 4)}[nd]
        k = (3,) * nd
        cases += [
            (nd, 2, 4, 6, size, k, dict()),
            (nd, 2, 4, 6, size, k, dict(stride=2, padding=1, output_padding=1)),
            (nd, 2, 4, 6, size, k, dict(dilation=2, output_padding=1)),   # op < dilation
            (nd, 2, 4, 6, size, (2,) * nd, dict(stride=(2,) + (3,) * (nd - 1),
                                                output_padding=(1,) + (2,) * (nd - 1))),
            (nd, 2, 4, 6, size, k, dict(groups=2, stride=2, padding=2, dilation=2)),
            (nd, None, 3, 5, size, k, dict(stride=2, padding=1)),          # unbatched
        ]
    return cases


CONVT_CASES = _convt_cases()


def _convt_id(case):
    nd, n, cin, cout, size, k, kw = case
    args = ",".join(f"{key}={v}" for key, v in kw.items()).replace(" ", "")
    return f"conv_transpose{nd}d-N{n}-{cin}to{cout}-k{k[0]}-{args}"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=[_convt_id(c) for c in CONVT_CASES])
def test_conv_transpose_matches_torch(case, dtype, bias):
    nd, n, cin, cout, size, k, kw = case
    groups = kw.get("groups", 1)
    x = _rand(((n,) if n else ()) + (cin,) + size, dtype, 0)
    w = _rand((cin, cout // groups) + k, dtype, 1)
    b = _rand((cout,), dtype, 2) if bias else None
    ours = getattr(ct, f"conv_transpose{nd}d")
    ref = getattr(F, f"conv_transpose{nd}d")
    out, grads = _run(lambda x, w, b: ours(x, w, b, **kw), [x, w, b])
    ref_out, ref_grads = _run(lambda x, w, b: ref(x, w, b, **kw), _widen([x, w, b]))
    _check_against(out, grads, ref_out, ref_grads, dtype, _convt_id(case))


def test_only_needed_gradients_are_computed():
    """A frozen weight (requires_grad=False) gets no gradient, the input still does."""
    x = _rand((2, 3, 8, 8), torch.float64, 0).requires_grad_()
    w = _rand((4, 3, 3, 3), torch.float64, 1)
    b = _rand((4,), torch.float64, 2).requires_grad_()
    ct.conv2d(x, w, b, padding=1).sum().backward()
    assert w.grad is None
    ref_x = x.detach().clone().requires_grad_()
    F.conv2d(ref_x, w, b.detach(), padding=1).sum().backward()
    assert_close(x.grad.numpy(), ref_x.grad.numpy(), np.float64)
    assert_close(b.grad.numpy(), np.full(4, 2 * 8 * 8.0), np.float64)


def test_empty_batch_and_non_contiguous_inputs():
    w = _rand((4, 3, 3, 3), torch.float32, 1).requires_grad_()
    x0 = torch.zeros((0, 3, 8, 8), requires_grad=True)
    y0 = ct.conv2d(x0, w)
    assert y0.shape == (0, 4, 6, 6)
    y0.sum().backward()
    assert x0.grad.shape == x0.shape and float(w.grad.abs().sum()) == 0.0

    x = _rand((2, 3, 8, 8), torch.float32, 0).to(memory_format=torch.channels_last)
    xt = _rand((2, 8, 8, 3), torch.float32, 3).permute(0, 3, 1, 2)   # a transposed view
    for inp in (x, xt):
        assert not inp.is_contiguous()
        out = ct.conv2d(inp, w.detach(), padding=1)
        assert_close(out.numpy(), F.conv2d(inp.double(), w.detach().double(),
                                           padding=1).numpy(), np.float32)


# -- pooling and pad ---------------------------------------------------------------------------

def _pool_cases():
    cases = []
    for nd in (1, 2, 3):
        size = {1: (11,), 2: (9, 8), 3: (7, 6, 5)}[nd]
        cases += [
            ("max", nd, size, dict(kernel_size=2)),
            ("max", nd, size, dict(kernel_size=3, stride=2, padding=1)),
            ("max", nd, size, dict(kernel_size=3, stride=1, padding=1, dilation=2)),
            ("max", nd, size, dict(kernel_size=2, stride=2, ceil_mode=True)),
            ("avg", nd, size, dict(kernel_size=2)),
            ("avg", nd, size, dict(kernel_size=3, stride=2, padding=1,
                                   count_include_pad=False)),
            ("avg", nd, size, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
            ("adaptive_avg", nd, size, dict(output_size=(3,) * nd)),
        ]
        if nd > 1:     # (torch's adaptive_avg_pool1d takes no None)
            cases += [
                ("adaptive_avg", nd, size, dict(output_size=(None,) + (4,) * (nd - 1))),
                ("avg", nd, size, dict(kernel_size=2, divisor_override=3)),
            ]
    return cases


POOL_CASES = _pool_cases()


def _pool_id(case):
    kind, nd, size, kw = case
    return f"{kind}_pool{nd}d-" + ",".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "")


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[_pool_id(c) for c in POOL_CASES])
def test_pool_matches_torch(case, dtype, batched):
    kind, nd, size, kw = case
    x = _rand(((2,) if batched else ()) + (3,) + size, dtype, 0)
    name = f"{kind}_pool{nd}d"
    out, grads = _run(lambda x: getattr(ct, name)(x, **kw), [x])
    ref_out, ref_grads = _run(lambda x: getattr(F, name)(x, **kw), _widen([x]))
    _check_against(out, grads, ref_out, ref_grads, dtype, _pool_id(case))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_indices_match_torch(nd):
    x = _rand((2, 3) + (7,) * nd, torch.float64, 0)
    y, idx = getattr(ct, f"max_pool{nd}d")(x, 3, 2, 1, return_indices=True)
    ry, ridx = getattr(F, f"max_pool{nd}d")(x, 3, 2, 1, return_indices=True)
    assert idx.dtype == torch.int64 and not idx.requires_grad
    assert torch.equal(idx, ridx) and torch.equal(y, ry)
    # The indices the module returns feed max_unpool exactly as PyTorch's do.
    if nd == 2:
        up = F.max_unpool2d(y, idx, 3, 2, 1, output_size=x.shape[-2:])
        assert torch.equal(up, F.max_unpool2d(ry, ridx, 3, 2, 1, output_size=x.shape[-2:]))


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_matches_torch(mode):
    x = _rand((2, 3, 6, 7), torch.float64, 0)
    pads = (2, 1, 1, 3) if mode != "constant" else (2, -1, 1, 3)
    kw = dict(value=1.5) if mode == "constant" else {}
    out, grads = _run(lambda x: ct.pad(x, pads, mode=mode, **kw), [x])
    ref_out, ref_grads = _run(lambda x: F.pad(x, pads, mode=mode, **kw), [x])
    _check_against(out, grads, ref_out, ref_grads, torch.float64, f"pad {mode}")


# -- gradcheck -------------------------------------------------------------------------------------

def _leaf(shape, seed):
    return _rand(shape, torch.float64, seed).requires_grad_()


GRADCHECK_CASES = {
    "conv1d": lambda: (lambda x, w, b: ct.conv1d(x, w, b, stride=2, padding=1, dilation=2),
                       (_leaf((2, 4, 9), 0), _leaf((2, 4, 3), 1), _leaf((2,), 2))),
    "conv2d-groups-same": lambda: (
        lambda x, w, b: ct.conv2d(x, w, b, padding="same", groups=2),
        (_leaf((1, 4, 5, 6), 0), _leaf((4, 2, 3, 2), 1), _leaf((4,), 2))),
    "conv2d-pairs-stride2": lambda: (
        lambda x, w: ct.conv2d(x, w, stride=2, padding=((1, 0), (0, 2))),
        (_leaf((1, 2, 7, 6), 0), _leaf((3, 2, 3, 3), 1))),
    "conv1d-same-stride3": lambda: (lambda x, w: ct.conv1d(x, w, stride=3, padding="same"),
                                    (_leaf((2, 2, 10), 0), _leaf((3, 2, 4), 1))),
    "conv3d-stride": lambda: (lambda x, w: ct.conv3d(x, w, stride=(1, 2, 2), padding=1),
                              (_leaf((1, 2, 4, 5, 4), 0), _leaf((2, 2, 2, 3, 3), 1))),
    "conv_transpose1d": lambda: (
        lambda x, w, b: ct.conv_transpose1d(x, w, b, stride=3, padding=1, output_padding=2),
        (_leaf((2, 3, 5), 0), _leaf((3, 2, 3), 1), _leaf((2,), 2))),
    "conv_transpose1d-output_padding-above-stride": lambda: (   # op < dilation only
        lambda x, w, b: ct.conv_transpose1d(x, w, b, stride=1, output_padding=1, dilation=2),
        (_leaf((2, 2, 5), 0), _leaf((2, 3, 2), 1), _leaf((3,), 2))),
    "conv_transpose2d-groups": lambda: (
        lambda x, w: ct.conv_transpose2d(x, w, None, 2, 1, 1, groups=2, dilation=2),
        (_leaf((1, 4, 3, 4), 0), _leaf((4, 1, 3, 3), 1))),
    "conv_transpose3d": lambda: (
        lambda x, w, b: ct.conv_transpose3d(x, w, b, stride=2),
        (_leaf((1, 2, 2, 3, 2), 0), _leaf((2, 2, 2, 2, 2), 1), _leaf((2,), 2))),
    "max_pool2d": lambda: (lambda x: ct.max_pool2d(x, 3, 2, 1, dilation=1),
                           (_leaf((2, 2, 7, 6), 0),)),
    "avg_pool3d": lambda: (lambda x: ct.avg_pool3d(x, 2, 1, 1, ceil_mode=True,
                                                   count_include_pad=False),
                           (_leaf((1, 2, 4, 3, 4), 0),)),
    "adaptive_avg_pool1d": lambda: (lambda x: ct.adaptive_avg_pool1d(x, 4),
                                    (_leaf((2, 3, 7), 0),)),
    "pad-reflect": lambda: (lambda x: ct.pad(x, (2, 1, 1, 2), mode="reflect"),
                            (_leaf((1, 2, 4, 5), 0),)),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck_and_gradgradcheck(name):
    """First and second derivatives against finite differences: every backward pass is
    itself made of cyconv autograd functions."""
    fn, inputs = GRADCHECK_CASES[name]()
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradient_penalty_matches_torch():
    """A WGAN-GP style penalty: the gradient of ||d critic / d x||^2 w.r.t. the weights
    (double backward through conv, transposed conv, average pooling and their biases)."""

    def penalty(conv, convt, pool, x, w1, b1, w2, b2):
        x = x.detach().clone().requires_grad_()
        h = pool(conv(x, w1, b1, stride=2, padding=1).tanh(), 2, 1, 1)
        score = convt(h, w2, b2, stride=2).square().sum()
        gx, = torch.autograd.grad(score, x, create_graph=True)
        gx.square().sum().backward()

    params = [_leaf((2, 3, 8, 8), 0), _leaf((4, 3, 3, 3), 1), _leaf((4,), 2),
              _leaf((4, 2, 2, 2), 3), _leaf((2,), 4)]
    ref = [p.detach().clone().requires_grad_() for p in params]
    penalty(ct.conv2d, ct.conv_transpose2d, ct.avg_pool2d, *params)
    penalty(F.conv2d, F.conv_transpose2d, F.avg_pool2d, *ref)
    for i, (p, r) in enumerate(zip(params[1:], ref[1:])):
        assert_close(p.grad.numpy(), r.grad.numpy(), np.float64, what=f"parameter {i}")


# -- crossing: zero copy, dtypes, devices ---------------------------------------------------------

def test_cpu_tensors_cross_without_copies():
    t = _rand((2, 3, 4, 4), torch.float32, 0).requires_grad_()
    a = ct._to_array(t, "conv2d", "input")
    assert isinstance(a, np.ndarray) and a.ctypes.data == t.data_ptr()
    back = ct._to_tensor(a)
    assert back.data_ptr() == a.ctypes.data and torch.equal(back, t.detach())
    # A non-contiguous tensor is copied once, into C order, with the same values.
    nc = t.detach().transpose(2, 3)
    a2 = ct._to_array(nc, "conv2d", "input")
    assert a2.flags.c_contiguous and np.array_equal(a2, nc.numpy())


@pytest.mark.parametrize("dtype, match", [
    (torch.int32, r"conv2d: input has dtype torch.int32; cyconv takes float32 and float64"),
    (torch.bfloat16, r"conv2d: input has dtype torch.bfloat16"),
    (torch.float16, r"float16 is supported for CuPy \(GPU\) arrays only"),
])
def test_unsupported_dtypes_raise_type_error(dtype, match):
    x = torch.zeros((1, 2, 5, 5), dtype=dtype)
    w = torch.zeros((3, 2, 3, 3), dtype=dtype)
    with pytest.raises(TypeError, match=match):
        ct.conv2d(x, w)


def test_errors_are_cyconvs():
    x, w = torch.zeros((1, 2, 5, 5)), torch.zeros((3, 2, 3, 3))
    with pytest.raises(TypeError, match="input is float64 but weight is float32"):
        ct.conv2d(x.double(), w)
    with pytest.raises(ValueError, match=r"conv2d: groups=2 does not divide out_channels=3"):
        ct.conv2d(x, torch.zeros((3, 1, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="avg_pool1d: divisor_override is not an argument"):
        ct.AvgPool1dFunction.apply(torch.zeros((1, 2, 5)), 2, None, 0, False, True, 3)
    with pytest.raises(TypeError, match=r"conv2d: input is on device meta; cyconv runs on "
                                        r"CPU and CUDA tensors"):
        ct.conv2d(torch.zeros((1, 2, 5, 5), device="meta"), w.to("meta"))
    with pytest.raises(TypeError, match=r"conv2d: expected all tensors on one device, got "
                                        r"input on cpu, weight on meta"):
        ct.conv2d(x, w.to("meta"))
    with pytest.raises(TypeError, match=r"conv2d: weight must be a torch.Tensor, got ndarray"):
        ct.conv2d(x, np.zeros((3, 2, 3, 3), np.float32))


def test_import_without_torch_names_the_fix(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None          # as if PyTorch were not installed
        import cyconv
        assert "cyconv.torch" not in sys.modules
        try:
            import cyconv.torch
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ImportError: cyconv.torch needs PyTorch" in res.stdout
    assert "pip install torch" in res.stdout


def test_importing_cyconv_does_not_import_torch():
    code = "import sys, cyconv, cyconv.functional; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# -- modules and convert ---------------------------------------------------------------------------

def _model(nd, padding_mode="zeros"):
    """Every convertible layer kind of one dimensionality, in a row."""
    layer = lambda name: getattr(torch.nn, f"{name}{nd}d")  # noqa: E731
    return torch.nn.Sequential(
        layer("Conv")(2, 4, 3, padding=1, padding_mode=padding_mode),
        torch.nn.ReLU(),
        layer("MaxPool")(2),
        layer("Conv")(4, 4, 3, padding="same", padding_mode=padding_mode, groups=2,
                      bias=False),
        layer("ConvTranspose")(4, 3, 3, stride=2, padding=1, output_padding=1),
        layer("AvgPool")(3, stride=1, padding=1, count_include_pad=False),
        layer("AdaptiveAvgPool")(2),
    )


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_convert_matches_torch_and_keeps_parameters(nd, padding_mode):
    torch.manual_seed(0)
    ref = _model(nd, padding_mode).double()
    model = copy.deepcopy(ref)
    params = list(model.parameters())
    keys = list(model.state_dict())
    assert ct.convert(model) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert list(model.state_dict()) == keys
    kinds = [type(m).__name__ for m in model]
    assert kinds == [f"Conv{nd}d", "ReLU", f"MaxPool{nd}d", f"Conv{nd}d",
                     f"ConvTranspose{nd}d", f"AvgPool{nd}d", f"AdaptiveAvgPool{nd}d"]
    assert all(type(m).__module__ == "cyconv.torch" for m in model if m._parameters
               or "Pool" in type(m).__name__)
    assert isinstance(model[0], getattr(torch.nn, f"Conv{nd}d"))
    assert repr(model[0]).startswith(f"cyconv.Conv{nd}d(")

    x = _rand((2, 2) + (8,) * nd, torch.float64, 5)
    out, grads = _run(model, [x])
    ref_out, ref_grads = _run(ref, [x])
    _check_against(out, grads, ref_out, ref_grads, torch.float64, "converted model")
    for (name, p), rp in zip(model.named_parameters(), ref.parameters()):
        assert_close(p.grad.numpy(), rp.grad.numpy(), np.float64, what=name)


def test_convert_really_runs_cyconv():
    model = ct.convert(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2)))
    seen = []
    for m in model:
        m.register_forward_hook(lambda mod, inp, out: seen.append(type(out.grad_fn).__name__))
    model(torch.randn(1, 1, 6, 6))
    assert seen == ["Conv2dFunctionBackward", "MaxPool2dFunctionBackward"]


def test_convert_a_bare_layer_twice_and_pooling_off():
    conv = torch.nn.Conv1d(2, 3, 3)
    assert ct.convert(conv) is conv and type(conv) is ct.Conv1d
    assert ct.convert(conv) is conv and type(conv) is ct.Conv1d
    model = ct.convert(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2)),
                       pooling=False)
    assert type(model[0]) is ct.Conv2d and type(model[1]) is torch.nn.MaxPool2d


def test_convert_user_subclasses():
    class Scaled(torch.nn.Conv2d):       # keeps PyTorch's _conv_forward: converted
        def forward(self, x):
            return 2 * super().forward(x)

    class Custom(torch.nn.Conv2d):       # replaces _conv_forward itself: left alone
        def _conv_forward(self, x, w, b):
            return F.conv2d(x, w, b)

    torch.manual_seed(0)
    model = torch.nn.Sequential(Scaled(1, 2, 3), Custom(2, 2, 1))
    x = torch.randn(1, 1, 6, 6)
    expected = model(x)
    with pytest.warns(UserWarning, match=r"left 1 unchanged: .*Custom overrides "
                                         r"Conv2d._conv_forward"):
        ct.convert(model)
    assert isinstance(model[0], Scaled) and isinstance(model[0], ct._CyconvModule)
    assert type(model[1]) is Custom
    assert_close(model(x).detach().numpy(), expected.detach().double().numpy(), np.float32)


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError, match="convert: model must be a torch.nn.Module, got list"):
        ct.convert([torch.nn.Conv2d(1, 1, 1)])


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_output_size(nd):
    torch.manual_seed(0)
    ref = getattr(torch.nn, f"ConvTranspose{nd}d")(2, 3, 3, stride=2, padding=1).double()
    model = ct.convert(copy.deepcopy(ref))
    x = _rand((1, 2) + (4,) * nd, torch.float64, 0)
    size = (8,) * nd            # 7 without output_size; 8 needs output_padding 1
    out = model(x, output_size=size)
    assert out.shape[2:] == size
    assert_close(out.detach().numpy(), ref(x, output_size=size).detach().numpy(), np.float64)
    with pytest.raises(ValueError, match="requested an output size"):
        model(x, output_size=(10,) * nd)


def test_modules_built_directly_and_pickled():
    torch.manual_seed(0)
    model = torch.nn.Sequential(ct.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                                ct.AvgPool2d(2), ct.ConvTranspose2d(2, 1, 2, stride=2))
    x = torch.randn(1, 1, 6, 6)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert [type(m) for m in loaded] == [ct.Conv2d, ct.AvgPool2d, ct.ConvTranspose2d]
    assert torch.equal(loaded(x), model(x))


def test_training_with_and_without_convert_gives_the_same_losses():
    """A small CNN, 20 SGD steps from the same seed: the losses agree step by step."""

    def make():
        torch.manual_seed(1234)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 8, 3, padding="same", padding_mode="reflect"),
            torch.nn.ReLU(), torch.nn.AvgPool2d(2),
            torch.nn.ConvTranspose2d(8, 4, 2, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3))

    g = torch.Generator().manual_seed(0)
    data = torch.randn(16, 1, 12, 12, generator=g)
    target = torch.randint(0, 3, (16,), generator=g)

    def train(model, convert_after_optimizer):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if convert_after_optimizer:
            ct.convert(model)        # the optimizer made before still holds the params
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return np.array(losses)

    plain = train(make(), False)
    converted = train(make(), True)
    assert plain[-1] < plain[0]                  # it trains
    np.testing.assert_allclose(converted, plain, rtol=2e-4, atol=1e-6)
