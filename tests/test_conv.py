"""Forward convolutions: ``cyconv.conv1d/2d/3d`` against a float64 reference and PyTorch.

The grid (``conftest.conv_grid``) crosses every padding form with every stride for each
of conv1d/2d/3d, and samples groups (dense, 2, depthwise, depthwise x2), dilation, kernel,
batch form (batched, unbatched, N=0, strided, channels-last, negatively strided) and bias.
Each case runs in float32 and float64 with each algorithm.  Then: algorithm parity,
inputs never modified, NaN/Inf propagation, float32 accuracy on a ResNet layer, a tiny
workspace cap and thread-count independence.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from cyconv import _cpu
import reference
from conftest import (DTYPES, SPECIAL_CONV_CASES, ConvCase, assert_close, assert_identical,
                      conv_grid, ref_conv, to_numpy, torch_conv, with_layout)

ALGORITHMS = ["im2col", "direct", "auto"]
CASES = conv_grid() + SPECIAL_CONV_CASES
IDS = [c.id for c in CASES]


def run(case, x, w, b, algorithm="auto"):
    return getattr(cyconv, case.op)(x, w, b, **case.kwargs, algorithm=algorithm)


# -- the reference itself (no cyconv involved) --------------------------------------------

TINY_CASES = [
    ConvCase(1, 2, 4, 6, 2, (9,), (3,), stride=2, padding=((2, 1),), dilation=2, bias=True),
    ConvCase(2, 1, 3, 6, 3, (6, 5), (3, 2), stride=(2, 1), padding="same", dilation=(1, 2)),
    ConvCase(2, 2, 2, 3, 1, (5, 7), (2, 3), stride=3, padding=(1, 2), bias=True),
    ConvCase(3, 1, 2, 2, 1, (4, 3, 5), (2, 1, 3), stride=(1, 2, 1), padding="same"),
]


@pytest.mark.parametrize("case", TINY_CASES, ids=[c.id for c in TINY_CASES])
def test_reference_matches_elementwise_loops(case):
    x, w, b = case.numpy_arrays(np.float64)
    args = (x[None] if not case.batched else x, w, b, case.stride_t, case.pairs,
            case.dilation_t, case.groups)
    np.testing.assert_allclose(reference.conv(*args), reference.conv_naive(*args),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_torch(case):
    x, w, b = case.numpy_arrays(np.float64)
    assert_close(ref_conv(case, x, w, b), torch_conv(case, x, w, b), np.float64,
                 what=case.id)


def test_same_padding_reference_is_tensorflow_rule():
    # in=224, k=7, s=2: TensorFlow pads (2, 3) and outputs 112 (a naive d*(k-1) split
    # would give (3, 3))
    assert reference.same_pairs_tf((224,), (7,), (2,), (1,)) == ((2, 3),)
    assert reference.conv_out_size((224,), (7,), (2,), ((2, 3),), (1,)) == (112,)


# -- cyconv against the references -------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_matches_reference(case, dtype, algorithm, xp):
    x, w, b = case.arrays(xp, dtype)
    y = run(case, x, w, b, algorithm)
    assert type(y) is type(x)
    assert_close(y, ref_conv(case, x, w, b), dtype, what=f"{case.id} {algorithm}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_matches_torch(case, dtype):
    x, w, b = case.arrays(np, dtype)
    y = run(case, x, w, b)
    assert_close(y, torch_conv(case, x, w, b), dtype, what=case.id)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_matches_direct(case, dtype):
    x, w, b = case.arrays(np, dtype)
    y_im2col = run(case, x, w, b, "im2col")
    y_direct = run(case, x, w, b, "direct")
    assert_close(y_direct, to_numpy(y_im2col).astype(np.float64), dtype, kind="parity",
                 what=case.id)


IN = {1: (9,), 2: (7, 8), 3: (5, 6, 7)}


def test_unbatched_equals_batched_first_sample():
    case = ConvCase(2, 1, 4, 6, 2, (7, 9), (3, 3), stride=2, padding="same", bias=True)
    x, w, b = case.numpy_arrays(np.float32)
    for algorithm in ("im2col", "direct"):
        y1 = cyconv.conv2d(x, w, b, **case.kwargs, algorithm=algorithm)
        y0 = cyconv.conv2d(x[0], w, b, **case.kwargs, algorithm=algorithm)
        assert y0.shape == y1.shape[1:]
        assert_identical(y0, y1[0], algorithm)


def test_empty_batch_shape_and_dtype():
    for nd in (1, 2, 3):
        x = np.zeros((0, 4) + IN[nd], np.float32)
        w = np.ones((6, 2) + (3,) * nd, np.float32)
        for algorithm in ALGORITHMS:
            y = getattr(cyconv, f"conv{nd}d")(x, w, np.ones(6, np.float32), stride=2,
                                              padding="same", groups=2, algorithm=algorithm)
            assert y.shape == (0, 6) + tuple(-(-n // 2) for n in IN[nd])
            assert y.dtype == np.float32



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_forms_agree(nd, dtype):
    """int, per-dim tuple, pairs, 'same' and np.pad + 'valid' describe the same conv."""
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3) + IN[nd]).astype(dtype)
    w = np.random.default_rng(4).uniform(-1, 1, (4, 3) + (3,) * nd).astype(dtype)
    conv = getattr(cyconv, f"conv{nd}d")
    for algorithm in ("im2col", "direct"):
        base = to_numpy(conv(x, w, padding=1, algorithm=algorithm)).astype(np.float64)
        for padding in [(1,) * nd, ((1, 1),) * nd, "same"]:
            assert_close(conv(x, w, padding=padding, algorithm=algorithm), base, dtype,
                         kind="parity", what=f"{padding!r} {algorithm}")
        # asymmetric pairs = np.pad + 'valid'
        pairs = ((0, 2), (1, 0), (2, 1))[:nd]
        explicit = conv(np.pad(x, ((0, 0), (0, 0)) + pairs), w, padding="valid",
                        algorithm=algorithm)
        assert_close(conv(x, w, padding=pairs, algorithm=algorithm),
                     to_numpy(explicit).astype(np.float64), dtype, kind="parity",
                     what=f"pairs {pairs} {algorithm}")
        # 'same' with stride 2 = np.pad with TensorFlow's pairs + 'valid'
        tf = reference.same_pairs_tf(IN[nd], (3,) * nd, (2,) * nd, (1,) * nd)
        explicit = conv(np.pad(x, ((0, 0), (0, 0)) + tf), w, stride=2, algorithm=algorithm)
        assert_close(conv(x, w, stride=2, padding="same", algorithm=algorithm),
                     to_numpy(explicit).astype(np.float64), dtype, kind="parity",
                     what=f"same stride 2 {algorithm}")


# -- inputs are read only -------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last", "negative"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_not_modified(algorithm, layout):
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), stride=2, padding="same", bias=True,
                    layout=layout)
    x, w, b = case.arrays(np, np.float32)
    before = [a.copy() for a in (x, w, b)]
    flags = [a.flags.writeable for a in (x, w, b)]
    run(case, x, w, b, algorithm)
    for name, a, a0, f in zip("xwb", (x, w, b), before, flags):
        assert_identical(a, a0, f"{name} modified")
        assert a.flags.writeable == f


def test_read_only_inputs_accepted():
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), padding=1, bias=True)
    x, w, b = case.numpy_arrays(np.float64)
    expected = ref_conv(case, x, w, b)
    for a in (x, w, b):
        a.flags.writeable = False
    for algorithm in ALGORITHMS:
        assert_close(run(case, x, w, b, algorithm), expected, np.float64, what=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("swapped", ["all", "input", "weight"])
def test_byte_swapped_inputs(swapped, algorithm):
    """Non-native byte order (arrays read from files) is still float32: accepted, same
    result as native arrays (the output is native)."""
    case = ConvCase(2, 2, 4, 6, 2, (7, 9), (3, 3), stride=2, padding="same", bias=True)
    x, w, b = case.numpy_arrays(np.float32)
    expected = run(case, x, w, b, algorithm)
    swap = lambda a: a.astype(a.dtype.newbyteorder(">" if np.little_endian else "<"))  # noqa
    xs = swap(x) if swapped in ("all", "input") else x
    ws = swap(w) if swapped in ("all", "weight") else w
    bs = swap(b) if swapped == "all" else b
    assert_close(run(case, xs, ws, bs, algorithm), to_numpy(expected).astype(np.float64),
                 np.float32, kind="parity", what=f"{swapped} byte-swapped")


def test_output_is_a_new_array_of_input_dtype():
    case = ConvCase(2, 2, 3, 3, 1, (5, 5), (1, 1))
    x, w, b = case.numpy_arrays(np.float32)
    for algorithm in ALGORITHMS:
        y = run(case, x, w, b, algorithm)
        assert y.dtype == np.float32 and not np.shares_memory(y, x)
        assert y.flags.c_contiguous


# -- NaN and Inf --------------------------------------------------------------------------

NAN_CASES = [
    ConvCase(1, 2, 2, 4, 2, (15,), (3,), stride=2, padding=((1, 2),), dilation=2),
    ConvCase(2, 2, 4, 4, 1, (9, 8), (3, 2), stride=(2, 1), padding="same", dilation=(1, 2)),
    ConvCase(2, 1, 3, 6, 3, (9, 8), (3, 3), stride=2, padding=1),
    ConvCase(3, 1, 2, 3, 1, (5, 6, 7), (2, 3, 3), stride=(1, 2, 1), padding="same"),
]


def _cover_mask(case, pixel):
    """Outputs whose receptive field contains input ``pixel`` (per output channel)."""
    ind = np.zeros(case.x_shape)
    ind[pixel] = 1.0
    w = np.ones(case.w_shape)
    return ref_conv(case, ind, w) > 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NAN_CASES, ids=[c.id for c in NAN_CASES])
def test_nan_input_poisons_exactly_its_windows(case, dtype, algorithm):
    x, w, b = case.numpy_arrays(dtype)
    w.reshape(-1)[::3] = 0.0      # zero weights must not be skipped: 0 * nan = nan
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(4):    # a pixel that strides or dilation skip must poison nothing
        pixel = tuple(int(rng.integers(n)) for n in case.x_shape)
        xn = x.copy()
        xn[pixel] = np.nan
        y = run(case, xn, w, b, algorithm)
        mask = _cover_mask(case, pixel)
        covered += bool(mask.any())
        np.testing.assert_array_equal(np.isnan(y), mask, err_msg=f"{case.id} nan at {pixel}")
        assert_close(np.where(mask, 0, y), np.where(mask, 0, ref_conv(case, x, w, b)), dtype,
                     what=f"{case.id} values away from the nan")
    assert covered, "no sampled pixel was read by any window"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", NAN_CASES, ids=[c.id for c in NAN_CASES])
def test_inf_input_reaches_exactly_its_windows(case, algorithm):
    rng = np.random.default_rng(8)
    x = rng.uniform(0.5, 1, case.x_shape).astype(np.float32)
    w = rng.uniform(0.5, 1, case.w_shape).astype(np.float32)
    pixel = tuple(int(rng.integers(n)) for n in case.x_shape)
    for sign in (1, -1):
        xi = x.copy()
        xi[pixel] = sign * np.inf
        y = run(case, xi, w, None, algorithm)
        mask = _cover_mask(case, pixel)
        assert mask.any()
        np.testing.assert_array_equal(y == sign * np.inf, mask, err_msg=f"{case.id} {sign}inf")
        assert np.isfinite(y[~mask]).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("padding", [0, 1])
def test_nan_weight_poisons_its_output_channel(algorithm, padding):
    """A NaN weight makes its whole output channel NaN, padded borders included (the
    zero padding times NaN is NaN, as in PyTorch); other channels stay finite."""
    case = ConvCase(2, 2, 4, 6, 2, (7, 8), (3, 3), padding=padding)
    x, w, b = case.numpy_arrays(np.float32)
    w[4, 1, 0, 0] = np.nan        # a corner tap: it reads padding at the top-left border
    y = run(case, x, w, b, algorithm)
    assert np.isnan(y[:, 4]).all(), f"padding {padding}: {np.isnan(y[:, 4]).sum()} NaNs"
    assert np.isfinite(np.delete(y, 4, axis=1)).all()


# -- float32 accuracy on a realistic layer -------------------------------------------------

@pytest.fixture(scope="module")
def resnet_layer():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    return x, w, reference.conv(x, w, None, 1, 1, 1, 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_accuracy_resnet_layer(resnet_layer, algorithm):
    x, w, expected = resnet_layer
    y = cyconv.conv2d(x, w, padding=1, algorithm=algorithm)
    assert y.dtype == np.float32 and y.shape == expected.shape
    err = float(np.max(np.abs(y - expected)) / np.max(np.abs(expected)))
    assert err <= 1e-5, f"{algorithm}: relative error {err:.2e} against float64"


# -- workspace cap and threads: same numbers ------------------------------------------------

#: big enough that every direction runs on several threads (see test_cases_are_threaded)
DETERMINISM_CASES = [
    ConvCase(2, 4, 8, 16, 1, (16, 15), (3, 3), stride=1, padding=1, bias=True),
    ConvCase(2, 4, 16, 24, 2, (33, 26), (3, 2), stride=2, padding="same", dilation=(1, 2)),
    ConvCase(2, 12, 16, 16, 16, (24, 23), (3, 3), padding=1),
    ConvCase(1, 6, 12, 16, 1, (401,), (5,), stride=2, padding=((3, 1),), bias=True),
    ConvCase(3, 3, 4, 8, 1, (7, 8, 9), (3, 3, 2), padding=1, dilation=(1, 1, 2)),
]


def test_cases_are_threaded():
    """The thread and workspace tests only mean something above the serial cut-off."""
    from cyconv._params import conv_params
    serial = getattr(cyconv._cpu, "SERIAL_FLOPS", 10**6)
    for case in DETERMINISM_CASES:
        p = conv_params(case.op, case.nd, case.x_shape, case.w_shape, **case.kwargs)
        assert p.flops >= 1.5 * serial, (case.id, p.flops)


def _all_directions(case, algorithm, kernels=None):
    """Every direction's result; ``kernels`` (a dict) gets the kernel each one ran."""
    x, w, b = case.numpy_arrays(np.float32)
    gy = case.grad_output(np.float32)
    nd = case.nd
    kw = dict(case.kwargs, algorithm=algorithm)
    out = {}
    calls = {
        "forward": lambda: run(case, x, w, b, algorithm),
        "input": lambda: getattr(cyconv.grad, f"conv{nd}d_input")(case.x_shape, w, gy, **kw),
        "weight": lambda: getattr(cyconv.grad, f"conv{nd}d_weight")(x, case.w_shape, gy, **kw),
        "transpose": lambda: getattr(cyconv, f"conv_transpose{nd}d")(
            gy, w, None, stride=case.stride, padding=_int_pad(case), groups=case.groups,
            dilation=case.dilation, algorithm=algorithm) if _int_pad(case) is not None
        else None,
    }
    for key, call in calls.items():
        trace = []
        _cpu.trace = trace
        try:
            out[key] = call()
        finally:
            _cpu.trace = None
        if kernels is not None:
            kernels[key] = trace
    return out


