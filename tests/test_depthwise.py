"""The interleaved-block kernels of ``depthwise.pyx`` against the float64 reference:
the depthwise kernel (every pass, stride, kernel size, dilation, padding form and plane
edge) and ``outer``, for dense layers with few input channels (forward, weight gradient).

The planner sends it only the depthwise layers it wins (strided, or rows shorter than
``_plan.ROW_BYTES``); the grid below runs it on every geometry by executing each plan
with its kernel replaced, so a later change of the rule cannot leave a geometry untested.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

import cyconv
import reference
from cyconv import _cpu, _plan
from conftest import DTYPES, assert_close, assert_identical, with_layout

RNG = np.random.default_rng(20261203)

IN_SIZES = {1: [(1,), (7,), (20,)], 2: [(1, 1), (2, 3), (7, 7), (9, 14)],
            3: [(1, 2, 2), (4, 5, 6)]}
KERNELS = {1: [1, 2, 3, 5, 7], 2: [1, 2, 3, 5, 7], 3: [1, 3]}
STRIDES = {1: [1, 2, 3], 2: [1, 2, 3, (2, 1)], 3: [1, 2, (1, 2, 1)]}


def _cases():
    """(nd, channels, in_size, kernel, stride, padding, dilation) of valid layers."""
    out = []
    for nd in (1, 2, 3):
        for in_size, k, s, d, pad, C in itertools.product(
                IN_SIZES[nd], KERNELS[nd], STRIDES[nd], (1, 2), ("zero", "half", "same",
                                                              "asym"), (3, 8, 13)):
            if nd == 3 and (C == 13 or d == 2):
                continue
            kernel = (k,) * nd
            padding = {"zero": 0, "half": k // 2, "same": "same",
                       "asym": tuple((0, 1) if i % 2 == 0 else (2, 0) for i in range(nd))}[pad]
            try:
                cyconv.plan(f"conv{nd}d", (2, C) + in_size, (C, 1) + kernel, stride=s,
                            padding=padding, dilation=d, groups=C)
            except ValueError:           # output smaller than 1
                continue
            out.append((nd, C, in_size, kernel, s, padding, d))
    return out


CASES = _cases()
# keep the run short: every geometry for float32, a third of them for float64
GRID = [(c, np.float32) for c in CASES] + [(c, np.float64) for c in CASES[::3]]


def _forced(plan):
    """``plan`` executing the depthwise kernel, whatever the rule would pick."""
    return dataclasses.replace(plan, kernel="depthwise", nonfinite=None,
                               geometry=plan.params.geometry(), phases=None)


def _arrays(nd, C, in_size, kernel, dtype, N=2):
    x = RNG.standard_normal((N, C) + in_size).astype(dtype)
    w = RNG.standard_normal((C, 1) + kernel).astype(dtype)
    b = RNG.standard_normal(C).astype(dtype)
    return x, w, b


def _run_all(nd, C, in_size, kernel, s, padding, d, x, w, b, gy=None):
    """(y, gx, gw) by the depthwise kernel, and gy."""
    op = f"conv{nd}d"
    kw = dict(stride=s, padding=padding, dilation=d, groups=C)
    dt = x.dtype.name
    fwd = _forced(cyconv.plan(op, x.shape, w.shape, dtype=dt, **kw))
    y = _cpu.conv_forward(fwd, x, w, b)
    if gy is None:
        gy = RNG.standard_normal(y.shape).astype(x.dtype)
    gx = _cpu.conv_backward_input(
        _forced(cyconv.plan(op, x.shape, w.shape, dtype=dt, direction="input", **kw)),
        gy, w, None)
    gw = _cpu.conv_backward_weight(
        _forced(cyconv.plan(op, x.shape, w.shape, dtype=dt, direction="weight", **kw)),
        x, gy)
    return y, gx, gw, gy


@pytest.mark.parametrize("case, dtype", GRID, ids=lambda v: str(v) if not isinstance(
    v, type) else v.__name__)
def test_every_geometry_matches_reference(case, dtype):
    nd, C, in_size, kernel, s, padding, d = case
    x, w, b = _arrays(nd, C, in_size, kernel, dtype)
    y, gx, gw, gy = _run_all(nd, C, in_size, kernel, s, padding, d, x, w, b)
    kw = dict(stride=s, padding=padding, dilation=d, groups=C)
    assert_close(y, reference.conv(x, w, b, **kw), dtype, what="forward")
    assert_close(gx, reference.conv_input_grad(x.shape, w, gy, **kw), dtype, what="input")
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **kw), dtype, what="weight")


# -- through the public API, where the plan picks it ------------------------------------

PICKED = [
    # (x shape, kernel, stride, padding, dilation): strided, or rows under ROW_BYTES
    # (12 float32, 6 float64)
    ((4, 24, 17, 17), (5, 5), 2, 2, 1),                # EfficientNet's stride-2 5x5
    ((3, 40, 7, 5), (3, 3), 1, 1, 1),                  # short rows (MobileNetV2's 7x7)
    ((2, 16, 7, 5), (7, 7), 1, 3, 1),                  # ... with 7x7 taps (ConvNeXt)
    ((2, 12, 11, 10), (3, 3), 2, "same", 1),           # 'same' at stride 2
    ((2, 9, 15), (5,), 3, 2, 2),                       # 1-D, strided and dilated
    ((1, 10, 6, 7, 5), (3, 3, 3), (2, 1, 2), 1, 1),    # 3-D
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, s, padding, d", PICKED)
def test_public_api_runs_it(shape, kernel, s, padding, d, dtype):
    nd = len(kernel)
    C = shape[1]
    op = f"conv{nd}d"
    kw = dict(stride=s, padding=padding, dilation=d, groups=C)
    x, w, b = _arrays(nd, C, shape[2:], kernel, dtype, N=shape[0])
    for direction in ("forward", "input", "weight"):
        plan = cyconv.plan(op, x.shape, w.shape, dtype=np.dtype(dtype).name,
                           direction=direction, **kw)
        assert plan.kernel == "depthwise", str(plan)
        assert "channel-interleaved" in plan.reason
    y = getattr(cyconv, op)(x, w, b, **kw)
    assert_close(y, reference.conv(x, w, b, **kw), dtype, what="forward")
    gy = RNG.standard_normal(y.shape).astype(dtype)
    gx = getattr(cyconv.grad, f"{op}_input")(x.shape, w, gy, **kw)
    assert_close(gx, reference.conv_input_grad(x.shape, w, gy, **kw), dtype, what="input")
    gw = getattr(cyconv.grad, f"{op}_weight")(x, w.shape, gy, **kw)
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **kw), dtype, what="weight")
    # unbatched, empty and non-contiguous inputs take the same kernel
    y1 = getattr(cyconv, op)(x[0], w, b, **kw)
    assert_close(y1, reference.conv(x[:1], w, b, **kw)[0], dtype, what="unbatched")
    y0 = getattr(cyconv, op)(x[:0], w, b, **kw)
    assert y0.shape == (0,) + y.shape[1:]
    for layout in ("strided", "channels_last", "negative"):
        yl = getattr(cyconv, op)(with_layout(x, layout), with_layout(w, layout), b, **kw)
        assert_identical(yl, y, what=layout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_depthwise(dtype):
    """A strided depthwise transposed convolution is the kernel's input gradient."""
    C = 10
    x = RNG.standard_normal((3, C, 6, 5)).astype(dtype)
    w = RNG.standard_normal((C, 1, 4, 4)).astype(dtype)
    b = RNG.standard_normal(C).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1, groups=C)
    plan = cyconv.plan("conv_transpose2d", x.shape, w.shape, dtype=np.dtype(dtype).name, **kw)
    assert plan.kernel == "depthwise"
    y = cyconv.conv_transpose2d(x, w, b, **kw)
    assert_close(y, reference.conv_transpose(x, w, b, **kw), dtype)


