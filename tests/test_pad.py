"""``cyconv.pad`` and ``cyconv.grad.pad``: constant, reflect, replicate and circular.

The reference below is ``np.pad`` plus slicing, written independently of the package:
positive amounts pad and negative amounts crop.  Reflect, replicate and constant pad
first and crop after; circular crops first and wraps the cropped range (PyTorch's
order).  The gradient reference tracks where every output element came from by padding
an array of flat indices.
"""
from __future__ import annotations

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, assert_close, assert_identical, to_numpy, with_layout

MODES = ["constant", "reflect", "replicate", "circular"]
_NP_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
            "circular": "wrap"}


def _pairs(ndim, pad):
    pairs = [(0, 0)] * ndim
    for j in range(len(pad) // 2):
        pairs[ndim - 1 - j] = (pad[2 * j], pad[2 * j + 1])
    return pairs


def _crop(a, pairs):
    return a[tuple(slice(max(0, -b), a.shape[i] - max(0, -e))
                   for i, (b, e) in enumerate(pairs))]


def ref_pad(x, pad, mode, value=0.0):
    """F.pad semantics from np.pad and slicing (any dtype, so it also maps indices)."""
    x = np.asarray(x)
    pairs = _pairs(x.ndim, pad)
    grow = [(max(0, b), max(0, e)) for b, e in pairs]
    kw = {"constant_values": value} if mode == "constant" else {}
    if mode == "circular":
        return np.pad(_crop(x, pairs), grow, mode="wrap")
    return _crop(np.pad(x, grow, mode=_NP_MODE[mode], **kw), pairs)


def ref_pad_grad(gy, in_shape, pad, mode):
    """Each input element receives the gradients of the outputs that copy it."""
    size = int(np.prod(in_shape))
    src = ref_pad(np.arange(size, dtype=np.int64).reshape(in_shape), pad, mode, value=-1)
    keep = src >= 0
    gx = np.bincount(src[keep], weights=np.asarray(gy, np.float64)[keep], minlength=size)
    return gx.reshape(in_shape)


def valid(shape, pad, mode):
    """The rules cyconv documents (and PyTorch's where PyTorch is defined)."""
    for n, (b, e) in zip(shape, _pairs(len(shape), pad)):
        out = n + b + e
        if (b, e) == (0, 0):
            continue
        if mode == "constant":
            if out < 0:
                return False
            continue
        if n < 1 or out < 1:
            return False
        if mode == "reflect" and (b >= n or e >= n):
            return False
        if mode == "circular":
            kept = n - max(0, -b) - max(0, -e)
            if kept < 1 or b > kept or e > kept:
                return False
    return True


SHAPES = [(6,), (2, 5), (2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5), (3, 2, 3, 3, 3)]


def pad_grid(seed=0):
    """Seeded pads for every mode and shape: 1 to min(ndim, 3) pairs (up to 5 pairs for
    constant mode), amounts in [-3, 4]; only cases ``valid`` accepts."""
    rng = np.random.default_rng(seed)
    cases = []
    for mode in MODES:
        for shape in SHAPES:
            n_found = 0
            while n_found < 4:
                max_pairs = len(shape) if mode == "constant" else min(3, len(shape))
                k = int(rng.integers(1, max_pairs + 1))
                pad = tuple(int(v) for v in rng.integers(-3, 5, 2 * k))
                if valid(shape, pad, mode) and (mode, shape, pad) not in cases:
                    cases.append((mode, shape, pad))
                    n_found += 1
    return cases + [
        ("reflect", (1, 1, 4), (3, 3)), ("circular", (1, 1, 4), (4, 4)),
        ("circular", (1, 1, 4), (-1, 2)), ("circular", (1, 1, 4), (2, -1)),
        ("reflect", (1, 1, 4), (-4, 2)), ("replicate", (1, 1, 4), (-4, 2)),
        ("constant", (2, 3), (-3, 0)), ("constant", (2, 3), (0, -3)),
        ("constant", (2, 0, 3), (1, 1, 2, 2)),                 # an empty dim, padded
        ("constant", (0, 3, 4), (1, 1)),                       # an empty batch
        ("replicate", (0, 3, 4), (2, 1, 1, 0)),
        ("reflect", (2, 3, 4, 5), (1, 2, 3, 0, 1, 1)),
        ("constant", (2, 3, 4, 5), (1, 1, 0, 0, 0, 0, 2, 1)),  # only the outer dims
        ("replicate", (2, 3, 4, 5), (1, 1, 1, 1, 1, 1, 1, 1)),  # four dims, two passes
        ("constant", (5, 4), (0, 0, 0, 0)),                    # nothing to do
    ]


CASES = pad_grid()
ids = [f"{m}-{'x'.join(map(str, s))}-{','.join(map(str, p))}" for m, s, p in CASES]
LAYOUT_OF = ["contiguous", "strided", "negative", "fortran"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_pad_matches_reference(case, dtype, xp):
    mode, shape, pad = case
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    value = -2.5 if mode == "constant" else 0.0
    layout = LAYOUT_OF[CASES.index(case) % len(LAYOUT_OF)]
    y = cyconv.pad(with_layout(x, layout, xp), pad, mode=mode, value=value)
    ref = ref_pad(x.astype(np.float64), pad, mode, value)
    assert y.dtype == dtype and y.shape == ref.shape
    np.testing.assert_array_equal(to_numpy(y), ref.astype(dtype))     # a pad is a copy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_pad_grad_matches_reference(case, dtype, xp):
    mode, shape, pad = case
    out_shape = ref_pad(np.zeros(shape), pad, mode).shape
    gy = np.random.default_rng(1).uniform(-1, 1, out_shape).astype(dtype)
    layout = LAYOUT_OF[(CASES.index(case) + 1) % len(LAYOUT_OF)]
    gx = cyconv.grad.pad(with_layout(gy, layout, xp), shape, pad, mode=mode)
    assert gx.dtype == dtype and gx.shape == shape
    assert_close(gx, ref_pad_grad(gy, shape, pad, mode), dtype)


def _torch_supports(mode, shape, pad):
    if mode == "constant":
        return True
    k = len(pad) // 2       # PyTorch: (C, *k dims) or (N, C, *k dims), C and dims non-zero
    return k <= 3 and len(shape) in (k + 1, k + 2) and all(shape[len(shape) - k - 1:])


TORCH_CASES = [c for c in CASES if _torch_supports(*c)]


@pytest.mark.parametrize("case", TORCH_CASES,
                         ids=[ids[CASES.index(c)] for c in TORCH_CASES])
def test_pad_matches_torch(case):
    torch = pytest.importorskip("torch")
    mode, shape, pad = case
    x = np.random.default_rng(0).uniform(-1, 1, shape)
    xt = torch.tensor(x, requires_grad=True)
    kw = {"value": 1.5} if mode == "constant" else {}
    yt = torch.nn.functional.pad(xt, pad, mode=mode, **kw)
    y = cyconv.pad(x, pad, mode=mode, **kw)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    if y.size and x.size:
        gy = np.random.default_rng(1).uniform(-1, 1, y.shape)
        yt.backward(torch.tensor(gy))
        assert_close(cyconv.grad.pad(gy, shape, pad, mode=mode), xt.grad.numpy(),
                     np.float64)


@pytest.mark.parametrize("case", CASES[::4], ids=ids[::4])
def test_pad_grad_finite_differences(case):
    mode, shape, pad = case
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, shape)
    gy = rng.uniform(-1, 1, cyconv.pad(x, pad, mode=mode).shape)
    v = rng.uniform(-1, 1, shape)
    h = 1e-3
    numeric = (np.sum(cyconv.pad(x + h * v, pad, mode=mode) * gy)
               - np.sum(cyconv.pad(x - h * v, pad, mode=mode) * gy)) / (2 * h)
    gx = cyconv.grad.pad(gy, shape, pad, mode=mode)
    assert abs(np.sum(gx * v) - numeric) <= 1e-9 * max(1.0, abs(numeric))


def test_pad_examples():
    x = np.arange(4.0).reshape(1, 1, 4)
    np.testing.assert_array_equal(cyconv.pad(x, (2, 1), mode="reflect")[0, 0],
                                  [2, 1, 0, 1, 2, 3, 2])
    np.testing.assert_array_equal(cyconv.pad(x, (2, 1), mode="replicate")[0, 0],
                                  [0, 0, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(cyconv.pad(x, (2, 1), mode="circular")[0, 0],
                                  [2, 3, 0, 1, 2, 3, 0])
    np.testing.assert_array_equal(cyconv.pad(x, (-1, 2), value=7)[0, 0], [1, 2, 3, 7, 7])
    np.testing.assert_array_equal(cyconv.pad(x, (-1, 2), mode="circular")[0, 0],
                                  [1, 2, 3, 1, 2])
    np.testing.assert_array_equal(cyconv.pad(x, (1, 1), value=np.nan)[0, 0],
                                  [np.nan, 0, 1, 2, 3, np.nan])
    # reflect: the edge element's gradient is not doubled, its neighbour's is
    g = cyconv.grad.pad(np.ones((1, 1, 7)), (1, 1, 4), (2, 1), mode="reflect")
    np.testing.assert_array_equal(g[0, 0], [1, 2, 3, 1])


def test_pad_zero_dim_input_with_empty_pad():
    y = cyconv.pad(np.array(3.0), ())
    assert y.shape == () and y == 3.0


def test_pad_returns_a_new_array_and_leaves_input_alone():
    x = np.arange(12.0).reshape(3, 4)
    x.flags.writeable = False
    y = cyconv.pad(x, (0, 0))
    assert y is not x and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x)
    for mode in MODES:
        cyconv.pad(x, (1, 2, 1, 1), mode=mode)
        cyconv.grad.pad(cyconv.pad(x, (1, 2, 1, 1), mode=mode), x.shape, (1, 2, 1, 1),
                        mode=mode)
    np.testing.assert_array_equal(x, np.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_thread_count_does_not_change_results(mode, n, num_threads):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 100, 100))   # ~1.3e6: parallel
    pad = (3, 2, 1, 3)
    num_threads(1)
    y1 = cyconv.pad(x, pad, mode=mode)
    g1 = cyconv.grad.pad(y1, x.shape, pad, mode=mode)
    num_threads(n)
    assert_identical(cyconv.pad(x, pad, mode=mode), y1)
    assert_identical(cyconv.grad.pad(y1, x.shape, pad, mode=mode), g1)


@pytest.mark.parametrize("mode", MODES)
def test_float16_on_cpu_is_a_type_error(mode):
    with pytest.raises(TypeError, match="pad: input is float16; float16 is supported for "
                                        "CuPy \\(GPU\\) arrays only"):
        cyconv.pad(np.zeros((1, 4), np.float16), (1, 1), mode=mode)
    with pytest.raises(TypeError, match="pad: grad_output is float16"):
        cyconv.grad.pad(np.zeros((1, 6), np.float16), (1, 4), (1, 1), mode=mode)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.complex128])