def _int_pad(case):
    """The case's padding as a transposed conv can take it (symmetric ints), or None."""
    if all(pb == pa for pb, pa in case.pairs):
        out = reference.conv_transpose_out_size(case.out_size, case.kernel_size, case.stride_t,
                                                case.pairs, case.dilation_t, (0,) * case.nd)
        if out == tuple(case.in_size):
            return tuple(pb for pb, _ in case.pairs)
    return None


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=[c.id for c in DETERMINISM_CASES])
def test_tiny_workspace(case, algorithm, workspace_limit):
    """A 1 KiB workspace cap forces the smallest chunks.

    A direct kernel's results do not depend on the cap at all (bit-identical); a kernel
    whose blocks do not fit (``depthwise``, ``outer``) hands over to the per-channel
    one, which sums in another order.  The im2col path calls the BLAS with other GEMM
    shapes, and OpenBLAS picks other kernels (its small-matrix kernels, gemv for one
    column) that round differently.  Those agree to rounding.
    """
    ran, ran_capped = {}, {}
    default = _all_directions(case, algorithm, ran)
    workspace_limit(1024)
    capped = _all_directions(case, algorithm, ran_capped)
    failures = []
    for key, y in default.items():
        if y is not None:
            try:
                if algorithm == "direct" and ran[key] == ran_capped[key]:
                    assert_identical(capped[key], y, key)
                else:
                    assert_close(capped[key], y, y.dtype, kind="parity", what=key)
            except AssertionError as exc:
                failures.append(str(exc))
    if failures:
        raise AssertionError(f"{case.id} {algorithm} with a 1 KiB cap: " + "; ".join(failures))


