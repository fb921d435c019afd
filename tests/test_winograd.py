"""algorithm='winograd' (``cyconv/_ext/winograd.pyx``): F(4x4,3x3) and F(2x2,3x3) for
dense 3-tap, unit-stride, undilated layers, forward, input gradient and transposed
forward, against the float64 reference within the API's accuracy bound (relative L2
error 1e-5 float32, 1e-12 float64), with NaN/Inf where the other algorithms put them,
deterministic per thread count, within the workspace limit, and in the portable build."""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
import reference
from conftest import DTYPES, run_python
from cyconv import _cpu, _ext

#: the API's bound on the relative L2 error of winograd against the exact result
BOUND = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
avx2 = pytest.mark.skipif(_ext.ISA != "avx2", reason="the rule is for the AVX2 kernels")


@pytest.fixture
def executed(monkeypatch):
    names = []
    monkeypatch.setattr(_cpu, "trace", names)
    return names


def rel_l2(actual, expected):
    expected = np.asarray(expected, np.float64)
    return np.linalg.norm(actual.astype(np.float64) - expected) / max(
        np.linalg.norm(expected), 1e-300)


def assert_within_bound(actual, expected, dtype, what="", factor=1.0):
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape, what
    if expected.size:
        err = rel_l2(actual, expected)
        assert err <= factor * BOUND[np.dtype(dtype)], f"{what}: relative L2 error {err:.3e}"


def arrays(rng, x_shape, w_shape, dtype, bias=True):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


SIZES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 7), (8, 8), (9, 4), (13, 17)]
PADDINGS = [0, 1, 2, "same", ((0, 1), (2, 0))]


def _out_ok(size, padding):
    if padding == "same":
        return True
    pairs = padding if isinstance(padding, tuple) else ((padding, padding),) * 2
    return all(n + a + b - 2 >= 1 for n, (a, b) in zip(size, pairs))