def test_other_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match=f"pad: input has unsupported dtype "
                                        f"{np.dtype(dtype).name}"):
        cyconv.pad(np.zeros((1, 4), dtype), (1, 1))


X = np.zeros((1, 1, 4))
ERRORS = [
    (lambda: cyconv.pad(X, (4, 0), mode="reflect"),
     "pad: reflect padding (4, 0) on dim 2 must be < input size 4"),
    (lambda: cyconv.pad(np.zeros((2, 3, 5)), (0, 0, 1, 3), mode="reflect"),
     "pad: reflect padding (1, 3) on dim 1 must be < input size 3"),
    (lambda: cyconv.pad(X, (5, 0), mode="circular"),
     "pad: circular padding (5, 0) on dim 2 must be <= input size 4"),
    (lambda: cyconv.pad(X, (3, -2), mode="circular"),
     "pad: circular padding (3, -2) on dim 2 must be <= the cropped input size 2"),
    (lambda: cyconv.pad(X, (-4, 2), mode="circular"),
     "pad: circular padding (-4, 2) on dim 2 crops away all of input size 4"),
    (lambda: cyconv.pad(X, (0, -4), mode="replicate"),
     "pad: replicate padding (0, -4) on dim 2 leaves no element of input (1, 1, 4)"),
    (lambda: cyconv.pad(np.zeros((1, 0)), (1, 1), mode="reflect"),
     "pad: reflect padding (1, 1) on dim 1 needs a non-empty input dim, got input (1, 0)"),
    (lambda: cyconv.pad(X, (-3, -2)),
     "pad: padding (-3, -2) on dim 2 gives a negative size -1 for input (1, 1, 4)"),
    (lambda: cyconv.pad(X, (1, 1), mode="zeros"),
     "pad: unknown mode 'zeros'; expected one of 'constant', 'reflect', 'replicate', "
     "'circular'"),
    (lambda: cyconv.pad(X, (1, 2, 3)),
     "pad: pad must be a tuple of an even number of ints (before, after for the last dim "
     "first), got (1, 2, 3)"),
    (lambda: cyconv.pad(X, (1.0, 1)),
     "pad: pad must be a tuple of an even number of ints (before, after for the last dim "
     "first), got (1.0, 1)"),
    (lambda: cyconv.pad(X, 1),
     "pad: pad must be a tuple of an even number of ints (before, after for the last dim "
     "first), got 1"),
    (lambda: cyconv.pad(np.zeros(4), (1, 1, 1, 1)),
     "pad: pad (1, 1, 1, 1) has 2 (before, after) pairs, but input (4,) has only 1 dims"),
    (lambda: cyconv.pad(X, (1, 1), mode="reflect", value=1.0),
     "pad: mode 'reflect' takes no value argument, got value=1.0"),
    (lambda: cyconv.pad(X, (1, 1), value="a"),
     "pad: value must be a number, got 'a'"),
    (lambda: cyconv.grad.pad(np.zeros((1, 1, 5)), (1, 1, 4), (1, 1)),
     "pad: grad_output has shape (1, 1, 5), expected (1, 1, 6) for input_size (1, 1, 4), "
     "pad (1, 1) and mode 'constant'"),
    (lambda: cyconv.grad.pad(np.zeros((1, 1, 8)), (1, 1, 4), (4, 0), mode="reflect"),
     "pad: reflect padding (4, 0) on dim 2 must be < input size 4"),
    (lambda: cyconv.grad.pad(np.zeros((1, 1, 6)), (1, 1, -4), (1, 1)),
     "pad: input_size must be a tuple of non-negative ints, got (1, 1, -4)"),
]


@pytest.mark.parametrize("call, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_error_messages(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