@pytest.mark.parametrize("threads", [2, 3])
def test_results_do_not_depend_on_threads(threads, num_threads):
    """Each output (and each weight) is summed by one thread in a fixed order."""
    C = 37                                      # 5 blocks of 8 channels, a ragged last one
    x, w, b = _arrays(2, C, (13, 12), (5, 5), np.float32, N=5)
    args = (2, C, (13, 12), (5, 5), 2, 2, 1, x, w, b)
    num_threads(1)
    one = _run_all(*args)
    num_threads(threads)
    many = _run_all(*args, gy=one[3])
    for a, c, what in zip(one[:3], many[:3], ("forward", "input", "weight")):
        assert_identical(a, c, what)


@pytest.mark.parametrize("where", ["x", "w", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_reach_what_im2col_reaches(where, value):
    """Padded taps multiply real zeros, as im2col's columns do: NaN and Inf land on the
    same outputs in every pass (0 * Inf = NaN included)."""
    C = 11
    x, w, b = _arrays(2, C, (9, 9), (3, 3), np.float64, N=2)
    kw = dict(stride=2, padding=1, groups=C)
    gy = RNG.standard_normal((2, C, 5, 5))
    {"x": x, "w": w, "gy": gy}[where][0 if where != "w" else 3].flat[4] = value
    got = _run_all(2, C, (9, 9), (3, 3), 2, 1, 1, x, w, b, gy=gy)
    ref = (cyconv.conv2d(x, w, b, **kw, algorithm="im2col"),
           cyconv.grad.conv2d_input(x.shape, w, gy, **kw, algorithm="im2col"),
           cyconv.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm="im2col"))
    for a, r, what in zip(got[:3], ref, ("forward", "input", "weight")):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=what)
        np.testing.assert_array_equal(np.isinf(a), np.isinf(r), err_msg=what)
        fin = np.isfinite(r)
        np.testing.assert_allclose(a[fin], r[fin], rtol=1e-12, atol=1e-12, err_msg=what)
    assert any((~np.isfinite(a)).any() for a in got[:3])


