"""Plans (``cyconv/_plan.py``): which kernel runs for which shapes, that the kernel a call
executes is its plan's, that ``cyconv.plan`` returns the object the call uses, and the
plan cache (a repeated call skips normalisation; settings changes are honoured; bad
arguments are never cached away)."""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, SPECIAL_CONV_CASES, conv_grid
from cyconv import _cpu, _dispatch, _ext, _plan, functional, grad

avx2 = pytest.mark.skipif(_ext.ISA != "avx2", reason="the rule is for the AVX2 kernels")
GRID = conv_grid()[::2] + SPECIAL_CONV_CASES


@pytest.fixture
def executed(monkeypatch):
    """The names of the convolution kernels the CPU backend executes, in order."""
    names = []
    monkeypatch.setattr(_cpu, "trace", names)
    return names


def _plan_of(op, x_shape, w_shape, direction="forward", dtype="float32", **kw):
    return cyconv.plan(op, x_shape, w_shape, dtype=dtype, direction=direction, **kw)


# -- which kernel for which shapes ------------------------------------------------------

@avx2
@pytest.mark.parametrize("x_shape, w_shape, kw, direction, kernel", [
    # dense 3x3, unit stride: Winograd forward, its flipped form for the input grad
    ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=1), "forward", "winograd_f4"),
    ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=1), "input", "winograd_f4_flipped"),
    # other dense layers: the channel-blocked kernel forward, its flipped form for the
    # input grad
    ((8, 64, 28, 28), (64, 64, 5, 5), dict(padding=2), "forward", "blocked"),
    ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=2, dilation=2), "input",
     "blocked_flipped"),
    ((8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), "weight", "im2col"),
    ((8, 16, 56, 56), (16, 16, 3, 3), dict(padding=1), "weight", "direct"),  # thin GEMM
    # CIFAR-size weight gradients (up to 64 channels, planes up to 32x32): 'outer'
    ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=1), "weight", "outer"),
    ((128, 16, 32, 32), (16, 16, 3, 3), dict(padding=1), "weight", "outer"),
    # long channel reductions and 1x1 kernels: im2col, pointwise when unpadded
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=2, dilation=2), "forward", "im2col"),
    ((8, 256, 14, 14), (128, 256, 1, 1), {}, "forward", "im2col_pointwise"),
    ((8, 256, 14, 14), (128, 256, 1, 1), dict(stride=2), "forward", "im2col"),
    # depthwise at unit stride with long rows: the per-channel direct kernel
    ((8, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32), "forward", "direct"),
    ((8, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32), "input",
     "direct_flipped"),
    ((8, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32), "weight", "direct"),
    # ... strided or with short rows: channel-interleaved blocks, every pass
    ((8, 32, 28, 28), (32, 1, 5, 5), dict(padding=2, stride=2, groups=32), "input",
     "depthwise"),
    ((8, 32, 28, 28), (32, 1, 5, 5), dict(padding=2, stride=2, groups=32), "forward",
     "depthwise"),
    ((8, 96, 7, 7), (96, 1, 3, 3), dict(padding=1, groups=96), "forward", "depthwise"),
    ((8, 96, 7, 7), (96, 1, 7, 7), dict(padding=3, groups=96), "input", "depthwise"),
    ((8, 96, 7, 7), (96, 1, 3, 3), dict(padding=1, groups=96), "weight", "depthwise"),
    ((2, 16, 9, 9, 9), (16, 1, 3, 3, 3), dict(stride=2, groups=16), "forward",
     "depthwise"),
    # thin groups that are not depthwise: the per-channel direct kernel
    ((8, 32, 14, 14), (32, 4, 3, 3), dict(padding=1, stride=2, groups=8), "forward",
     "direct"),
    # fewer than 8 input channels, dense: vectors of output channels (not the input grad)
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, "forward", "outer"),
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, "weight", "outer"),
    ((8, 3, 64, 64), (32, 3, 3, 3), dict(stride=2, padding=1), "forward", "outer"),
    ((2, 1, 9, 9, 9), (8, 1, 3, 3, 3), dict(padding=1), "weight", "outer"),
    ((8, 3, 64, 64), (32, 3, 1, 1), {}, "forward", "direct"),   # 1x1: GEMM depth 3
    # groups of 8-64 channels (ResNeXt): 'outer' forward and weight, not 4 per group
    ((8, 256, 28, 28), (256, 8, 3, 3), dict(padding=1, groups=32), "forward", "outer"),
    ((8, 512, 14, 14), (512, 16, 3, 3), dict(padding=1, stride=2, groups=32), "weight",
     "outer"),
    ((8, 128, 28, 28), (128, 4, 3, 3), dict(padding=1, groups=32), "forward", "direct"),
    ((8, 256, 28, 28), (256, 8, 3, 3), dict(padding=1, groups=32), "input",
     "blocked_flipped"),
    # a 1-D 2-tap layer: one GEMM per tap
    ((4, 64, 500), (64, 64, 2), dict(dilation=4), "forward", "im2col_taps"),
])
def test_kernel_for_shapes(x_shape, w_shape, kw, direction, kernel):
    nd = len(x_shape) - 2
    plan = _plan_of(f"conv{nd}d", x_shape, w_shape, direction, **kw)
    assert plan.kernel == kernel, str(plan)
    assert plan.reason.startswith("algorithm='auto': ")


