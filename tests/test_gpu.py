"""GPU (CuPy) parity: every conv op and gradient on the GPU against the CPU in float64.

Runs only with CuPy and a CUDA device; everything here is skipped otherwise (the CUDA
sources are still compiled and emulated on the CPU by ``test_cuda_compile.py``).

- Each case of the CPU conv grid, with both algorithms and float16/32/64, on the GPU:
  forward, input gradient, weight gradient and bias gradient, compared with the CPU
  backend in float64 on the same (already rounded) values.  Transposed convolutions too.
- GPU specifics: float16 accumulates in float32 (sums above 2048), float32 is not TF32
  even with ``CUPY_TF32=1``, deterministic weight gradients, a non-blocking stream,
  chunked workspaces, no compilation for a new shape, the kernel binary cache in a second
  process, indices past 2**31, grids past 65535 and a second GPU when there is one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cyconv
from conftest import (SPECIAL_CONV_CASES, ConvTransposeCase, _cupy_or_reason,
                      assert_close, conv_grid)

cupy, _REASON = _cupy_or_reason()
pytestmark = pytest.mark.skipif(cupy is None, reason=f"needs CuPy and a GPU: {_REASON}")

DTYPES = [np.float16, np.float32, np.float64]
ALGORITHMS = ["im2col", "direct"]
CONV_CASES = conv_grid() + SPECIAL_CONV_CASES
CONVT_CASES = [
    ConvTransposeCase(1, 2, 4, 6, 2, (7,), (3,), stride=2, padding=1, output_padding=1,
                      bias=True),
    ConvTransposeCase(1, None, 3, 2, 1, (40,), (4,), stride=2, padding=1, bias=True),
    ConvTransposeCase(2, 2, 3, 4, 1, (5, 4), (3, 2), stride=(2, 3), padding=(1, 0),
                      output_padding=(1, 2), bias=True),
    ConvTransposeCase(2, 2, 4, 4, 4, (5, 6), (3, 3), stride=2, padding=1, dilation=2,
                      output_padding=1, layout="negative"),
    ConvTransposeCase(2, 3, 6, 3, 1, (4, 5), (1, 1), bias=True),
    ConvTransposeCase(3, 2, 4, 2, 2, (3, 4, 3), (2, 3, 2), stride=(1, 2, 2),
                      padding=(0, 1, 1), dilation=(2, 1, 1), bias=True, layout="strided"),
    ConvTransposeCase(2, 0, 4, 6, 2, (4, 5), (3, 3), stride=2, bias=True),
]


def _get(a):
    return None if a is None else cupy.asnumpy(a)


def _all_ops(case, x, w, b, gy, algorithm):
    """{op name: result} for forward, input/weight/bias gradients of one case."""
    nd, kw = case.nd, case.kwargs
    t = "conv_transpose" if case.op.startswith("conv_transpose") else "conv"
    out = {
        "forward": getattr(cyconv, case.op)(x, w, b, **kw, algorithm=algorithm),
        "input": getattr(cyconv.grad, f"{t}{nd}d_input")(case.x_shape, w, gy, **kw,
                                                         algorithm=algorithm),
        "weight": getattr(cyconv.grad, f"{t}{nd}d_weight")(x, case.w_shape, gy, **kw,
                                                           algorithm=algorithm),
    }
    if b is not None:
        out["bias"] = cyconv.grad.bias(gy, channel_axis=1 if case.batched else 0)
    return out


def _check_case(case, dtype, algorithm):
    x, w, b = case.arrays(cupy, dtype)
    gy = cupy.asarray(case.grad_output(dtype))
    got = _all_ops(case, x, w, b, gy, algorithm)
    f64 = [None if a is None else _get(a).astype(np.float64) for a in (x, w, b, gy)]
    expected = _all_ops(case, *f64, algorithm="auto")
    for name, value in got.items():
        assert isinstance(value, cupy.ndarray), name
        assert value.device.id == x.device.id
        assert_close(value, expected[name], dtype, what=f"{case.id} {algorithm} {name}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_conv_gpu_matches_cpu_float64(case, dtype, algorithm):
    _check_case(case, dtype, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CONVT_CASES, ids=[c.id for c in CONVT_CASES])
def test_conv_transpose_gpu_matches_cpu_float64(case, dtype, algorithm):
    _check_case(case, dtype, algorithm)


def test_auto_on_gpu_matches_cpu():
    for case in CONV_CASES[::7]:
        _check_case(case, np.float32, "auto")


# -- float16 and float32 accumulate properly ----------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16_accumulates_in_float32(algorithm):
    """K = 512 * 3 * 3 = 4608 positive products: partial sums pass 2048, where float16
    accumulation would stop adding (2048 + 1 == 2048 in float16)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1, (2, 512, 6, 6)).astype(np.float16)
    w = rng.uniform(0.5, 1, (4, 512, 3, 3)).astype(np.float16)
    y = cyconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1, algorithm=algorithm)
    y64 = cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert float(np.max(y64)) > 2048
    assert_close(y, y64, np.float16, what="forward")
    gy = rng.uniform(0.5, 1, y64.shape).astype(np.float16)
    gx = cyconv.grad.conv2d_input(x.shape, cupy.asarray(w), cupy.asarray(gy), padding=1,
                                  algorithm=algorithm)
    gx64 = cyconv.grad.conv2d_input(x.shape, w.astype(np.float64), gy.astype(np.float64),
                                    padding=1)
    assert_close(gx, gx64, np.float16, what="input grad")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16_weight_grad_over_25000_terms(algorithm):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1, (4, 8, 80, 80)).astype(np.float16)       # N*H*W = 25600
    gy = rng.uniform(0.5, 1, (4, 8, 80, 80)).astype(np.float16)
    gw = cyconv.grad.conv2d_weight(cupy.asarray(x), (8, 1, 3, 3), cupy.asarray(gy),
                                   padding=1, groups=8, algorithm=algorithm)
    gw64 = cyconv.grad.conv2d_weight(x.astype(np.float64), (8, 1, 3, 3),
                                     gy.astype(np.float64), padding=1, groups=8)
    assert float(np.max(gw64)) > 2048
    assert_close(gw, gw64, np.float16, what="weight grad")