def test_workspace_limit(workspace_limit):
    """The plan counts the interleaved blocks of every thread, and hands a layer whose
    blocks would exceed the limit to the per-channel kernel."""
    shape, w_shape = (2, 64, 224, 224), (64, 1, 3, 3)
    plan = cyconv.plan("conv2d", shape, w_shape, stride=2, padding=1, groups=64)
    assert plan.kernel == "depthwise"
    assert 0 < plan.workspace_bytes <= cyconv.get_workspace_limit()
    workspace_limit(plan.workspace_bytes - 1)
    small = cyconv.plan("conv2d", shape, w_shape, stride=2, padding=1, groups=64)
    assert small.kernel == "direct"
    assert "depthwise kernel's blocks would exceed the workspace limit" in small.reason


def test_rule_follows_rows_and_stride():
    """Long rows at unit stride stay with the per-channel kernels, in both dtypes."""
    rows = _plan.ROW_BYTES
    for dtype, item in (("float32", 4), ("float64", 8)):
        long_w, short_w = -(-rows // item), -(-rows // item) - 1
        for width, kernel in ((long_w, "direct"), (short_w, "depthwise")):
            p = cyconv.plan("conv2d", (2, 8, 9, width), (8, 1, 3, 3), padding=1, groups=8,
                            dtype=dtype)
            assert p.kernel == kernel, (dtype, width, str(p))
        p = cyconv.plan("conv2d", (2, 8, 64, 64), (8, 1, 3, 3), stride=2, padding=1,
                        groups=8, dtype=dtype)
        assert p.kernel == "depthwise"


def test_matches_torch():
    torch = pytest.importorskip("torch")
    C = 24
    x, w, b = _arrays(2, C, (14, 14), (5, 5), np.float64, N=3)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), stride=2, padding=2, groups=C)
    gy = RNG.standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(gy))
    y, gx, gw, _ = _run_all(2, C, (14, 14), (5, 5), 2, 2, 1, x, w, b, gy=gy)
    for a, r in ((y, ty.detach()), (gx, tx.grad), (gw, tw.grad)):
        assert_close(a, r.numpy(), np.float64)


# -- outer: dense layers with few input channels, lanes across output channels -----------

def _outer_cases():
    out = []
    for nd in (1, 2, 3):
        for in_size, k, s, d, pad, C, K in itertools.product(
                IN_SIZES[nd], (2, 3, 5), STRIDES[nd], (1, 2), ("zero", "same", "asym"),
                (1, 3, 7), (1, 6, 8, 13)):
            if nd == 3 and (K == 13 or d == 2 or C == 7):
                continue
            kernel = (k,) * nd
            padding = {"zero": 0, "same": "same",
                       "asym": tuple((0, 1) if i % 2 == 0 else (2, 0) for i in range(nd))}[pad]
            try:
                cyconv.plan(f"conv{nd}d", (2, C) + in_size, (K, C) + kernel, stride=s,
                            padding=padding, dilation=d)
            except ValueError:
                continue
            out.append((nd, C, K, in_size, kernel, s, padding, d))
    return out


