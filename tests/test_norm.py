"""``cyconv.batch_norm``, ``cyconv.grad.batch_norm`` and ``nn.BatchNorm1d/2d/3d``.

References: the batch-norm formulas written out in float64 NumPy here, PyTorch when it
is importable (functional, layers, state_dicts), and finite differences.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from cyconv import nn
from conftest import DTYPES, assert_close, assert_identical, to_numpy, torch_or_skip, with_layout

SHAPES = [(6, 3), (4, 3, 7), (2, 4, 5, 6), (2, 3, 3, 4, 2), (1, 2, 9)]


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bshape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def ref_batch_norm(x, rm, rv, w, b, training, momentum, eps):
    """float64 forward: ``(y, new running_mean, new running_var)``."""
    x = np.asarray(x, np.float64)
    C = x.shape[1]
    w = np.ones(C) if w is None else np.asarray(w, np.float64)
    b = np.zeros(C) if b is None else np.asarray(b, np.float64)
    if training:
        mean = x.mean(axis=_axes(x))
        var = x.var(axis=_axes(x))
        n = x.size // C
        if rm is not None:
            rm = (1 - momentum) * np.asarray(rm, np.float64) + momentum * mean
            rv = (1 - momentum) * np.asarray(rv, np.float64) + momentum * var * n / (n - 1)
    else:
        mean, var = np.asarray(rm, np.float64), np.asarray(rv, np.float64)
    y = (x - mean.reshape(_bshape(x))) / np.sqrt(var.reshape(_bshape(x)) + eps)
    return y * w.reshape(_bshape(x)) + b.reshape(_bshape(x)), rm, rv


def ref_batch_norm_grad(gy, x, rm, rv, w, training, eps):
    """float64 ``(gx, gw, gb)``, derived by hand: with xhat = (x - mean) * invstd,
    training gx = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))."""
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    C = x.shape[1]
    w = np.ones(C) if w is None else np.asarray(w, np.float64)
    if training:
        mean, var = x.mean(axis=_axes(x)), x.var(axis=_axes(x))
    else:
        mean, var = np.asarray(rm, np.float64), np.asarray(rv, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(_bshape(x))) * invstd.reshape(_bshape(x))
    gb = gy.sum(axis=_axes(x))
    gw = (gy * xhat).sum(axis=_axes(x))
    k = (w * invstd).reshape(_bshape(x))
    if training:
        n = x.size // C
        gx = k * (gy - (gb / n).reshape(_bshape(x)) - xhat * (gw / n).reshape(_bshape(x)))
    else:
        gx = k * gy
    return gx, gw, gb


def _arrays(shape, dtype, seed=0, xp=np):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2, C).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    return [xp.asarray(a) for a in (x, w, b, rm, rv, gy)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_matches_reference(shape, affine, training, dtype, xp):
    x, w, b, rm, rv, gy = _arrays(shape, dtype, xp=xp)
    if not affine:
        w = b = None
    rm_in, rv_in = to_numpy(rm).copy(), to_numpy(rv).copy()
    xa = with_layout(to_numpy(x), "negative", xp)
    y = cyconv.batch_norm(xa, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3)
    ref_y, ref_rm, ref_rv = ref_batch_norm(to_numpy(x), rm_in, rv_in,
                                           None if w is None else to_numpy(w),
                                           None if b is None else to_numpy(b), training, 0.2,
                                           1e-3)
    assert_close(y, ref_y, dtype, what="batch_norm forward")
    if training:
        assert_close(rm, ref_rm, dtype, what="running_mean")
        assert_close(rv, ref_rv, dtype, what="running_var")
    else:
        np.testing.assert_array_equal(to_numpy(rm), rm_in)
    gx, gw, gb = cyconv.grad.batch_norm(gy, xa, xp.asarray(rm_in), xp.asarray(rv_in), w,
                                        training=training, eps=1e-3)
    want = ref_batch_norm_grad(to_numpy(gy), to_numpy(x), rm_in, rv_in,
                               None if w is None else to_numpy(w), training, 1e-3)
    for name, a, e in zip(("gx", "gw", "gb"), (gx, gw, gb), want):
        kind = "reference" if name == "gx" else "parity"
        tol_dtype = dtype if name == "gx" else np.float64  # sums over N*S: compare loosely
        if tol_dtype == np.float64 and dtype == np.float32:
            np.testing.assert_allclose(to_numpy(a), e, rtol=1e-5,
                                       atol=1e-5 * max(1, np.abs(e).max()), err_msg=name)
        else:
            assert_close(a, e, dtype, kind=kind if dtype == np.float64 else "reference",
                         what=name)
        assert a.dtype == dtype


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_gradient_finite_differences(training):
    x, w, b, rm, rv, _ = _arrays((3, 4, 5), np.float64, seed=1)
    rng = np.random.default_rng(2)
    gy = rng.standard_normal(x.shape)
    vx, vw, vb = (rng.standard_normal(a.shape) for a in (x, w, b))

    def f(x_, w_, b_):
        y = cyconv.batch_norm(x_, rm.copy(), rv.copy(), w_, b_, training=training)
        return float(np.sum(y * gy))

    h = 1e-6
    gx, gw, gb = cyconv.grad.batch_norm(gy, x, rm, rv, w, training=training)
    for args_p, args_m, g, v in (
            ((x + h * vx, w, b), (x - h * vx, w, b), gx, vx),
            ((x, w + h * vw, b), (x, w - h * vw, b), gw, vw),
            ((x, w, b + h * vb), (x, w, b - h * vb), gb, vb)):
        fd = (f(*args_p) - f(*args_m)) / (2 * h)
        assert abs(fd - float(np.sum(g * v))) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layer", [((5, 3), "BatchNorm1d"), ((4, 3, 6), "BatchNorm1d"),
                                          ((2, 3, 4, 5), "BatchNorm2d"),
                                          ((2, 3, 2, 3, 4), "BatchNorm3d")], ids=str)
@pytest.mark.parametrize("kwargs", [{}, dict(momentum=None), dict(affine=False),
                                    dict(track_running_stats=False), dict(momentum=0.5, eps=0.1)],
                         ids=str)
def test_layer_matches_torch_over_training_steps_and_eval(shape, layer, kwargs, dtype):
    torch = torch_or_skip()
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    theirs = getattr(torch.nn, layer)(shape[1], dtype=tdt, **kwargs)
    ours = getattr(nn, layer)(shape[1], dtype=dtype, **kwargs)
    if ours.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-1, 1)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(3)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for step in range(3):
        if step == 2:
            ours.eval()
            theirs.eval()
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        gy = rng.standard_normal(shape).astype(dtype)
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(gy))
        y = ours(x)
        gx = ours.backward(gy)                  # the grads accumulate over the steps
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol, err_msg=f"step {step} y")
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol, err_msg=f"step {step} gx")
        if ours.affine:
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)
        for key, value in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), **tol,
                                       err_msg=f"step {step} {key}")
            assert ours.state_dict()[key].dtype == value.numpy().dtype, key


def test_functional_matches_torch_with_nan_and_inf():
    torch = torch_or_skip()
    x, w, b, rm, rv, _ = _arrays((4, 3, 5), np.float32)
    x[0, 0, 0] = np.nan
    x[1, 1, 2] = np.inf
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    for training in (True, False):
        y = cyconv.batch_norm(x, rm, rv, w, b, training=training)
        ty = torch.nn.functional.batch_norm(torch.from_numpy(x), rm_t, rv_t,
                                            torch.from_numpy(w), torch.from_numpy(b),
                                            training=training).numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))
        np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.isnan(rm), np.isnan(rm_t.numpy()))
    assert np.isnan(y[:, 0]).all() and np.isfinite(y[:, 2]).all()


def test_batch_norm_thread_count_does_not_change_results(num_threads):
    x, w, b, rm, rv, gy = _arrays((8, 16, 40, 40), np.float32)
    out = []
    for n in (1, 2):
        num_threads(n)
        rm_, rv_ = rm.copy(), rv.copy()
        y = cyconv.batch_norm(x, rm_, rv_, w, b, training=True)
        out.append((y, rm_, rv_) + cyconv.grad.batch_norm(gy, x, None, None, w, training=True))
    for a, c in zip(*out):
        assert_identical(a, c, "batch_norm 1 vs 2 threads")


def test_empty_batch_gives_empty_output_and_keeps_statistics():
    x, w, b, rm, rv, _ = _arrays((0, 3, 4), np.float32)
    rm0, rv0 = rm.copy(), rv.copy()
    y = cyconv.batch_norm(x, rm, rv, w, b, training=True)
    assert y.shape == (0, 3, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    gx, gw, gb = cyconv.grad.batch_norm(y, x, rm, rv, w, training=True)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)
    layer = nn.BatchNorm2d(3)
    assert layer(np.zeros((0, 3, 2, 2), np.float32)).shape == (0, 3, 2, 2)


def test_saved_statistics_give_the_same_gradient():
    x, w, b, rm, rv, gy = _arrays((4, 3, 6), np.float64)
    from cyconv import _norm
    _, (mean, invstd) = _norm.forward(x, None, None, w, b, True)
    a = cyconv.grad.batch_norm(gy, x, None, None, w, training=True)
    c = cyconv.grad.batch_norm(gy, x, None, None, w, training=True, save_mean=mean,
                               save_invstd=invstd)
    for u, v in zip(a, c):
        assert_identical(u, v)


def test_layer_to_dtype_moves_buffers_and_keeps_the_counter():
    layer = nn.BatchNorm1d(4)
    layer(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    layer.to(np.float64)
    assert layer.running_mean.dtype == np.float64 and layer.weight.dtype == np.float64
    assert layer.num_batches_tracked.dtype == np.int64 and int(layer.num_batches_tracked) == 1
    layer.reset_running_stats()
    np.testing.assert_array_equal(layer.running_var, 1)


def test_layer_to_cuda_moves_parameters_and_buffers(xp):
    if xp is np:
        pytest.skip("needs a GPU")
    layer = nn.BatchNorm2d(3).to("cuda")
    for a in (layer.weight.data, layer.running_mean, layer.running_var,
              layer.num_batches_tracked):
        assert type(a).__module__.split(".")[0] == "cupy"
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32))
    y = layer(x)
    gx = layer.backward(xp.ones_like(y))
    cpu = nn.BatchNorm2d(3)
    np.testing.assert_allclose(to_numpy(y), cpu(to_numpy(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(gx), cpu.backward(np.ones(y.shape, np.float32)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.running_var), cpu.running_var, rtol=1e-5)


def test_functional_errors():
    x = np.zeros((2, 3, 4), np.float32)
    c3 = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^batch_norm: running_mean has shape \(4,\), expected "
                                         r"\(3,\) for input \(2, 3, 4\) with 3 channels$"):
        cyconv.batch_norm(x, np.zeros(4, np.float32), c3)
    with pytest.raises(ValueError, match=r"^batch_norm: weight has shape \(2,\), expected"):
        cyconv.batch_norm(x, c3, c3, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"^batch_norm: input must have at least 2 dims "
                                         r"\(N, C, \*\), got 1-D \(3,\)$"):
        cyconv.batch_norm(c3, c3, c3)
    with pytest.raises(ValueError, match=r"^batch_norm: expected more than 1 value per channel "
                                         r"when training, got input \(1, 3\)$"):
        cyconv.batch_norm(np.zeros((1, 3), np.float32), c3, c3, training=True)
    with pytest.raises(ValueError, match=r"^batch_norm: running_mean and running_var are "
                                         r"required when training=False$"):
        cyconv.batch_norm(x, None, None)
    with pytest.raises(ValueError, match=r"^batch_norm: momentum must be a number in \[0, 1\] "
                                         r"or None, got 2$"):
        cyconv.batch_norm(x, c3, c3, training=True, momentum=2)
    with pytest.raises(ValueError, match=r"^batch_norm: eps must be a non-negative number, got "
                                         r"-1$"):
        cyconv.batch_norm(x, c3, c3, eps=-1)
    with pytest.raises(TypeError, match=r"^batch_norm: input is float32 but running_mean is "
                                        r"float64"):
        cyconv.batch_norm(x, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"^batch_norm: grad_output has shape \(2, 3\), but "
                                         r"input has shape \(2, 3, 4\)$"):
        cyconv.grad.batch_norm(np.zeros((2, 3), np.float32), x, c3, c3)


def test_layer_errors():
    with pytest.raises(ValueError, match=r"^BatchNorm2d: num_features must be a positive int, "
                                         r"got 0$"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match=r"^BatchNorm1d: momentum must be a number in \[0, 1\] "
                                         r"or None, got -0.1$"):
        nn.BatchNorm1d(3, momentum=-0.1)
    layer = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"^BatchNorm2d: input has 4 channels, expected "
                                         r"num_features=3 \(input shape \(2, 4, 5, 5\)\)$"):
        layer(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"^BatchNorm2d: expected 4-D \(N, C, H, W\) input, "
                                         r"got 3-D input of shape \(3, 5, 5\)$"):
        layer(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"^BatchNorm1d: expected 2-D \(N, C\) or 3-D "
                                         r"\(N, C, L\) input, got 4-D input"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"^BatchNorm2d: input is float64 but the layer's "
                                        r"weight is float32"):
        layer(np.zeros((2, 3, 4, 4)))
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        nn.BatchNorm3d(2).backward(np.zeros((1, 2, 1, 1, 2), np.float32))
    with pytest.raises(ValueError, match=r"^BatchNorm2d.load_state_dict: missing keys "
                                         r"\['num_batches_tracked'\]"):
        layer.load_state_dict({k: v for k, v in layer.state_dict().items()
                               if k != "num_batches_tracked"})