def test_float32_is_not_tf32_even_with_cupy_tf32(tmp_path):
    """CUPY_TF32=1 switches CuPy's 2-D GEMMs to TF32 (about 1e-3 relative error); cyconv's
    batched GEMMs must stay float32."""
    code = textwrap.dedent("""
        import numpy as np, cupy, cyconv
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (4, 64, 28, 28)).astype(np.float32)
        w = rng.uniform(-1, 1, (64, 64, 3, 3)).astype(np.float32)
        gy = rng.uniform(-1, 1, (4, 64, 28, 28)).astype(np.float32)
        worst = 0.0
        for alg in ("im2col", "direct"):
            for got, ref in [
                (cyconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1, algorithm=alg),
                 cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)),
                (cyconv.grad.conv2d_weight(cupy.asarray(x), w.shape, cupy.asarray(gy),
                                           padding=1, algorithm=alg),
                 cyconv.grad.conv2d_weight(x.astype(np.float64), w.shape,
                                           gy.astype(np.float64), padding=1))]:
                err = np.max(np.abs(cupy.asnumpy(got) - ref)) / np.max(np.abs(ref))
                worst = max(worst, float(err))
        print(worst)
    """)
    env = dict(os.environ, CUPY_TF32="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip()) < 1e-5


# -- determinism, streams, workspace ----------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("groups", [1, 32])
def test_weight_grad_is_bit_identical_run_to_run(algorithm, groups):
    rng = np.random.default_rng(2)
    x = cupy.asarray(rng.uniform(-1, 1, (16, 32, 28, 28)).astype(np.float32))
    gy = cupy.asarray(rng.uniform(-1, 1, (16, 32, 28, 28)).astype(np.float32))
    runs = [cupy.asnumpy(cyconv.grad.conv2d_weight(x, (32, 32 // groups, 3, 3), gy,
                                                   padding=1, groups=groups,
                                                   algorithm=algorithm)) for _ in range(3)]
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_runs_on_the_current_non_blocking_stream(algorithm):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (8, 16, 32, 32)).astype(np.float32)
    w = rng.uniform(-1, 1, (16, 16, 3, 3)).astype(np.float32)
    expected = cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        xg, wg = cupy.asarray(x), cupy.asarray(w)
        y = cyconv.conv2d(xg, wg, padding=1, algorithm=algorithm)
        gw = cyconv.grad.conv2d_weight(xg, w.shape, y, padding=1, algorithm=algorithm)
        gx = cyconv.grad.conv2d_input(x.shape, wg, y, padding=1, algorithm=algorithm)
    stream.synchronize()
    assert_close(y, expected, np.float32)
    gw64 = cyconv.grad.conv2d_weight(x.astype(np.float64), w.shape, expected, padding=1)
    gx64 = cyconv.grad.conv2d_input(x.shape, w.astype(np.float64), expected, padding=1)
    assert_close(gw, gw64, np.float32, what="weight grad")
    assert_close(gx, gx64, np.float32, what="input grad")


def test_small_workspace_chunks_agree():
    from cyconv import _gpu
    rng = np.random.default_rng(4)
    x = cupy.asarray(rng.uniform(-1, 1, (9, 8, 20, 20)).astype(np.float64))
    w = cupy.asarray(rng.uniform(-1, 1, (12, 8, 3, 3)).astype(np.float64))
    gy = cupy.asarray(rng.uniform(-1, 1, (9, 12, 20, 20)).astype(np.float64))

    def run():
        return (cyconv.conv2d(x, w, padding=1, algorithm="im2col"),
                cyconv.grad.conv2d_input(x.shape, w, gy, padding=1, algorithm="im2col"),
                cyconv.grad.conv2d_weight(x, w.shape, gy, padding=1, algorithm="im2col"))

    before = _gpu.get_workspace_limit()
    try:
        whole = run()
        _gpu.set_workspace_limit(2 * (8 * 9 + 12) * 400 * 8 + 12 * 72 * 16)   # 2 samples
        chunked = run()
    finally:
        _gpu.set_workspace_limit(before)
    for a, c in zip(chunked, whole):
        assert_close(a, cupy.asnumpy(c), np.float64, kind="parity")


def test_inputs_not_modified_and_non_contiguous_accepted():
    rng = np.random.default_rng(5)
    base = cupy.asarray(rng.uniform(-1, 1, (4, 6, 18, 20)).astype(np.float32))
    x = base[:, :, ::-2, 1::2]                       # negative and non-unit strides
    w = cupy.asarray(rng.uniform(-1, 1, (3, 6, 3, 3)).astype(np.float32)).transpose(0, 1, 3, 2)
    keep = (base.copy(), w.copy())
    for alg in ALGORITHMS:
        y = cyconv.conv2d(x, w, padding=1, algorithm=alg)
        ref = cyconv.conv2d(cupy.asnumpy(x).astype(np.float64),
                            cupy.asnumpy(w).astype(np.float64), padding=1)
        assert_close(y, ref, np.float32, what=alg)
    assert bool((base == keep[0]).all()) and bool((w == keep[1]).all())


def test_mixing_numpy_and_cupy_raises_type_error():
    x = cupy.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(TypeError, match="mix NumPy"):
        cyconv.conv2d(x, np.zeros((2, 2, 3, 3), np.float32))


# -- compilation ----------------------------------------------------------------------------

def _spy_on_nvrtc(monkeypatch, compiled):
    """Record the sources NVRTC compiles from now on (CuPy's own elementwise kernels may
    legitimately compile for a new shape; cyconv's modules must not)."""
    from cupy.cuda import compiler
    original = compiler._compile_using_nvrtc_no_warning

    def spy(source, *args, **kwargs):
        compiled.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(compiler, "_compile_using_nvrtc_no_warning", spy)


def _ours(sources):
    return [s for s in sources if "CYC_GRID_STRIDE" in s]


def _exercise(shapes):
    for dt in DTYPES:
        for shape in shapes:
            nd = len(shape) - 2
            x = cupy.ones(shape, dt)
            w = cupy.ones((6, 4) + (3,) * nd, dt)
            for alg in ALGORITHMS:
                for groups in (1, 2):
                    wg = w[:, :4 // groups]
                    y = getattr(cyconv, f"conv{nd}d")(x, wg, stride=2, padding=1,
                                                      groups=groups, algorithm=alg)
                    getattr(cyconv.grad, f"conv{nd}d_input")(x.shape, wg, y, stride=2,
                                                             padding=1, groups=groups,
                                                             algorithm=alg)
                    getattr(cyconv.grad, f"conv{nd}d_weight")(x, wg.shape, y, stride=2,
                                                              padding=1, groups=groups,
                                                              algorithm=alg)


def test_new_shapes_compile_nothing(monkeypatch):
    """After a warm-up per dtype, new shapes reuse the loaded modules: no NVRTC call
    compiles a cyconv source and no module is added."""
    from cyconv import _cuda
    _exercise([(2, 4, 6, 7), (1, 4, 5, 4, 6)])
    modules = dict(_cuda._modules)
    compiled = []
    _spy_on_nvrtc(monkeypatch, compiled)
    _exercise([(3, 4, 17, 9), (2, 4, 8, 9, 7)])
    assert not _ours(compiled)
    assert _cuda._modules == modules


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    version = tuple(int(v) for v in cupy.__version__.split(".")[:2] if v.isdigit())
    if version < (14, 1):
        pytest.xfail("CuPy before 14.1 does not read RawModules built from name_expressions "
                     "back from its disk cache (cupy#9667)")
    code = textwrap.dedent("""
        import sys, cupy, cyconv
        from cupy.cuda import compiler
        compiled = []
        original = compiler._compile_using_nvrtc_no_warning
        def spy(source, *a, **k):
            compiled.append(source)
            return original(source, *a, **k)
        compiler._compile_using_nvrtc_no_warning = spy
        x = cupy.ones((1, 2, 5, 5), cupy.float32)
        cyconv.conv2d(x, cupy.ones((2, 2, 3, 3), cupy.float32), algorithm="im2col")
        cyconv.conv2d(x, cupy.ones((2, 1, 3, 3), cupy.float32), groups=2, algorithm="direct")
        cupy.cuda.Device().synchronize()
        print(sum("CYC_GRID_STRIDE" in s for s in compiled))
    """)
    env = dict(os.environ, CUPY_CACHE_DIR=str(tmp_path), CUPY_CACHE_IN_MEMORY="0")
    counts = []
    for phase in ("cold", "warm"):
        res = subprocess.run([sys.executable, "-c", code, phase], capture_output=True,
                             text=True, env=env, timeout=600)
        assert res.returncode == 0, f"{phase}: {res.stderr[-3000:]}"
        counts.append(int(res.stdout.split()[-1]))
    assert counts == [2, 0]          # im2col.cu and direct.cu once, then from the cache


# -- sizes: 64-bit indices, big grids, a second device -------------------------------------

def _free_bytes():
    free, _ = cupy.cuda.runtime.memGetInfo()
    return free + cupy.get_default_memory_pool().free_bytes()


def test_input_past_2_31_elements_uses_64_bit_indices():
    """pytorch#117736: a (1, 514, 2048, 2048) float16 input (2.16e9 elements)."""
    from cyconv import _cuda
    shape = (1, 514, 2048, 2048)
    if _free_bytes() < 3 * 2 * int(np.prod(shape)):
        pytest.skip("not enough GPU memory")
    rng = np.random.default_rng(6)
    w = rng.uniform(-1, 1, (2, 514, 3, 3)).astype(np.float16)
    x = cupy.empty(shape, cupy.float16)
    # a cheap pattern that differs per channel, row and column, 32 channels at a time
    h = cupy.arange(2048, dtype=cupy.float32)[None, :, None]
    v = cupy.arange(2048, dtype=cupy.float32)[None, None, :]
    for c0 in range(0, 514, 32):
        c = cupy.arange(c0, min(c0 + 32, 514), dtype=cupy.float32)[:, None, None]
        x[0, c0:c0 + 32] = cupy.sin(0.37 * c + 0.011 * h + 0.013 * v).astype(cupy.float16)
    assert _cuda.index_dtype(x.size) == np.int64
    y = cyconv.conv2d(x, cupy.asarray(w), padding=1, algorithm="direct")
    for rows in (slice(0, 3), slice(1023, 1026), slice(2045, 2048)):
        lo, hi = max(rows.start - 1, 0), min(rows.stop + 1, 2048)
        crop = cupy.asnumpy(x[:, :, lo:hi, :]).astype(np.float64)
        pad_top = 1 if rows.start == 0 else 0
        pad_bottom = 1 if rows.stop == 2048 else 0
        crop = np.pad(crop, ((0, 0), (0, 0), (pad_top, pad_bottom), (1, 1)))
        ref = cyconv.conv2d(crop, w.astype(np.float64))
        assert_close(y[:, :, rows, :], ref, np.float16, what=f"rows {rows}")


def test_batch_of_70000_and_depthwise_past_65535_planes():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (70000, 1, 6, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (2, 1, 3, 3)).astype(np.float32)
    for alg in ALGORITHMS:
        y = cyconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1, algorithm=alg)
        assert_close(y, cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1),
                     np.float32, what=alg)
    x = rng.uniform(-1, 1, (40, 2048, 5, 5)).astype(np.float32)       # N * C = 81920
    w = rng.uniform(-1, 1, (2048, 1, 3, 3)).astype(np.float32)
    y = cyconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1, groups=2048)
    ref = cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, groups=2048)
    assert_close(y, ref, np.float32, what="depthwise")
    gw = cyconv.grad.conv2d_weight(cupy.asarray(x), w.shape, cupy.asarray(y), padding=1,
                                   groups=2048)
    gw64 = cyconv.grad.conv2d_weight(x.astype(np.float64), w.shape, ref, padding=1,
                                     groups=2048)
    assert_close(gw, gw64, np.float32, what="depthwise weight grad")