def test_forced_algorithms_and_their_fallbacks():
    p = _plan_of("conv2d", (2, 8, 9, 9), (8, 8, 3, 3), padding=1, algorithm="im2col")
    assert (p.algorithm, p.kernel) == ("im2col", "im2col")
    assert p.reason == "algorithm='im2col' was asked for"
    # padding far wider than the image and output: the direct kernels' staging planes
    # would dwarf the data, so 'direct' names im2col, and says why
    p = _plan_of("conv1d", (1, 2, 10), (2, 2, 3), padding=((5_000_000, 0),), stride=1000,
                 algorithm="direct")
    assert (p.algorithm, p.kernel) == ("direct", "im2col")
    assert "staging planes" in p.reason
    # a strided transposed convolution with 'direct': one blocked conv per output phase
    p = _plan_of("conv_transpose2d", (2, 16, 5, 6), (16, 8, 4, 4), stride=2, padding=1,
                 algorithm="direct")
    assert p.kernel == "blocked_phases" and p.conv_direction == "backward_input"
    assert p.nonfinite.kernel == "im2col"


def test_tiny_ops_run_on_one_thread():
    cyconv.set_num_threads(2)
    try:
        assert _plan_of("conv2d", (1, 4, 8, 8), (4, 4, 3, 3), padding=1).threads == 1
        assert _plan_of("conv2d", (8, 64, 28, 28), (64, 64, 3, 3), padding=1).threads == 2
    finally:
        cyconv.set_num_threads(cyconv._runtime._default_threads())


