"""``cyconv.interpolate`` / ``nn.Upsample`` and ``cyconv.adaptive_max_pool*d`` /
``nn.AdaptiveMaxPool*d``, with their gradients.

References: plain float64 loops written here (source coordinates in float64), PyTorch
when importable (exact for nearest and for the max-pool indices), the adjoint identity
``<interpolate(x), gy> = <x, grad.interpolate(gy)>`` and finite differences.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import cyconv
from cyconv import nn
from conftest import DTYPES, assert_close, assert_identical, to_numpy, torch_or_skip, with_layout


# -- references ---------------------------------------------------------------------------------

def _src_nearest(o, n_in, n_out, scale):
    s = 1.0 / scale if scale else n_in / n_out
    return min(int(math.floor(o * s)), n_in - 1)


def _src_linear(o, n_in, n_out, scale, align_corners):
    """(i0, i1, lambda1) of output o along one dim."""
    if align_corners:
        real = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        s = 1.0 / scale if scale else n_in / n_out
        real = max(s * (o + 0.5) - 0.5, 0.0)
    i0 = min(int(math.floor(real)), n_in - 1)
    lam = min(max(real - i0, 0.0), 1.0)
    return i0, i0 + (1 if i0 < n_in - 1 else 0), lam


def ref_interpolate(x, out_size, scales, mode, align_corners=False):
    """float64 loops over every output element (a product of per-dim 2-tap weights)."""
    x = np.asarray(x, np.float64)
    in_size = x.shape[2:]
    y = np.zeros(x.shape[:2] + tuple(out_size))
    for o in itertools.product(*(range(n) for n in out_size)):
        if mode == "nearest":
            src = tuple(_src_nearest(oi, ni, no, s)
                        for oi, ni, no, s in zip(o, in_size, out_size, scales))
            y[(slice(None), slice(None)) + o] = x[(slice(None), slice(None)) + src]
            continue
        taps = [_src_linear(oi, ni, no, s, align_corners)
                for oi, ni, no, s in zip(o, in_size, out_size, scales)]
        acc = 0.0
        for corner in itertools.product((0, 1), repeat=len(o)):
            idx = tuple(t[1] if c else t[0] for t, c in zip(taps, corner))
            wgt = math.prod(t[2] if c else 1 - t[2] for t, c in zip(taps, corner))
            acc = acc + wgt * x[(slice(None), slice(None)) + idx]
        y[(slice(None), slice(None)) + o] = acc
    return y


CASES = [  # input shape, kwargs
    ((2, 3, 7), dict(size=12, mode="nearest")),
    ((2, 3, 7), dict(size=5, mode="linear")),
    ((2, 3, 7), dict(scale_factor=2.5, mode="linear")),
    ((1, 2, 6), dict(scale_factor=2, mode="nearest")),
    ((2, 2, 5, 6), dict(size=(9, 4), mode="bilinear")),
    ((2, 2, 5, 6), dict(scale_factor=(1.5, 0.5), mode="nearest")),
    ((1, 3, 4, 4), dict(scale_factor=2, mode="bilinear")),
    ((1, 2, 5, 6), dict(size=(3, 11), mode="bilinear", align_corners=True)),
    ((1, 2, 5, 6), dict(size=(5, 6), mode="bilinear")),                # same size
    ((1, 2, 3, 4, 5), dict(size=(5, 4, 2), mode="trilinear")),
    ((1, 2, 3, 4, 5), dict(scale_factor=(2, 1, 0.5), mode="nearest")),
    ((1, 1, 1, 3), dict(size=(4, 1), mode="bilinear")),
]


def _out_and_scales(shape, kw):
    nd = len(shape) - 2
    if "size" in kw:
        size = kw["size"]
        out = (size,) * nd if isinstance(size, int) else tuple(size)
        return out, (None,) * nd
    sf = kw["scale_factor"]
    sf = (sf,) * nd if not isinstance(sf, tuple) else sf
    return tuple(math.floor(n * s) for n, s in zip(shape[2:], sf)), tuple(float(s) for s in sf)


def _id(c):
    return f"{c[0]}-{c[1]}".replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_interpolate_matches_reference_and_adjoint(case, dtype, xp):
    shape, kw = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y = cyconv.interpolate(with_layout(x, "channels_last", xp), **kw)
    out, scales = _out_and_scales(shape, kw)
    ref = ref_interpolate(x, out, scales, kw["mode"], kw.get("align_corners", False))
    assert_close(y, ref, dtype, what="interpolate")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = cyconv.grad.interpolate(with_layout(gy, "negative", xp), x.shape, **kw)
    assert gx.shape == x.shape and gx.dtype == dtype
    lhs = float(np.sum(ref * gy.astype(np.float64)))
    rhs = float(np.sum(x.astype(np.float64) * to_numpy(gx).astype(np.float64)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert abs(lhs - rhs) <= tol * max(1.0, float(np.sum(np.abs(ref * gy))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_interpolate_and_upsample_match_torch(case, dtype):
    torch = torch_or_skip()
    shape, kw = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    gy_shape = cyconv.interpolate(x, **kw).shape
    layer = nn.Upsample(**kw)
    for _ in range(2):
        gy = rng.standard_normal(gy_shape).astype(dtype)
        tx = torch.from_numpy(x).requires_grad_()
        ty = torch.nn.Upsample(**kw)(tx)
        ty.backward(torch.from_numpy(gy))
        y = layer(x)
        gx = layer.backward(gy)
        if kw["mode"] == "nearest":
            np.testing.assert_array_equal(y, ty.detach().numpy())
            np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
        else:
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol)


def test_interpolate_nan_inf_match_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(2).standard_normal((1, 1, 4, 5)).astype(np.float32)
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 3, 0] = np.inf
    for kw in (dict(size=(7, 9), mode="bilinear"), dict(scale_factor=2, mode="nearest"),
               dict(size=(4, 5), mode="bilinear")):
        y = cyconv.interpolate(x, **kw)
        ty = torch.nn.functional.interpolate(torch.from_numpy(x), **kw).numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ty), err_msg=str(kw))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ty), err_msg=str(kw))


def test_interpolate_gradient_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 4, 5))
    kw = dict(size=(7, 3), mode="bilinear")
    w, v = rng.standard_normal((2, 2, 7, 3)), rng.standard_normal(x.shape)
    h = 1e-6
    f = lambda z: float(np.sum(cyconv.interpolate(z, **kw) * w))  # noqa: E731
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert abs(fd - float(np.sum(cyconv.grad.interpolate(w, x.shape, **kw) * v))) < 1e-7


def test_interpolate_threads_and_empty_batch(num_threads):
    x = np.random.default_rng(4).standard_normal((4, 16, 30, 40)).astype(np.float32)
    out = []
    for n in (1, 2):
        num_threads(n)
        y = cyconv.interpolate(x, scale_factor=2, mode="bilinear")
        out.append((y, cyconv.grad.interpolate(y, x.shape, scale_factor=2, mode="bilinear")))
    for a, b in zip(*out):
        assert_identical(a, b, "interpolate 1 vs 2 threads")
    y = cyconv.interpolate(np.zeros((0, 3, 4, 4), np.float32), size=(8, 2), mode="bilinear")
    assert y.shape == (0, 3, 8, 2)
    assert cyconv.grad.interpolate(y, (0, 3, 4, 4), size=(8, 2), mode="bilinear").shape == \
        (0, 3, 4, 4)


def test_interpolate_same_size_nearest_is_a_copy():
    x = np.arange(24.0).reshape(1, 2, 3, 4)
    y = cyconv.interpolate(x, size=(3, 4))
    np.testing.assert_array_equal(y, x)
    assert y is not x


def test_interpolate_errors():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^interpolate: mode must be one of 'nearest', "
                                         r"'linear', 'bilinear', 'trilinear', got 'bicubic'$"):
        cyconv.interpolate(x, size=3, mode="bicubic")
    with pytest.raises(ValueError, match=r"^interpolate: either size or scale_factor must be "
                                         r"given$"):
        cyconv.interpolate(x)
    with pytest.raises(ValueError, match=r"^interpolate: give size or scale_factor, not both "
                                         r"\(got size=3, scale_factor=2\)$"):
        cyconv.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match=r"^interpolate: mode 'linear' needs a 3-D input "
                                         r"\(N, C, L\), got 4-D input \(1, 2, 4, 4\)$"):
        cyconv.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match=r"^interpolate: input must be 3-D \(N, C, L\), 4-D "
                                         r"\(N, C, H, W\) or 5-D \(N, C, D, H, W\), got 2-D "
                                         r"\(2, 4\)$"):
        cyconv.interpolate(x[0, :, 0], size=3)
    with pytest.raises(ValueError, match=r"^interpolate: size must be a positive int or a "
                                         r"tuple of 2 positive ints, got \(3, 0\)"):
        cyconv.interpolate(x, size=(3, 0))
    with pytest.raises(ValueError, match=r"^interpolate: scale_factor must be a positive "
                                         r"number or a tuple of 2 positive numbers, got -1"):
        cyconv.interpolate(x, scale_factor=-1)
    with pytest.raises(ValueError, match=r"^interpolate: scale_factor 0.1 gives an empty "
                                         r"output \(0, 0\) for input \(1, 2, 4, 4\)$"):
        cyconv.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match=r"^interpolate: align_corners can only be set with "
                                         r"the linear modes"):
        cyconv.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ValueError, match=r"^interpolate: grad_output has shape \(1, 2, 3, 3\), "
                                         r"expected \(1, 2, 8, 8\) for input_size"):
        cyconv.grad.interpolate(np.zeros((1, 2, 3, 3), np.float32), x.shape, scale_factor=2)
    with pytest.raises(ValueError, match=r"^interpolate: mode must be one of"):
        nn.Upsample(size=3, mode="area")(x)


# -- adaptive max pooling -----------------------------------------------------------------------

def ref_adaptive_max(x, out):
    """float64 loops: max of [floor(o*in/out), ceil((o+1)*in/out)) per dim, first max, NaN
    wins; the flat plane index of the winner."""
    x = np.asarray(x, np.float64)
    lead, in_size = x.shape[:-len(out)], x.shape[-len(out):]
    y = np.zeros(lead + tuple(out))
    idx = np.zeros(lead + tuple(out), np.int64)
    for o in itertools.product(*(range(n) for n in out)):
        ranges = [range(oi * n // m, -(-(oi + 1) * n // m)) for oi, n, m in zip(o, in_size, out)]
        for lp in itertools.product(*(range(n) for n in lead)):
            best, arg = -np.inf, None
            for p in itertools.product(*ranges):
                v = x[lp + p]
                if arg is None:
                    arg = p
                if v > best or np.isnan(v):
                    best, arg = v, p
            y[lp + o] = best
            idx[lp + o] = np.ravel_multi_index(arg, in_size)
    return y, idx


ADAPTIVE_CASES = [(1, (2, 3, 10), 4), (1, (3, 7), 7), (2, (2, 3, 9, 11), (4, None)),
                  (2, (2, 5, 6), (1, 1)), (2, (1, 2, 4, 5), (7, 3)),
                  (3, (1, 2, 5, 6, 7), (2, 3, 4)),
                  (2, (0, 2, 4, 4), 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=str)
def test_adaptive_max_pool_matches_reference(case, dtype, xp):
    nd, shape, out = case
    x = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    if x.size > 10:
        x.reshape(-1)[[3, 7]] = [np.nan, x.reshape(-1)[8]]           # a NaN and a tie
    fn = getattr(cyconv, f"adaptive_max_pool{nd}d")
    y, idx = fn(with_layout(x, "strided", xp), out, return_indices=True)
    outs = tuple(n if o is None else o for n, o in
                 zip(shape[-nd:], (out,) * nd if isinstance(out, int) else out))
    ry, ridx = ref_adaptive_max(x, outs)
    np.testing.assert_array_equal(to_numpy(y), ry.astype(dtype))
    np.testing.assert_array_equal(to_numpy(idx), ridx)
    assert_identical(fn(xp.asarray(x), out), y)
    gy = np.random.default_rng(6).standard_normal(y.shape).astype(dtype)
    gx = getattr(cyconv.grad, f"adaptive_max_pool{nd}d")(xp.asarray(gy), idx, x.shape)
    want = np.zeros(x.shape)
    planes = want.reshape(-1, math.prod(shape[-nd:]))
    n_out = math.prod(y.shape[-nd:])
    for p, (g, i) in enumerate(zip(gy.reshape(planes.shape[0], n_out),
                                   ridx.reshape(planes.shape[0], n_out))):
        np.add.at(planes[p], i, g)
    assert_close(gx, want, dtype, what="adaptive_max_pool grad")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_adaptive_max_pool_layer_matches_torch(nd):
    torch = torch_or_skip()
    shape = (2, 3) + (7, 9, 5)[:nd]
    out = (3, 4, 2)[:nd]
    x = np.random.default_rng(7).standard_normal(shape)
    ours = getattr(nn, f"AdaptiveMaxPool{nd}d")(out, return_indices=True)
    theirs = getattr(torch.nn, f"AdaptiveMaxPool{nd}d")(out, return_indices=True)
    tx = torch.from_numpy(x).requires_grad_()
    ty, tidx = theirs(tx)
    gy = np.random.default_rng(8).standard_normal(ty.shape)
    ty.backward(torch.from_numpy(gy))
    y, idx = ours(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    np.testing.assert_array_equal(ours.backward(gy), tx.grad.numpy())


def test_adaptive_max_pool_threads_and_errors(num_threads):
    x = np.random.default_rng(9).standard_normal((8, 32, 30, 30)).astype(np.float32)
    out = []
    for n in (1, 2):
        num_threads(n)
        out.append(cyconv.adaptive_max_pool2d(x, (7, 5), return_indices=True))
    for a, b in zip(*out):
        assert_identical(a, b)
    with pytest.raises(ValueError, match=r"^adaptive_max_pool2d: output_size must be an int or "
                                         r"a tuple of 2 ints or None, got \(1, 2, 3\)$"):
        cyconv.adaptive_max_pool2d(x, (1, 2, 3))
    with pytest.raises(ValueError, match=r"^adaptive_max_pool2d expects input of 3-D"):
        cyconv.adaptive_max_pool2d(x[0, 0], 2)
    y, idx = cyconv.adaptive_max_pool2d(x, 2, return_indices=True)
    bad = idx.copy()
    bad[0, 0, 0, 0] = 900
    with pytest.raises(ValueError, match=r"^adaptive_max_pool2d: indices hold 1 value\(s\) "
                                         r"outside the input plane \[0, 900\)"):
        cyconv.grad.adaptive_max_pool2d(y, bad, x.shape)