OUTER = _outer_cases()
OUTER_GRID = [(c, np.float32) for c in OUTER[::2]] + [(c, np.float64) for c in OUTER[1::5]]


def _run_outer(nd, C, K, in_size, kernel, s, padding, d, x, w, b, gy=None):
    op = f"conv{nd}d"
    kw = dict(stride=s, padding=padding, dilation=d)
    dt = x.dtype.name

    def forced(direction):
        plan = cyconv.plan(op, x.shape, w.shape, dtype=dt, direction=direction, **kw)
        return dataclasses.replace(plan, kernel="outer", nonfinite=None,
                                   geometry=plan.params.geometry(), phases=None)

    y = _cpu.conv_forward(forced("forward"), x, w, b)
    if gy is None:
        gy = RNG.standard_normal(y.shape).astype(x.dtype)
    gw = _cpu.conv_backward_weight(forced("weight"), x, gy)
    return y, gw, gy


@pytest.mark.parametrize("case, dtype", OUTER_GRID, ids=lambda v: str(v) if not isinstance(
    v, type) else v.__name__)
def test_outer_matches_reference(case, dtype):
    nd, C, K, in_size, kernel, s, padding, d = case
    x = RNG.standard_normal((3, C) + in_size).astype(dtype)
    w = RNG.standard_normal((K, C) + kernel).astype(dtype)
    b = RNG.standard_normal(K).astype(dtype)
    y, gw, gy = _run_outer(*case, x, w, b)
    kw = dict(stride=s, padding=padding, dilation=d)
    assert_close(y, reference.conv(x, w, b, **kw), dtype, what="forward")
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **kw), dtype, what="weight")


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_through_the_public_api(dtype):
    """LeNet's second layer (6 input channels) and a strided RGB stem, unbatched too."""
    for xs, ws, kw in (((5, 6, 14, 14), (16, 6, 5, 5), {}),
                       ((2, 3, 23, 21), (20, 3, 3, 3), dict(stride=2, padding=1))):
        x = RNG.standard_normal(xs).astype(dtype)
        w = RNG.standard_normal(ws).astype(dtype)
        b = RNG.standard_normal(ws[0]).astype(dtype)
        for direction in ("forward", "weight"):
            plan = cyconv.plan("conv2d", xs, ws, dtype=np.dtype(dtype).name,
                               direction=direction, **kw)
            assert plan.kernel == "outer", str(plan)
        y = cyconv.conv2d(x, w, b, **kw)
        assert_close(y, reference.conv(x, w, b, **kw), dtype)
        gy = RNG.standard_normal(y.shape).astype(dtype)
        gw = cyconv.grad.conv2d_weight(x, w.shape, gy, **kw)
        assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **kw), dtype)
        assert_close(cyconv.conv2d(x[1], w, b, **kw), reference.conv(x[1:2], w, b, **kw)[0],
                     dtype, what="unbatched")
        assert cyconv.conv2d(x[:0], w, b, **kw).shape == (0,) + y.shape[1:]


@pytest.mark.parametrize("threads", [2, 3])
def test_outer_does_not_depend_on_threads(threads, num_threads):
    x = RNG.standard_normal((5, 3, 19, 17)).astype(np.float32)
    w = RNG.standard_normal((21, 3, 5, 5)).astype(np.float32)
    args = (2, 3, 21, (19, 17), (5, 5), 2, 2, 1)
    num_threads(1)
    one = _run_outer(*args, x, w, None)
    num_threads(threads)
    many = _run_outer(*args, x, w, None, gy=one[2])
    assert_identical(one[0], many[0], "forward")
    assert_identical(one[1], many[1], "weight")