@pytest.mark.parametrize("n", [2, 3, 7])
@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=[c.id for c in DETERMINISM_CASES])
def test_thread_count_does_not_change_results(case, algorithm, n, num_threads):
    num_threads(1)
    one = _all_directions(case, algorithm)
    num_threads(n)
    many = _all_directions(case, algorithm)
    for key, y in one.items():
        if y is not None:
            assert_close(many[key], to_numpy(y).astype(np.float64), np.float32, kind="parity",
                         what=f"{key} {case.id} {algorithm}: 1 vs {n} threads")


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
def test_forward_bit_identical_across_thread_counts(algorithm, num_threads):
    """Forward work splits over samples/channels, never inside one sum."""
    case = DETERMINISM_CASES[0]
    x, w, b = case.numpy_arrays(np.float32)
    num_threads(1)
    y1 = run(case, x, w, b, algorithm)
    for n in (2, 3):
        num_threads(n)
        assert_identical(run(case, x, w, b, algorithm), y1, f"{algorithm}: 1 vs {n} threads")


def test_layouts_are_really_non_contiguous():
    """The layout helper must produce what the grid claims to test."""
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for kind in ("strided", "channels_last", "fortran", "negative"):
        v = with_layout(a, kind)
        assert not v.flags.c_contiguous, kind
        np.testing.assert_array_equal(v, a)
    assert (np.array(with_layout(a, "negative").strides) < 0).all()
