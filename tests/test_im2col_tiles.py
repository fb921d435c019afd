"""The im2col path's tiling of long images and of single-sample weight gradients.

The input gradient (and transposed convolution) cuts long images into pixel tiles and
scatters them tile by tile; the weight gradient splits the column rows among the threads
when a call has fewer pixel tiles than threads (one long sample).  The tile sizes are
shape-dependent; the tuning hook ``set_tile_bytes`` shrinks them here so that small
arrays cross many tile boundaries.  Everything is checked against the float64
reference, in both dtypes, at 1 and 2 threads.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
import reference
from conftest import DTYPES, assert_close
from cyconv import _cpu, _ext


@pytest.fixture(params=[256, 4096], ids=["tile256B", "tile4KiB"])
def small_tiles(request):
    mod = _ext.kernels("im2col")
    mod.set_tile_bytes(request.param)
    yield request.param
    mod.set_tile_bytes(2 * 1024 * 1024)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = cyconv.get_num_threads()
    cyconv.set_num_threads(request.param)
    yield request.param
    cyconv.set_num_threads(old)


def _rng_arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_1d_long_signal(dtype, small_tiles, threads):
    x, w, b = _rng_arrays(dtype, (1, 6, 301), (6, 4, 4), (4,))
    y = cyconv.conv_transpose1d(x, w, b, stride=2, padding=1, algorithm="im2col")
    ref = reference.conv_transpose(x, w, b, (2,), ((1, 1),), (0,), 1, (1,))
    assert_close(y, ref, dtype, what="conv_transpose1d")


@pytest.mark.parametrize("dtype", DTYPES)
def test_input_grad_2d_groups_and_dilation(dtype, small_tiles, threads):
    w, gy = _rng_arrays(dtype, (6, 2, 3, 3), (2, 6, 19, 25))
    gx = cyconv.grad.conv2d_input((2, 4, 19, 25), w, gy, padding=(1, 2), dilation=(1, 2),
                                  groups=2, algorithm="im2col")
    ref = reference.conv_input_grad((2, 4, 19, 25), w, gy, (1, 1), ((1, 1), (2, 2)),
                                    (1, 2), 2)
    assert_close(gx, ref, dtype, what="conv2d_input")


@pytest.mark.parametrize("dtype", DTYPES)
def test_input_grad_3d_strided(dtype, small_tiles, threads):
    w, gy = _rng_arrays(dtype, (3, 2, 2, 3, 3), (1, 3, 5, 5, 6))
    size = (1, 2, 8, 10, 12)
    gx = cyconv.grad.conv3d_input(size, w, gy, stride=2, padding=1, algorithm="im2col")
    ref = reference.conv_input_grad(size, w, gy, (2, 2, 2), ((1, 1),) * 3, (1, 1, 1), 1)
    assert_close(gx, ref, dtype, what="conv3d_input")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3])
def test_weight_grad_single_long_sample(dtype, n, threads):
    """One sample with fewer pixel tiles than threads: the rows are split instead."""
    x, gy = _rng_arrays(dtype, (n, 5, 40), (n, 3, 10))
    gw = cyconv.grad.conv1d_weight(x, (3, 5, 16), gy, stride=3, padding=2,
                                   algorithm="im2col")
    ref = reference.conv_weight_grad(x, (3, 5, 16), gy, (3,), ((2, 2),), (1,), 1)
    assert_close(gw, ref, dtype, what="conv1d_weight")
    again = cyconv.grad.conv1d_weight(x, (3, 5, 16), gy, stride=3, padding=2,
                                      algorithm="im2col")
    np.testing.assert_array_equal(gw, again)


def test_tiles_agree_with_whole_image_to_rounding():
    x, w = _rng_arrays(np.float64, (2, 8, 500), (8, 4, 5))
    whole = cyconv.conv_transpose1d(x, w, stride=3, padding=2, algorithm="im2col")
    mod = _ext.kernels("im2col")
    mod.set_tile_bytes(512)
    try:
        tiled = cyconv.conv_transpose1d(x, w, stride=3, padding=2, algorithm="im2col")
    finally:
        mod.set_tile_bytes(2 * 1024 * 1024)
    np.testing.assert_allclose(tiled, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 3, 7, 70])
def test_small_images_batched_per_gemm(N, dtype, threads, workspace_limit):
    """Input gradients of small images run several samples per GEMM (their output-gradient
    planes gathered side by side), batches as even as the thread count allows, the last
    one shorter; a workspace too small for the gathered planes shrinks the batches.
    Transposed 2-D with bias and groups, and a plain input gradient, against the float64
    reference."""
    x, w, b = _rng_arrays(dtype, (N, 6, 3, 3), (6, 2, 4, 4), (4,), seed=N)
    ref = reference.conv_transpose(x, w, b, (2, 2), ((1, 1), (1, 1)), (0, 0), 2, (1, 1))
    for limit in (256 * 1024 * 1024, 2048):
        workspace_limit(limit)
        y = cyconv.conv_transpose2d(x, w, b, stride=2, padding=1, groups=2,
                                    algorithm="im2col")
        assert_close(y, ref, dtype, what=f"conv_transpose2d N={N} workspace {limit}")
    gy, w2 = _rng_arrays(dtype, (N, 8, 5, 5), (8, 3, 3, 3), seed=N + 1)
    gx = cyconv.grad.conv2d_input((N, 3, 5, 5), w2, gy, padding=1, algorithm="im2col")
    assert_close(gx, reference.conv_input_grad((N, 3, 5, 5), w2, gy, padding=1), dtype,
                 what=f"conv2d_input N={N}")


def _tap_gemm_spy(monkeypatch):
    """The names of the convolution kernels the CPU backend executes, in order."""
    executed = []
    monkeypatch.setattr(_cpu, "trace", executed)
    return executed


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding, dilation", [
    (0, 1), (1, 1), ((3, 0), 3), ((0, 5), 5), ((9, 9), 4), ((12, 0), 1), (0, 40)])
def test_two_tap_1d_forward_as_per_tap_gemms(padding, dilation, dtype, small_tiles, threads,
                                             monkeypatch):
    """A 1-D 2-tap forward (WaveNet's causal layers) runs one GEMM per tap on shifted
    views of x, no column matrix.  Each tap leaves out the columns that read padding, so
    the first tap may miss the first columns (causal padding), the second the last ones,
    and with padding wider than the dilation a tap misses whole tiles; groups and bias."""
    x, w, b = _rng_arrays(dtype, (3, 6, 53), (4, 3, 2), (4,))
    calls = _tap_gemm_spy(monkeypatch)
    pairs = padding if isinstance(padding, tuple) else (padding, padding)
    y = cyconv.conv1d(x, w, b, padding=(pairs,), dilation=dilation, groups=2,
                      algorithm="im2col")
    assert calls == ["im2col_taps"]
    ref = reference.conv(x, w, b, 1, (pairs,), dilation, 2)
    assert_close(y, ref, dtype, what=f"conv1d padding={padding} dilation={dilation}")


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_two_tap_1d_forward_nonfinite_weight_meets_the_padding(bad):
    """A NaN or Inf weight times the padding's zeros is NaN, as in the reference: the
    per-tap GEMMs (which leave padding columns out) give way to the column matrix."""
    x, w = _rng_arrays(np.float64, (2, 3, 20), (2, 3, 2))
    w[1, 2, 0] = bad
    y = cyconv.conv1d(x, w, padding=((2, 1),), algorithm="im2col")
    ref = reference.conv(x, w, None, 1, ((2, 1),), 1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(ref[:, 1, :2]).all()      # the padding columns
    finite = np.isfinite(ref)
    np.testing.assert_allclose(y[finite], ref[finite], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 2, 5, 70])
def test_forward_small_planes_batched_per_gemm(N, dtype, threads, workspace_limit):
    """Forward convolutions of small planes run several samples per GEMM (their column
    matrices side by side, the result staged and copied out), batches as even as the
    thread count allows, the last one shorter; a workspace too small for the staged
    batch runs one sample at a time, and one smaller still narrows the pixel tile and
    chunks the column rows.  2-D strided with groups and bias, and 3-D, against the
    float64 reference."""
    x, w, b = _rng_arrays(dtype, (N, 6, 9, 7), (10, 3, 3, 3), (10,), seed=N)
    ref = reference.conv(x, w, b, stride=2, padding=1, groups=2)
    x3, w3 = _rng_arrays(dtype, (N, 4, 3, 4, 5), (6, 4, 2, 3, 3), seed=N + 1)
    ref3 = reference.conv(x3, w3, padding=(1, 0, 1))
    for limit in (256 * 1024 * 1024, 4096, 64):
        workspace_limit(limit)
        y = cyconv.conv2d(x, w, b, stride=2, padding=1, groups=2, algorithm="im2col")
        assert_close(y, ref, dtype, what=f"conv2d N={N} workspace {limit}")
        y3 = cyconv.conv3d(x3, w3, padding=(1, 0, 1), algorithm="im2col")
        assert_close(y3, ref3, dtype, what=f"conv3d N={N} workspace {limit}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_long_reduction_chunks_column_rows(dtype, small_tiles, threads):
    """A column matrix deeper than the cache tile allows for SPAN pixels is built and
    multiplied a chunk of rows at a time, the GEMMs summing into the output (tiny tiles
    here force several chunks, with and without samples batched), 1-D/2-D/3-D."""
    cases = [((3, 5, 40), (4, 5, 7), dict(padding=3, dilation=2), reference.conv),
             ((4, 6, 6, 5), (8, 3, 3, 3), dict(padding=1, groups=2), reference.conv),
             ((1, 6, 9, 9), (5, 6, 3, 3), dict(stride=2), reference.conv),
             ((2, 3, 4, 5, 6), (4, 3, 2, 2, 3), dict(padding=1), reference.conv)]
    for i, (xs, ws, kw, ref_fn) in enumerate(cases):
        x, w, b = _rng_arrays(dtype, xs, ws, (ws[0],), seed=10 + i)
        op = getattr(cyconv, f"conv{len(xs) - 2}d")
        y = op(x, w, b, **kw, algorithm="im2col")
        assert_close(y, ref_fn(x, w, b, **kw), dtype, what=f"{op.__name__} {xs} {ws} {kw}")