@pytest.mark.parametrize("where", ["x", "w", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_outer_nonfinite_reach_what_im2col_reaches(where, value):
    x = RNG.standard_normal((2, 3, 9, 9))
    w = RNG.standard_normal((10, 3, 3, 3))
    kw = dict(stride=2, padding=1)
    gy = RNG.standard_normal((2, 10, 5, 5))
    {"x": x, "w": w, "gy": gy}[where][1].flat[4] = value
    got = _run_outer(2, 3, 10, (9, 9), (3, 3), 2, 1, 1, x, w, None, gy=gy)
    ref = (cyconv.conv2d(x, w, None, **kw, algorithm="im2col"),
           cyconv.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm="im2col"))
    for a, r, what in zip(got[:2], ref, ("forward", "weight")):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=what)
        np.testing.assert_array_equal(np.isinf(a), np.isinf(r), err_msg=what)
        fin = np.isfinite(r)
        np.testing.assert_allclose(a[fin], r[fin], rtol=1e-12, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_weight_gradient_of_cifar_size_layers(dtype):
    """Up to 64 input channels on small planes: the weight gradient runs 'outer'."""
    x = RNG.standard_normal((6, 24, 12, 11)).astype(dtype)
    w_shape = (20, 24, 3, 3)
    kw = dict(padding=1, stride=(1, 2))
    plan = cyconv.plan("conv2d", x.shape, w_shape, dtype=np.dtype(dtype).name,
                       direction="weight", **kw)
    assert plan.kernel == "outer", str(plan)
    gy = RNG.standard_normal((6, 20, 12, 6)).astype(dtype)
    gw = cyconv.grad.conv2d_weight(x, w_shape, gy, **kw)
    assert_close(gw, reference.conv_weight_grad(x, w_shape, gy, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, cg, kg, stride", [(4, 8, 8, 1), (3, 16, 12, 2), (2, 9, 20, 1)])
def test_outer_grouped(groups, cg, kg, stride, dtype):
    """ResNeXt-style groups of 8 or more channels: forward and weight gradient."""
    x = RNG.standard_normal((3, groups * cg, 10, 9)).astype(dtype)
    w = RNG.standard_normal((groups * kg, cg, 3, 3)).astype(dtype)
    b = RNG.standard_normal(groups * kg).astype(dtype)
    kw = dict(padding=1, stride=stride, groups=groups)
    for direction in ("forward", "weight"):
        plan = cyconv.plan("conv2d", x.shape, w.shape, dtype=np.dtype(dtype).name,
                           direction=direction, **kw)
        assert plan.kernel == "outer", str(plan)
    y = cyconv.conv2d(x, w, b, **kw)
    assert_close(y, reference.conv(x, w, b, **kw), dtype, what="forward")
    gy = RNG.standard_normal(y.shape).astype(dtype)
    gw = cyconv.grad.conv2d_weight(x, w.shape, gy, **kw)
    assert_close(gw, reference.conv_weight_grad(x, w.shape, gy, **kw), dtype, what="weight")


OUTER_CHUNKED = [
    # nd, x shape, w shape, kwargs: few output blocks for the threads and 1024+ pixels,
    # so the planes are staged once and the blocks cut into pixel chunks
    (2, (1, 3, 45, 37), (13, 3, 3, 3), dict(padding=1)),
    (1, (1, 5, 3000), (20, 5, 7), dict(stride=2, padding=3, dilation=2)),
    (3, (2, 2, 9, 14, 13), (8, 2, 3, 3, 3), dict(padding=1)),
    (2, (1, 16, 40, 30), (16, 8, 3, 3), dict(padding=(0, 2), groups=2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OUTER_CHUNKED, ids=lambda c: f"{c[0]}d-{c[1]}")
def test_outer_forward_in_pixel_chunks(case, dtype, num_threads):
    """Batch 1 (or 2) with few output blocks: the same sums as the whole-plane items, at
    1, 2 and 3 threads bit for bit, and against the float64 reference."""
    nd, xs, ws, kw = case
    x = RNG.standard_normal(xs).astype(dtype)
    w = RNG.standard_normal(ws).astype(dtype)
    b = RNG.standard_normal(ws[0]).astype(dtype)
    op = f"conv{nd}d"

    def run():
        plan = cyconv.plan(op, x.shape, w.shape, dtype=np.dtype(dtype).name, **kw)
        plan = dataclasses.replace(plan, kernel="outer", nonfinite=None,
                                   geometry=plan.params.geometry(), phases=None)
        return _cpu.conv_forward(plan, x, w, b)

    runs = []
    for n in (1, 2, 3):
        num_threads(n)
        runs.append(run())
    assert_close(runs[0], reference.conv(x, w, b, **kw), dtype)
    for n, y in zip((2, 3), runs[1:]):
        assert_identical(runs[0], y, f"{n} threads")