@pytest.mark.skipif(cupy is None or cupy.cuda.runtime.getDeviceCount() < 2,
                    reason="needs two GPUs")
def test_second_device():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (2, 4, 9, 9)).astype(np.float32)
    w = rng.uniform(-1, 1, (6, 2, 3, 3)).astype(np.float32)
    ref = cyconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, groups=2)
    with cupy.cuda.Device(1):
        xg, wg = cupy.asarray(x), cupy.asarray(w)
    for alg in ALGORITHMS:            # current device 0, arrays on device 1
        y = cyconv.conv2d(xg, wg, padding=1, groups=2, algorithm=alg)
        assert y.device.id == 1
        assert_close(y, ref, np.float32, what=alg)
    with cupy.cuda.Device(0):
        w0 = cupy.asarray(w)
    with pytest.raises(ValueError, match="different GPUs"):
        cyconv.conv2d(xg, w0, padding=1, groups=2)


# -- pooling, pad, ReLU, linear ----------------------------------------------------------------

def _pool_cases():
    from test_cuda_compile import ADAPTIVE_CASES, AVG_OPTIONS, PAD_CASES, POOL_CASES
    return POOL_CASES, AVG_OPTIONS, ADAPTIVE_CASES, PAD_CASES


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_pooling_pad_relu_linear_gpu_match_cpu_float64(dtype):
    pool_cases, avg_options, adaptive_cases, pad_cases = _pool_cases()
    rng = np.random.default_rng(9)

    def pair(shape):
        a = rng.uniform(-2, 2, shape).astype(dtype)
        return cupy.asarray(a), a.astype(np.float64)

    for nd, shape, k, s, p, d, ceil in pool_cases:
        xg, x64 = pair(shape)
        y, idx = getattr(cyconv, f"max_pool{nd}d")(xg, k, s, p, d, ceil, return_indices=True)
        y64, idx64 = getattr(cyconv, f"max_pool{nd}d")(x64, k, s, p, d, ceil,
                                                       return_indices=True)
        np.testing.assert_array_equal(cupy.asnumpy(idx), idx64)
        np.testing.assert_array_equal(cupy.asnumpy(y).astype(np.float64), y64)
        gg, g64 = pair(y64.shape)
        assert_close(getattr(cyconv.grad, f"max_pool{nd}d")(gg, idx, shape),
                     getattr(cyconv.grad, f"max_pool{nd}d")(g64, idx64, shape), dtype,
                     what="max_pool grad")
        if d != 1 and d != (1,) * nd:
            continue
        for opts in avg_options:
            if nd == 1 and "divisor_override" in opts:
                continue
            f = getattr(cyconv, f"avg_pool{nd}d")
            assert_close(f(xg, k, s, p, ceil, **opts), f(x64, k, s, p, ceil, **opts), dtype,
                         what=f"avg_pool {opts}")
            gg, g64 = pair(f(x64, k, s, p, ceil, **opts).shape)
            gf = getattr(cyconv.grad, f"avg_pool{nd}d")
            assert_close(gf(gg, shape, k, s, p, ceil, **opts),
                         gf(g64, shape, k, s, p, ceil, **opts), dtype,
                         what=f"avg_pool grad {opts}")
    for nd, shape, out in adaptive_cases:
        xg, x64 = pair(shape)
        f = getattr(cyconv, f"adaptive_avg_pool{nd}d")
        y64 = f(x64, out)
        assert_close(f(xg, out), y64, dtype, what="adaptive")
        gg, g64 = pair(y64.shape)
        gf = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")
        assert_close(gf(gg, shape), gf(g64, shape), dtype, what="adaptive grad")
    for shape, pad in pad_cases:
        for mode in ("constant", "reflect", "replicate", "circular"):
            if mode == "reflect" and any(v >= n for v, n in zip(pad[::2], shape[::-1])):
                continue
            xg, x64 = pair(shape)
            y64 = cyconv.pad(x64, pad, mode)
            np.testing.assert_array_equal(cupy.asnumpy(cyconv.pad(xg, pad, mode)), y64)
            gg, g64 = pair(y64.shape)
            assert_close(cyconv.grad.pad(gg, shape, pad, mode),
                         cyconv.grad.pad(g64, shape, pad, mode), dtype, what=f"pad {mode}")
    xg, x64 = pair((3, 4, 5))
    np.testing.assert_array_equal(cupy.asnumpy(cyconv.relu(xg)), cyconv.relu(x64))
    wg, w64 = pair((6, 5))
    bg, b64 = pair((6,))
    assert_close(cyconv.linear(xg, wg, bg), cyconv.linear(x64, w64, b64), dtype, what="linear")