# -- forward ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_forward_matches_reference(size, padding, dtype):
    if not _out_ok(size, padding):
        pytest.skip("no output")
    rng = np.random.default_rng(hash((size, str(padding))) % 2**32)
    x, w, b = arrays(rng, (2, 5) + size, (6, 5, 3, 3), dtype)
    y = cyconv.conv2d(x, w, b, padding=padding, algorithm="winograd")
    assert_within_bound(y, reference.conv(x, w, b, padding=padding), dtype,
                        f"{size} padding {padding}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [(1, 1), (8, 8), (9, 17), (24, 16)])
def test_forward_channel_counts(channels, dtype):
    C, K = channels
    rng = np.random.default_rng(C * 100 + K)
    x, w, b = arrays(rng, (3, C, 11, 10), (K, C, 3, 3), dtype)
    y = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert_within_bound(y, reference.conv(x, w, b, padding=1), dtype, f"C={C} K={K}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_accuracy_on_a_large_layer(dtype):
    """Long channel sums (256) over F(4x4) tiles, against torch in float64 if present."""
    rng = np.random.default_rng(7)
    x, w, b = arrays(rng, (2, 256, 32, 32), (32, 256, 3, 3), dtype)
    plan = cyconv.plan("conv2d", x.shape, w.shape, dtype=dtype, padding=1,
                       algorithm="winograd")
    assert plan.kernel == "winograd_f4"
    y = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    expected = reference.conv(x, w, b, padding=1)
    assert_within_bound(y, expected, dtype)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.conv2d(*(torch.from_numpy(a.astype(np.float64)) for a in (x, w, b)),
                                   padding=1).numpy()
    assert_within_bound(y, t, dtype, "against torch")


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_dynamic_range(dtype):
    """Inputs and weights spanning 12 orders of magnitude: the error stays relative to
    the result's norm (the bound is stated for unit-scale data; we measure within 4x)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 16, 19, 21)) * 10.0 ** rng.uniform(-6, 6, (2, 16, 19, 21)))
    w = rng.standard_normal((16, 16, 3, 3)) * 10.0 ** rng.uniform(-3, 3, (16, 16, 3, 3))
    x, w = x.astype(dtype), w.astype(dtype)
    for padding in (0, 1):
        y = cyconv.conv2d(x, w, padding=padding, algorithm="winograd")
        assert_within_bound(y, reference.conv(x, w, padding=padding), dtype,
                            f"padding {padding}", factor=4)


def test_batch_forms():
    rng = np.random.default_rng(1)
    x, w, b = arrays(rng, (0, 4, 9, 9), (5, 4, 3, 3), np.float32)
    y = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert y.shape == (0, 5, 9, 9)
    x, w, b = arrays(rng, (4, 9, 9), (5, 4, 3, 3), np.float32)
    y = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert_within_bound(y, reference.conv(x[None], w, b, padding=1)[0], np.float32)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 12, 20, 18)).astype(np.float32)[:, ::2, ::2, ::-1]
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float64)[::-1].astype(np.float32)
    w = np.asfortranarray(w)
    y = cyconv.conv2d(x, w, padding=1, algorithm="winograd")
    assert_within_bound(y, reference.conv(x, w, padding=1), np.float32)
    gy = rng.standard_normal((3, 8, 10, 18)).astype(np.float32).transpose(0, 1, 3, 2)
    gx = cyconv.grad.conv2d_input((3, 6, 18, 10), w, gy, padding=1, algorithm="winograd")
    assert_within_bound(gx, reference.conv_input_grad((3, 6, 18, 10), w, gy, padding=1),
                        np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_and_conv3d(dtype):
    rng = np.random.default_rng(4)
    x, w, b = arrays(rng, (2, 5, 23), (7, 5, 3), dtype)
    for padding in (0, 1, 2):
        y = cyconv.conv1d(x, w, b, padding=padding, algorithm="winograd")
        assert_within_bound(y, reference.conv(x, w, b, padding=padding), dtype, "1-D")
    x, w, b = arrays(rng, (2, 4, 5, 6, 7), (3, 4, 3, 3, 3), dtype)
    for padding in (0, 1, ((2, 0), (0, 1), (1, 1))):
        y = cyconv.conv3d(x, w, b, padding=padding, algorithm="winograd")
        assert_within_bound(y, reference.conv(x, w, b, padding=padding), dtype, "3-D")


# -- input gradient and transposed convolution ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [0, 1, 2, 3, "same"], ids=str)
def test_input_gradient(padding, dtype):
    rng = np.random.default_rng(5)
    x_shape, w_shape = (2, 6, 13, 10), (9, 6, 3, 3)
    w = rng.standard_normal(w_shape).astype(dtype)
    out = reference.conv(np.zeros(x_shape), w, padding=padding).shape
    gy = rng.standard_normal(out).astype(dtype)
    plan = cyconv.plan("conv2d", x_shape, w_shape, dtype=dtype, direction="input",
                       padding=padding, algorithm="winograd")
    assert plan.kernel.startswith("winograd_f") and plan.kernel.endswith("_flipped")
    gx = cyconv.grad.conv2d_input(x_shape, w, gy, padding=padding, algorithm="winograd")
    assert_within_bound(gx, reference.conv_input_grad(x_shape, w, gy, padding=padding),
                        dtype, f"padding {padding}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_conv_transpose_stride_1(padding, dtype):
    rng = np.random.default_rng(6)
    x, w, _ = arrays(rng, (2, 7, 9, 11), (7, 5, 3, 3), dtype)
    b = rng.standard_normal(5).astype(dtype)
    plan = cyconv.plan("conv_transpose2d", x.shape, w.shape, dtype=dtype, padding=padding,
                       algorithm="winograd")
    assert plan.kernel.endswith("_flipped") and plan.algorithm == "winograd"
    y = cyconv.conv_transpose2d(x, w, b, padding=padding, algorithm="winograd")
    assert_within_bound(y, reference.conv_transpose(x, w, b, padding=padding), dtype)
    # its input gradient is a plain forward convolution
    gy = rng.standard_normal(y.shape).astype(dtype)
    plan = cyconv.plan("conv_transpose2d", x.shape, w.shape, dtype=dtype, direction="input",
                       padding=padding, algorithm="winograd")
    assert plan.kernel in ("winograd_f4", "winograd_f2")
    gx = cyconv.grad.conv_transpose2d_input(x.shape, w, gy, padding=padding,
                                            algorithm="winograd")
    assert_within_bound(gx, reference.conv_transpose_input_grad(x.shape, w, gy,
                                                                padding=padding), dtype)


def test_weight_gradient_runs_the_usual_kernel(executed):
    rng = np.random.default_rng(8)
    x, w, _ = arrays(rng, (2, 8, 10, 10), (8, 8, 3, 3), np.float64)
    gy = rng.standard_normal((2, 8, 10, 10))
    plan = cyconv.plan("conv2d", x.shape, w.shape, dtype="float64", direction="weight",
                       padding=1, algorithm="winograd")
    auto = cyconv.plan("conv2d", x.shape, w.shape, dtype="float64", direction="weight",
                       padding=1)
    assert plan.kernel == auto.kernel and plan.algorithm in ("im2col", "direct")
    assert "the weight gradient has no Winograd kernel" in plan.reason
    gw = cyconv.grad.conv2d_weight(x, w.shape, gy, padding=1, algorithm="winograd")
    assert executed == [plan.kernel]
    assert_within_bound(gw, reference.conv_weight_grad(x, w.shape, gy, padding=1),
                        np.float64)


# -- determinism ----------------------------------------------------------------------------

def test_bit_identical_for_every_thread_count(num_threads):
    rng = np.random.default_rng(9)
    x, w, b = arrays(rng, (3, 24, 30, 29), (16, 24, 3, 3), np.float32)
    gy = rng.standard_normal((3, 16, 30, 29)).astype(np.float32)
    results = {}
    for n in (1, 2, 3):
        num_threads(n)
        runs = [(cyconv.conv2d(x, w, b, padding=1, algorithm="winograd"),
                 cyconv.grad.conv2d_input(x.shape, w, gy, padding=1, algorithm="winograd"))
                for _ in range(2)]
        for a, b_ in zip(runs[0], runs[1]):
            assert a.tobytes() == b_.tobytes(), f"{n} threads: two calls differ"
        results[n] = runs[0]
    # the block size does not depend on the thread count: neither does the result
    for n in (2, 3):
        for a, b_ in zip(results[1], results[n]):
            assert a.tobytes() == b_.tobytes(), f"1 vs {n} threads"


# -- NaN and Inf ----------------------------------------------------------------------------

def _same_nonfinite(a, b):
    return (np.array_equal(np.isnan(a), np.isnan(b))
            and np.array_equal(np.isposinf(a), np.isposinf(b))
            and np.array_equal(np.isneginf(a), np.isneginf(b)))


@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_reach_the_outputs_the_other_algorithms_reach(where, value, executed):
    rng = np.random.default_rng(10)
    x, w, b = arrays(rng, (2, 8, 14, 13), (8, 8, 3, 3), np.float32)   # F(2x2): 112 tiles
    if where == "input":
        x[1, 3, 0, 5] = value
        x[0, 2, 7, 12] = value
    else:
        w[2, 5, 0, 0] = value
    y = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    # NaN/Inf weights are seen before the call (the plan's nonfinite plan runs), NaN/Inf
    # inputs by the kernel as it copies them (then the same plan runs)
    assert executed == (["winograd_f2", "im2col"] if where == "input" else ["im2col"])
    for alg in ("im2col", "direct"):
        other = cyconv.conv2d(x, w, b, padding=1, algorithm=alg)
        assert _same_nonfinite(y, other), alg
    assert not np.isfinite(y).all()
    finite = np.isfinite(y)
    with np.errstate(invalid="ignore"):
        expected = reference.conv(x, w, b, padding=1)
    assert np.array_equal(finite, np.isfinite(expected))
    assert rel_l2(y[finite], expected[finite]) <= BOUND[np.dtype(np.float32)]
    # the input gradient, and a transposed convolution's forward, fall back the same way
    gy = x.copy()
    gx = cyconv.grad.conv2d_input(x.shape, w, gy, padding=1, algorithm="winograd")
    assert _same_nonfinite(gx, cyconv.grad.conv2d_input(x.shape, w, gy, padding=1,
                                                       algorithm="im2col"))


def test_finite_inputs_never_fall_back(executed):
    rng = np.random.default_rng(11)
    x, w, b = arrays(rng, (2, 8, 14, 13), (8, 8, 3, 3), np.float32)
    cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert executed == ["winograd_f2"]


# -- plans ----------------------------------------------------------------------------------

@pytest.mark.parametrize("x_shape, w_shape, kw, direction, kernel", [
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "forward", "winograd_f4"),
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "input", "winograd_f4_flipped"),
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), "forward", "winograd_f2"),
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), "input", "winograd_f2_flipped"),
    ((2, 8, 3, 3), (8, 8, 3, 3), dict(padding=1), "forward", "winograd_f2"),
    ((32, 8, 30, 6), (8, 8, 3, 3), dict(padding=0), "forward", "winograd_f4"),  # 28 x 4
    ((16, 8, 30, 6), (8, 8, 3, 3), dict(padding=0), "forward", "winograd_f2"),  # 112 tiles
    ((8, 8, 64), (8, 8, 3), dict(padding=1), "forward", "winograd_f4"),
    ((2, 8, 64), (8, 8, 3), dict(padding=1), "forward", "winograd_f2"),
])
def test_plan_names_the_winograd_kernel(x_shape, w_shape, kw, direction, kernel, executed):
    op = f"conv{len(x_shape) - 2}d"
    plan = cyconv.plan(op, x_shape, w_shape, direction=direction, algorithm="winograd", **kw)
    assert (plan.algorithm, plan.kernel) == ("winograd", kernel)
    assert f"F({kernel[10]}x{kernel[10]},3x3)" in plan.reason
    assert plan.nonfinite.kernel == "im2col"
    assert "NaN/Inf weights or input" in str(plan)
    assert plan.workspace_bytes > 0


def test_gpu_plan_names_im2col():
    plan = cyconv.plan("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), device="cuda", padding=1,
                       algorithm="winograd")
    assert (plan.algorithm, plan.kernel) == ("im2col", "im2col")
    assert "the GPU has no Winograd kernel yet" in plan.reason


@avx2
@pytest.mark.parametrize("x_shape, w_shape, direction, expected", [
    ((8, 64, 56, 56), (64, 64, 3, 3), "forward", "winograd"),
    ((8, 256, 14, 14), (256, 256, 3, 3), "input", "winograd"),
    ((2, 32, 16, 32, 32), (32, 32, 3, 3, 3), "forward", "winograd"),  # 3-D
    ((16, 64, 4096), (64, 64, 3), "input", "winograd"),               # 1-D
    ((8, 512, 7, 7), (512, 512, 3, 3), "forward", None),             # 32 F(4x4) tiles
    ((1, 128, 28, 28), (128, 128, 3, 3), "input", "winograd"),        # 196 F(2x2) tiles
    ((1, 512, 7, 7), (512, 512, 3, 3), "forward", None),             # 16 tiles
    ((8, 64, 4, 4), (64, 64, 3, 3), "forward", None),                # 32 tiles
    ((32, 4, 32, 32), (4, 4, 3, 3), "forward", None),                # 4 channels
    ((8, 64, 56, 56), (64, 64, 3, 3), "weight", None),
])
def test_auto_picks_winograd_for_dense_3x3(x_shape, w_shape, direction, expected):
    plan = cyconv.plan(f"conv{len(x_shape) - 2}d", x_shape, w_shape, direction=direction,
                       padding=1)
    if expected:
        assert plan.algorithm == expected, str(plan)
    else:
        assert plan.algorithm != "winograd", str(plan)


def test_errors_name_the_constraint():
    x, w = np.zeros((1, 4, 8, 8), np.float32), np.zeros((4, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d: algorithm='winograd' needs groups=1, "
                       r"3 taps per dim, stride 1 and dilation 1; got dilation \(2, 2\)$"):
        cyconv.conv2d(x, w, dilation=2, algorithm="winograd")


# -- workspace ------------------------------------------------------------------------------

@pytest.mark.parametrize("limit_kib", [48, 96, 192, 1024, 1 << 18])
@pytest.mark.parametrize("nd", [2, 3])
def test_workspace_limit_respected(limit_kib, nd, workspace_limit, executed):
    """Small limits cut blocks down and chunk samples into bands of tile rows; below the
    smallest layout the plan falls back to the direct or im2col kernel, and says so."""
    rng = np.random.default_rng(12)
    size = (40, 37) if nd == 2 else (5, 12, 11)
    x, w, b = arrays(rng, (2, 16) + size, (16, 16) + (3,) * nd, np.float32)
    workspace_limit(limit_kib << 10)
    op = f"conv{nd}d"
    plan = cyconv.plan(op, x.shape, w.shape, padding=1, algorithm="winograd")
    if plan.algorithm == "winograd":
        assert plan.workspace_bytes <= limit_kib << 10
    else:
        assert "workspace limit" in plan.reason
    y = getattr(cyconv, op)(x, w, b, padding=1, algorithm="winograd")
    assert executed == [plan.kernel]
    assert_within_bound(y, reference.conv(x, w, b, padding=1), np.float32)


def test_band_chunks_match_whole_samples(workspace_limit):
    """Results do not depend on how samples are chunked or on the block size."""
    rng = np.random.default_rng(13)
    x, w, b = arrays(rng, (2, 8, 45, 20), (8, 8, 3, 3), np.float64)
    whole = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    workspace_limit(120 << 10)
    plan = cyconv.plan("conv2d", x.shape, w.shape, dtype="float64", padding=1,
                       algorithm="winograd")
    assert plan.algorithm == "winograd" and plan.workspace_bytes <= 120 << 10
    banded = cyconv.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert_within_bound(banded, reference.conv(x, w, b, padding=1), np.float64)
    # smaller blocks and bands, same sums in the same order
    assert banded.tobytes() == whole.tobytes()


# -- the portable build ---------------------------------------------------------------------

_BASE_SCRIPT = r"""
import numpy as np, cyconv, reference
from cyconv import _ext
assert _ext.ISA == "base", _ext.ISA
assert _ext.kernels("winograd").__name__ == "cyconv._ext.winograd"
rng = np.random.default_rng(0)
for dtype, bound in ((np.float32, 1e-5), (np.float64, 1e-12)):
    for size, w_shape in (((2, 9, 13, 17), (10, 9, 3, 3)), ((2, 9, 3, 3), (10, 9, 3, 3)),
                          ((1, 5, 29), (4, 5, 3)), ((1, 3, 4, 5, 6), (2, 3, 3, 3, 3))):
        x = rng.standard_normal(size).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        op = getattr(cyconv, f"conv{len(size) - 2}d")
        y = op(x, w, padding=1, algorithm="winograd")
        r = reference.conv(x, w, padding=1)
        err = np.linalg.norm(y - r) / np.linalg.norm(r)
        assert err <= bound, (size, dtype, err)
        gy = rng.standard_normal(r.shape).astype(dtype)
        gx = getattr(cyconv.grad, f"conv{len(size) - 2}d_input")(
            x.shape, w, gy, padding=1, algorithm="winograd")
        r = reference.conv_input_grad(x.shape, w, gy, padding=1)
        err = np.linalg.norm(gx - r) / np.linalg.norm(r)
        assert err <= bound, (size, dtype, err)
x[0, 0, 0, 0, 0] = np.nan
y = cyconv.conv3d(x, w, padding=1, algorithm="winograd")
assert np.array_equal(np.isnan(y), np.isnan(cyconv.conv3d(x, w, padding=1, algorithm="im2col")))
print("ok")
"""


def test_portable_build():
    proc = run_python(["-c", _BASE_SCRIPT], timeout=300, env={"CYCONV_ISA": "base"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