def test_gpu_plans_need_no_gpu():
    """Plans for device='cuda' are made without CuPy: im2col or direct, as asked or by
    'auto' (which knows no CPU-only kernels there)."""
    p = _plan_of("conv2d", (8, 64, 28, 28), (64, 64, 3, 3), padding=1, device="cuda")
    assert (p.device, p.algorithm, p.kernel, p.threads) == ("cuda", "im2col", "im2col", 0)
    assert "allocation fails" in p.reason
    p = _plan_of("conv2d", (8, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32,
                 device="cuda", dtype="float16")
    assert (p.kernel, p.dtype) == ("direct", "float16")


def test_plan_describes_itself():
    p = _plan_of("conv2d", (8, 64, 28, 28), (64, 64, 3, 3), padding=1)
    assert p.op == "conv2d" and p.direction == "forward" and p.device == "cpu"
    assert p.out_shape == (8, 64, 28, 28) and p.dtype == "float32"
    assert p.workspace_bytes >= 0
    text = str(p)
    assert p.kernel in text and p.reason in text and "(8, 64, 28, 28)" in text
    unbatched = _plan_of("conv_transpose1d", (3, 10), (3, 5, 4), stride=2)
    assert unbatched.out_shape == (5, 22)
    wgrad = _plan_of("conv1d", (3, 10), (5, 3, 4), direction="weight")
    assert wgrad.out_shape == (5, 3, 4)


@pytest.mark.parametrize("call, exc, message", [
    (lambda: cyconv.plan("conv4d", (1, 1, 4), (1, 1, 1)), ValueError, "op must be one of"),
    (lambda: cyconv.plan("conv1d", (1, 1, 4), (1, 1, 1), direction="backward"), ValueError,
     "direction must be"),
    (lambda: cyconv.plan("conv1d", (1, 1, 4), (1, 1, 1), device="tpu"), ValueError,
     "device must be"),
    (lambda: cyconv.plan("conv1d", (1, 1, 4), (1, 1, 1), dtype="float16"), TypeError,
     "dtype must be one of float32, float64 on cpu"),
    (lambda: cyconv.plan("conv1d", (1, 1, 4), (1, 1, 1), output_padding=1), TypeError,
     "takes no argument 'output_padding'"),
    (lambda: cyconv.plan("conv2d", (1, 3, 8, 8), (4, 2, 3, 3)), ValueError,
     r"conv2d: input \(1, 3, 8, 8\) has 3 channels, weight \(4, 2, 3, 3\)"),
    (lambda: cyconv.plan("conv2d", (1, 3, 8, 8), (4, 3, 3, 3), algorithm="fft"),
     ValueError, "algorithm"),
])
def test_bad_plan_arguments(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- the kernel a call executes is its plan's -------------------------------------------

def _calls(case, x, w, b, gy, algorithm):
    kw = dict(case.kwargs, algorithm=algorithm)
    return {"forward": lambda: getattr(cyconv, case.op)(x, w, b, **kw),
            "input": lambda: getattr(grad, f"{case.op}_input")(x.shape, w, gy, **kw),
            "weight": lambda: getattr(grad, f"{case.op}_weight")(x, w.shape, gy, **kw)}


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
@pytest.mark.parametrize("case", GRID, ids=lambda c: c.id)
def test_call_executes_its_plan(case, algorithm, executed):
    x, w, b = case.arrays(np, np.float32)
    gy = case.grad_output(np.float32)
    for direction, call in _calls(case, x, w, b, gy, algorithm).items():
        executed.clear()
        call()
        plan = _plan_of(case.op, x.shape, w.shape, direction, algorithm=algorithm,
                        **case.kwargs)
        expected = [] if plan.params.N == 0 else [plan.kernel]   # N = 0 runs nothing
        assert executed == expected, f"{direction}: {plan}"


@pytest.mark.parametrize("direction", ["forward", "input"])
def test_nonfinite_weights_take_the_plans_fallback(direction, executed):
    x = np.ones((2, 8, 9, 9), np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    w[1, 2, 0, 0] = np.inf
    op_kw = dict(padding=1, algorithm="direct")
    plan = _plan_of("conv2d", x.shape, w.shape, direction, **op_kw)
    if direction == "forward":
        cyconv.conv2d(x, w, **op_kw)
        assert executed == [plan.kernel] == ["blocked"]    # handles NaN/Inf itself
    else:
        grad.conv2d_input(x.shape, w, np.ones((2, 8, 9, 9), np.float32), **op_kw)
        assert plan.kernel == "blocked_flipped"
        assert executed == [plan.nonfinite.kernel] == ["im2col"]


def test_two_tap_plan_falls_back_for_nonfinite_weights(executed):
    x = np.ones((2, 8, 30), np.float64)          # 8 input channels: not 'outer'
    w = np.ones((8, 8, 2), np.float64)           # 8 output channels: not 'direct'
    cyconv.conv1d(x, w, padding=1)
    w[0, 0, 0] = np.nan
    cyconv.conv1d(x, w, padding=1)
    assert executed == ["im2col_taps", "im2col"]


# -- one object, cached -----------------------------------------------------------------

def test_plan_is_the_object_the_call_runs(monkeypatch):
    seen = []
    real = _cpu.conv_forward
    monkeypatch.setattr(_cpu, "conv_forward", lambda plan, *a: seen.append(plan) or
                        real(plan, *a))
    x = np.ones((2, 16, 10, 10), np.float32)
    w = np.ones((8, 16, 3, 3), np.float32)
    cyconv.conv2d(x, w, stride=2, padding="same")
    cyconv.conv2d(x, w, stride=2, padding="same")
    plan = cyconv.plan("conv2d", x.shape, w.shape, stride=2, padding="same")
    assert seen[0] is seen[1] is plan
    seen.clear()
    # the transposed convolution's input gradient is a forward convolution
    wt = np.ones((16, 8, 3, 3), np.float32)        # (C_in, C_out, k, k)
    gy = np.ones((2, 8, 10, 10), np.float32)
    grad.conv_transpose2d_input(x.shape, wt, gy, padding=1)
    assert seen[0] is cyconv.plan("conv_transpose2d", x.shape, wt.shape, direction="input",
                                  padding=1)


def test_repeated_call_skips_normalisation(monkeypatch):
    counts = []
    real = functional.conv_params
    monkeypatch.setattr(functional, "conv_params", lambda *a, **k: counts.append(1) or
                        real(*a, **k))
    x = np.ones((1, 3, 7, 7), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    for _ in range(3):
        cyconv.conv2d(x, w, padding=(1, 1))
    assert len(counts) == 1
    cyconv.conv2d(x, w, padding=[1, 1])     # a list cannot key the cache: planned afresh
    cyconv.conv2d(x, w, padding=[1, 1])
    assert len(counts) == 3


def test_settings_changes_make_new_plans():
    x = np.ones((8, 64, 28, 28), np.float32)
    w = np.ones((64, 64, 3, 3), np.float32)
    before = (cyconv.get_num_threads(), cyconv.get_workspace_limit())
    try:
        cyconv.set_num_threads(1)
        one = _plan_of("conv2d", x.shape, w.shape, padding=1)
        cyconv.set_num_threads(2)
        two = _plan_of("conv2d", x.shape, w.shape, padding=1)
        assert (one.threads, two.threads) == (1, 2)
        cyconv.set_workspace_limit(1 << 20)
        small = _plan_of("conv2d", x.shape, w.shape, padding=1, algorithm="im2col")
        assert small.workspace_bytes <= 1 << 20
        cyconv.set_workspace_limit(1 << 30)
        assert _plan_of("conv2d", x.shape, w.shape, padding=1, algorithm="im2col") \
            is not small
    finally:
        cyconv.set_num_threads(before[0])
        cyconv.set_workspace_limit(before[1])


@pytest.mark.parametrize("good, bad, message", [
    (dict(stride=1), dict(stride=1.0), "stride"),
    (dict(stride=(1, 1)), dict(stride=(1, 1.0)), "stride"),
    (dict(groups=1), dict(groups=True), "groups"),
    (dict(padding=((1, 1), (0, 0))), dict(padding=((1, 1.0), (0, 0))), "padding"),
])
def test_equal_but_invalid_arguments_do_not_share_a_plan(good, bad, message):
    x = np.ones((1, 3, 7, 7), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    cyconv.conv2d(x, w, **good)
    with pytest.raises((ValueError, TypeError), match=message):
        cyconv.conv2d(x, w, **bad)


def test_wrong_bias_after_a_valid_call_is_still_an_error():
    x = np.ones((1, 3, 7, 7), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    cyconv.conv2d(x, w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="bias"):
        cyconv.conv2d(x, w, np.ones(5, np.float32))
    with pytest.raises(TypeError, match="float64"):
        cyconv.conv2d(x, w, np.ones(4, np.float64))


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_plan, "CACHE_SIZE", 8)
    _dispatch.clear_cache()
    w = np.ones((2, 1, 3), np.float32)
    for n in range(1, 30):
        cyconv.conv1d(np.ones((1, 1, n + 3), np.float32), w)
    assert len(_plan._CACHE) <= 8 and len(_dispatch._calls) <= 8
    _dispatch.clear_cache()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_pooling_skips_its_checks(dtype, monkeypatch):
    from cyconv import _pool
    counts = []
    real = _pool.pool_params
    monkeypatch.setattr(_pool, "pool_params", lambda *a, **k: counts.append(1) or
                        real(*a, **k))
    x = np.arange(64, dtype=dtype).reshape(1, 1, 8, 8)
    ys = [cyconv.max_pool2d(x, 2) for _ in range(3)]
    assert len(counts) == 1
    assert all(np.array_equal(y, ys[0]) for y in ys)
    with pytest.raises(ValueError, match="kernel_size"):
        cyconv.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="kernel_size must be an int"):
        cyconv.max_pool2d(x, 2.0)     # equal to 2, but not an int: not the cached plan


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fully_connected_layers_are_one_gemm(dtype, executed):
    """A window covering the whole unpadded input (DCGAN's last discriminator layer, its
    generator's first transposed layer) is a linear layer: one GEMM over the batch in
    every direction, checked against the float64 reference (NaN/Inf included)."""
    import reference
    from conftest import assert_close
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 6, 4, 3)).astype(dtype)
    w = rng.standard_normal((5, 6, 4, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    for direction in ("forward", "input", "weight"):
        plan = cyconv.plan("conv2d", x.shape, w.shape, dtype=dtype, direction=direction)
        assert plan.kernel == "im2col_fc" and plan.workspace_bytes == 0, str(plan)
    y = cyconv.conv2d(x, w, b)
    assert_close(y, reference.conv(x, w, b), np.dtype(dtype))
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(cyconv.grad.conv2d_input(x.shape, w, gy),
                 reference.conv_input_grad(x.shape, w, gy), np.dtype(dtype))
    assert_close(cyconv.grad.conv2d_weight(x, w.shape, gy),
                 reference.conv_weight_grad(x, w.shape, gy), np.dtype(dtype))
    bt = rng.standard_normal(6).astype(dtype)
    assert_close(cyconv.conv_transpose2d(gy, w, bt), reference.conv_transpose(gy, w, bt),
                 np.dtype(dtype))
    assert executed == ["im2col_fc"] * 4
    x[2, 1, 0, 0] = np.nan
    y = cyconv.conv2d(x, w, b)
    assert np.isnan(y[2]).all() and np.isfinite(np.delete(y, 2, axis=0)).all()
    # padding or a smaller window: not a linear layer
    assert cyconv.plan("conv2d", x.shape, w.shape, padding=1).kernel != "im2col_fc"
    assert cyconv.plan("conv2d", x.shape, (5, 6, 3, 3)).kernel != "im2col_fc"


def test_few_output_channels_run_the_per_channel_kernel():
    """Fewer than 8 output channels per group (a vocoder's 32 -> 1 output layer): im2col's
    GEMM would have that many rows, so forward and input gradient run the per-channel
    direct kernels; a 1x1 layer's GEMM reads x in place and keeps im2col."""
    x, w = (1, 32, 8192), (1, 32, 7)
    assert _plan_of("conv1d", x, w, "forward", padding=3).kernel == "direct"
    assert _plan_of("conv1d", x, w, "input", padding=3).kernel == "direct_flipped"
    assert _plan_of("conv2d", (2, 16, 9, 9), (3, 16, 3, 3), "input",
                    stride=2).kernel == "direct"
    assert _plan_of("conv2d", (4, 64, 32, 32), (2, 64, 1, 1),
                    "forward").kernel == "im2col_pointwise"
    assert _plan_of("conv1d", x, (8, 32, 7), "forward", padding=3).kernel != "direct"
