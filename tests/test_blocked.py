"""The channel-blocked direct kernel (``cyconv/_ext/blocked.pyx``).

``algorithm="direct"`` runs it for forward convolutions whose groups have at least one
vector of input and output channels (8 float32 / 4 float64), and for the input gradient
(and transposed convolution) of such layers at unit stride.  The main grids use a few
channels per group and so test the per-channel direct kernel; this grid has channel
counts that are and are not multiples of the block, output blocks that pair up and one
left over, output rows that split into every mix of 6-pixel and 3 .. 5-pixel calls (and
rows of 1 and 2 pixels), 1-D/2-D/3-D, strides, dilation, padding forms, groups and bias.
Every case first checks that the blocked kernel really ran.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cyconv
import reference
from conftest import DTYPES, ConvCase, assert_close, assert_identical
from cyconv import _cpu, _plan

BLOCKED_CASES = [
    # nd, N, C_in, C_out, groups, in, kernel, stride, padding, dilation, bias
    ConvCase(2, 2, 16, 24, 1, (9, 11), (3, 3), padding=1, bias=True),
    ConvCase(2, 2, 9, 13, 1, (8, 7), (3, 3), padding="same"),
    ConvCase(2, 1, 24, 8, 1, (10, 10), (3, 3), stride=2, padding=1),
    ConvCase(2, 2, 8, 40, 1, (7, 13), (5, 3), stride=(1, 2), padding=((2, 1), (0, 3)),
             bias=True),
    ConvCase(2, 2, 32, 32, 2, (9, 9), (3, 3), padding=2, dilation=2, bias=True),
    ConvCase(2, None, 12, 20, 1, (6, 15), (2, 4), padding="same", dilation=(2, 1)),
    ConvCase(2, 3, 16, 16, 1, (5, 5), (1, 1)),
    ConvCase(2, 2, 16, 16, 1, (12, 12), (3, 3), stride=3, padding="valid"),
    ConvCase(2, 2, 17, 9, 1, (31, 29), (3, 3), padding=1),
    ConvCase(1, 2, 16, 24, 1, (50,), (9,), padding=4, bias=True),
    ConvCase(1, 3, 10, 12, 1, (40,), (2,), dilation=8, padding="same"),
    ConvCase(1, 2, 16, 16, 2, (33,), (3,), stride=2, padding=((1, 2),)),
    ConvCase(3, 2, 16, 16, 1, (5, 6, 7), (3, 3, 3), padding=1, bias=True),
    ConvCase(3, 1, 8, 12, 1, (4, 9, 8), (2, 3, 3), stride=(1, 2, 1), padding="same"),
    ConvCase(3, 2, 12, 8, 1, (6, 5, 5), (3, 1, 2), padding=((1, 1), (0, 0), (1, 0)),
             dilation=(2, 1, 1)),
    # long rows: 6-pixel calls and a last one or two of 3 .. 5
    ConvCase(2, 2, 16, 24, 1, (6, 40), (3, 3), padding=1, bias=True),
    ConvCase(1, 2, 8, 16, 1, (64,), (3,), padding="same"),
    ConvCase(3, 1, 8, 8, 1, (3, 4, 22), (3, 3, 3), padding=1),
    ConvCase(2, 1, 16, 8, 1, (9, 34), (3, 3), padding=1, dilation=(2, 1)),
    # dilation and padding large against the image: border calls list only the taps that
    # reach real input (none at all where the padding is wider than the kernel's reach)
    ConvCase(2, 2, 16, 16, 1, (11, 13), (3, 3), padding=6, dilation=6, bias=True),
    ConvCase(2, 2, 8, 16, 1, (7, 30), (3, 3), padding=((4, 2), (1, 3)), dilation=(3, 1)),
    ConvCase(3, 1, 8, 8, 1, (5, 6, 7), (3, 3, 3), padding=3, dilation=(3, 2, 4), bias=True),
    ConvCase(1, 2, 16, 8, 1, (20,), (5,), padding=30, dilation=6, bias=True),
    ConvCase(2, 1, 8, 8, 1, (4, 40), (3, 5), padding=((9, 0), (2, 30)), dilation=(4, 7)),
    # rows of 36 (6 calls of 6), 8, 6, 3, 2 and 1 pixels (4 + 4; one call; one call of 3
    # of which 2 or 1 are stored)
    ConvCase(1, 2, 16, 16, 1, (36,), (3,), padding=1),
    ConvCase(2, 2, 16, 16, 1, (6, 8), (3, 3), padding=1),
    ConvCase(2, 1, 16, 16, 1, (6, 6), (3, 3), padding=1, bias=True),
    ConvCase(1, 2, 16, 8, 1, (5,), (3,), stride=2, padding=1),
    ConvCase(2, 2, 16, 24, 1, (5, 2), (3, 3), padding=1, bias=True),
    ConvCase(2, 1, 8, 16, 1, (4, 3), (3, 3)),
    # one long 1-D sample: too few rows for the threads, so rows are cut across too
    ConvCase(1, 1, 16, 24, 1, (1000,), (3,), padding=1, bias=True),
    ConvCase(1, 1, 8, 16, 1, (2001,), (4,), stride=2, padding=3, dilation=2),
    # one short sample with many output blocks (a text CNN, a vocoder's input layer at
    # batch 1): the output-block pairs are shared out among the threads too; input
    # channels not a multiple of the block (the packed weights' overhang stays zero)
    ConvCase(1, 1, 20, 100, 1, (16,), (5,), bias=True),
    ConvCase(2, None, 28, 72, 1, (3, 5), (3, 3), padding=1),
]
IDS = [c.id for c in BLOCKED_CASES]


def _geometry(case, itemsize=4):
    from cyconv._params import conv_params
    x_shape = case.x_shape if case.batched else (1,) + case.x_shape
    return conv_params(case.op, case.nd, x_shape, case.w_shape, **case.kwargs).geometry()


def _row_width(case):
    from cyconv._params import conv_params
    x_shape = case.x_shape if case.batched else (1,) + case.x_shape
    return conv_params(case.op, case.nd, x_shape, case.w_shape, **case.kwargs).col_size[-1]


def test_grid_covers_every_row_split():
    """Rows are cut into 6-pixel calls and a last one or two of 3 .. 5 (7 = 4 + 3,
    8 = 4 + 4): the grid has every remainder after the 6-pixel calls, and rows of 1 .. 8."""
    widths = {_row_width(c) for c in BLOCKED_CASES}
    assert set(range(1, 9)) <= widths
    assert {w % 6 for w in widths if w > 8} == set(range(6))


def _spy(monkeypatch):
    """The names of the convolution kernels the CPU backend executes, in order."""
    executed = []
    monkeypatch.setattr(_cpu, "trace", executed)
    return executed


def _unit_stride_no_overpad(case):
    return (all(s == 1 for s in case.stride_t)
            and all(pb <= d * (k - 1)
                    for (pb, _), d, k in zip(case.pairs, case.dilation_t, case.kernel_size)))


def _expected_input_grad_kernel(case):
    """A blocked forward of gy at unit stride; one per output phase when strided; the
    per-channel kernel where the phases do not apply (dilation, padding wider than the
    kernel) -- or im2col, where padding or dilation dwarf the data."""
    if _unit_stride_no_overpad(case):
        return "blocked_flipped"
    from cyconv import _plan
    from cyconv._params import conv_params
    x_shape = case.x_shape if case.batched else (1,) + case.x_shape
    p = conv_params(case.op, case.nd, x_shape, case.w_shape, **case.kwargs)
    if _plan.input_grad_phases(p) is not None:
        return "blocked_phases"
    return "im2col" if _plan.staging_too_big(p) else "direct"


def _batched(a, case):
    return a if case.batched else a[None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BLOCKED_CASES, ids=IDS)
def test_forward_matches_reference(case, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    x, w, b = case.numpy_arrays(dtype)
    plan = cyconv.plan(case.op, x.shape, w.shape, dtype=np.dtype(dtype).name,
                       algorithm="direct", **case.kwargs)
    if plan.kernel == "outer":     # groups of 8-64 channels: the plan's own choice;
        # the blocked kernel must still be right there (it runs them when forced)
        assert _plan.outer_wins(plan.params, "forward")
        plan = dataclasses.replace(plan, kernel="blocked")
        y = _cpu.conv_forward(plan, _batched(x, case), w, b)
        y = y if case.batched else y[0]
    else:
        y = getattr(cyconv, case.op)(x, w, b, **case.kwargs, algorithm="direct")
    assert calls == ["blocked"], "the blocked kernel did not run"
    assert plan.kernel == "blocked"
    expected = reference.conv(_batched(x, case), w, b, case.stride_t, case.pairs,
                              case.dilation_t, case.groups)
    assert_close(_batched(y, case), expected, dtype, what=case.id)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BLOCKED_CASES, ids=IDS)
def test_input_grad_matches_reference(case, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    x, w, _ = case.numpy_arrays(dtype)
    gy = case.grad_output(dtype)
    gx = getattr(cyconv.grad, f"{case.op}_input")(x.shape, w, gy, **case.kwargs,
                                                   algorithm="direct")
    assert calls == [_expected_input_grad_kernel(case)]
    plan = cyconv.plan(case.op, x.shape, w.shape, dtype=np.dtype(dtype).name,
                       direction="input", algorithm="direct", **case.kwargs)
    assert calls == [plan.kernel]
    expected = reference.conv_input_grad(_batched(x, case).shape, w, _batched(gy, case),
                                         case.stride_t, case.pairs, case.dilation_t,
                                         case.groups)
    assert_close(_batched(gx, case), expected, dtype, what=case.id)


TRANSPOSED = [
    # (nd, N, C_in, C_out, groups, in_size, kernel, padding, dilation)
    (2, 2, 16, 24, 1, (7, 9), (3, 3), 1, 1),
    (2, 2, 24, 16, 2, (6, 6), (4, 4), 0, 2),
    (1, 3, 9, 12, 1, (20,), (5,), 2, 1),
    (3, 1, 8, 8, 1, (3, 4, 5), (3, 3, 3), 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", TRANSPOSED, ids=lambda s: f"{s[0]}d-c{s[2]}to{s[3]}g{s[4]}")
def test_unit_stride_transposed_conv_matches_reference(spec, dtype, monkeypatch):
    nd, N, C_in, C_out, G, size, k, pad, dil = spec
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (N, C_in) + size).astype(dtype)
    w = rng.uniform(-1, 1, (C_in, C_out // G) + k).astype(dtype)
    b = rng.uniform(-1, 1, C_out).astype(dtype)
    y = getattr(cyconv, f"conv_transpose{nd}d")(x, w, b, padding=pad, groups=G, dilation=dil,
                                                 algorithm="direct")
    assert calls == ["blocked_flipped"]
    assert_close(y, reference.conv_transpose(x, w, b, 1, pad, 0, G, dil), dtype)


@pytest.mark.parametrize("case", [BLOCKED_CASES[i] for i in (0, 2, 3, 8, 12, 13, 14, 19, 21,
                                                              -4, -3, -2, -1)],
                         ids=lambda c: c.id)
def test_bit_identical_for_any_thread_count_and_workspace(case):
    """Chunking (whole samples, slabs of depth slices or rows, down to one; rows cut
    across for a long 1-D sample; output blocks shared out for a short one) and the
    thread count never change a bit."""
    x, w, b = case.numpy_arrays(np.float32)
    gy = case.grad_output(np.float32)
    op = getattr(cyconv, case.op)
    gin = getattr(cyconv.grad, f"{case.op}_input")

    def both():
        return (op(x, w, b, **case.kwargs, algorithm="direct"),
                gin(x.shape, w, gy, **case.kwargs, algorithm="direct"))

    old_t, old_ws = cyconv.get_num_threads(), cyconv.get_workspace_limit()
    try:
        cyconv.set_num_threads(2)
        y2, g2 = both()
        runs = []
        for n in (1, 3):
            cyconv.set_num_threads(n)
            runs.append((f"{n} thread(s)", both()))
        cyconv.set_num_threads(2)
        for limit in (1024, 8 * 1024, 40 * 1024):
            cyconv.set_workspace_limit(limit)
            runs.append((f"workspace {limit} B", both()))
    finally:
        cyconv.set_num_threads(old_t)
        cyconv.set_workspace_limit(old_ws)
    for what, (y, g) in runs:
        assert_identical(y, y2, f"forward, {what}")
        assert_identical(g, g2, f"input grad, {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(dtype):
    case = BLOCKED_CASES[0]
    x, w, b = case.numpy_arrays(dtype)
    x[1, 3, 4, 5] = np.nan
    x[0, 0, 0, 0] = np.inf
    w[5, 2, 0, 0] = np.inf          # meets padding zeros too: 0 * inf = NaN, as im2col
    got = cyconv.conv2d(x, w, b, **case.kwargs, algorithm="direct")
    ref = cyconv.conv2d(x, w, b, **case.kwargs, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    assert np.isnan(got).any() and np.isinf(got).any()
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", BLOCKED_CASES[19:], ids=IDS[19:])
def test_leaving_out_padding_taps_changes_no_bit(case):
    """With finite weights the kernel leaves out taps that read only padding; a NaN
    weight makes it run every tap (0 * NaN must reach the output).  The channels that
    the NaN does not touch come out bit-identical either way."""
    x, w, b = case.numpy_arrays(np.float32)
    op = getattr(cyconv, case.op)
    skipped = op(x, w, b, **case.kwargs, algorithm="direct")
    w_nan = w.copy()
    w_nan[0].flat[0] = np.nan
    full = _batched(op(x, w_nan, b, **case.kwargs, algorithm="direct"), case)
    skipped = _batched(skipped, case)
    assert np.isnan(full[:, 0]).all()
    assert_identical(full[:, 1:], skipped[:, 1:], case.id)


def test_small_channel_groups_keep_the_per_channel_kernel(monkeypatch):
    calls = _spy(monkeypatch)
    x = np.ones((2, 8, 9, 9), np.float32)
    cyconv.conv2d(x, np.ones((8, 2, 3, 3), np.float32), groups=4, algorithm="direct")
    cyconv.conv2d(x, np.ones((8, 8, 3, 3), np.float32), algorithm="direct")
    assert calls == ["direct", "blocked"]  # groups of 2 channels: per-channel; 8: blocked


PHASE_CASES = [
    # nd, N, C_in, C_out, groups, in size, kernel, stride, padding, output_padding
    (2, 2, 16, 8, 1, (5, 6), 4, 2, 1, 0),           # DCGAN: 2 x 2 taps per phase
    (2, 2, 16, 24, 1, (4, 4), 3, 2, 1, 1),          # phases of 2 and 1 taps
    (1, 2, 16, 8, 1, (9,), 5, 3, 2, 0),             # stride 3
    (2, 1, 16, 16, 2, (3, 5), 2, 2, 0, 0),          # one tap per phase, groups
    (3, 2, 8, 16, 1, (3, 4, 2), 3, 2, 1, 1),
    (2, 2, 8, 8, 1, (4, 4), 1, 2, 0, 1),            # phases no tap reaches: bias only
    (1, 1, 8, 16, 1, (200,), 4, 2, 1, 0),           # one long sample
    (2, 2, 8, 8, 1, (3, 7), (2, 5), (1, 3), (0, 2), (0, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", PHASE_CASES, ids=lambda s: "-".join(map(str, s)))
def test_strided_transposed_conv_by_output_phases(spec, dtype, monkeypatch):
    """A strided transposed convolution (a strided input gradient) with algorithm='direct'
    runs one blocked forward convolution per output phase of the kernel's taps that
    reach it, each written into its strided slice of the output."""
    nd, N, C, K, G, size, k, s, pad, op = spec
    tup = lambda v: v if isinstance(v, tuple) else (v,) * nd
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C) + size).astype(dtype)
    w = rng.standard_normal((C, K // G) + tup(k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    calls = _spy(monkeypatch)
    y = getattr(cyconv, f"conv_transpose{nd}d")(x, w, b, stride=s, padding=pad,
                                                 output_padding=op, groups=G,
                                                 algorithm="direct")
    assert calls == ["blocked_phases"]
    ref = reference.conv_transpose(x, w, b, tup(s), tuple((p, p) for p in tup(pad)), tup(op),
                                   G, (1,) * nd)
    assert_close(y, ref, dtype, what=str(spec))
