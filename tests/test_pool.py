"""Max, average and adaptive average pooling, forward and gradients.

Every op is checked against a plain float64 reference written below (loops over output
positions, PyTorch's rules spelled out), against PyTorch when it is importable, and its
gradients also by finite differences in float64.  Then the value tests of
``shared/research/user-needs.md`` (C6 ceil-mode sizes, C7 ceil-mode divisors, C8 NaN and
-inf), batch forms, layouts, thread counts and one test per error message.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, assert_close, assert_identical, to_numpy, with_layout


# -- float64 reference ---------------------------------------------------------------------

def ref_out_size(in_size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape: floor (or ceil) of the window count, and in ceil
    mode the last window is dropped when it would start in the right padding."""
    out = []
    for n, kk, ss, pp, dd in zip(in_size, k, s, p, d):
        span = n + 2 * pp - dd * (kk - 1) - 1
        o = -(-span // ss) + 1 if ceil_mode else span // ss + 1
        if ceil_mode and (o - 1) * ss >= n + pp:
            o -= 1
        out.append(o)
    return tuple(out)


def _cells(o, in_size, k, s, p, d):
    """Flat in-plane indices of the in-bounds taps of window ``o``, in PyTorch's scan
    order (first spatial dim outermost)."""
    taps = [[oi * si - pi + t * di for t in range(ki) if 0 <= oi * si - pi + t * di < ni]
            for oi, ni, ki, si, pi, di in zip(o, in_size, k, s, p, d)]
    return [int(np.ravel_multi_index(c, in_size)) for c in itertools.product(*taps)]


def ref_max_pool(x, k, s, p, d, ceil_mode):
    """(y, indices) for a batched float64 ``x``.  A window is scanned in order and an
    element replaces the running maximum when it is greater or NaN (PyTorch's CPU
    kernel); the running index starts at the first in-bounds tap.  A window with no
    in-bounds tap gets -inf and index -1 (cyconv only promises an in-bounds index)."""
    x = np.asarray(x, np.float64)
    N, C, in_size = x.shape[0], x.shape[1], x.shape[2:]
    out = ref_out_size(in_size, k, s, p, d, ceil_mode)
    flat = x.reshape(N, C, int(np.prod(in_size)))
    y = np.empty((N, C) + out)
    idx = np.empty((N, C) + out, np.int64)
    for o in np.ndindex(*out):
        at = (slice(None), slice(None)) + o
        cells = _cells(o, in_size, k, s, p, d)
        best = np.full((N, C), -np.inf)
        arg = np.full((N, C), cells[0] if cells else -1)
        for cell in cells:
            v = flat[:, :, cell]
            take = (v > best) | np.isnan(v)
            best = np.where(take, v, best)
            arg = np.where(take, cell, arg)
        y[at], idx[at] = best, arg
    return y, idx


def ref_max_pool_grad(gy, idx, in_size):
    N, C = gy.shape[:2]
    gx = np.zeros((N, C, int(np.prod(in_size))))
    for n, c in np.ndindex(N, C):
        np.add.at(gx[n, c], idx[n, c].ravel(), np.asarray(gy[n, c], np.float64).ravel())
    return gx.reshape((N, C) + tuple(in_size))


def _avg_windows(in_size, out, k, s, p, count_include_pad, divisor_override):
    """Per output position: (cells, divisor) by PyTorch's AvgPoolKernel: the window
    [o*s - p, o*s - p + k) clipped to [-p, in + p) gives the padded size; clipped to
    [0, in) the element count."""
    for o in np.ndindex(*out):
        size = count = 1
        for oi, ni, ki, si, pi in zip(o, in_size, k, s, p):
            start = oi * si - pi
            end = min(start + ki, ni + pi)
            size *= end - start
            count *= min(end, ni) - max(start, 0)
        div = divisor_override or (size if count_include_pad else count)
        yield o, _cells(o, in_size, k, s, p, (1,) * len(k)), div


def ref_avg_pool(x, k, s, p, ceil_mode, count_include_pad, divisor_override):
    x = np.asarray(x, np.float64)
    N, C, in_size = x.shape[0], x.shape[1], x.shape[2:]
    out = ref_out_size(in_size, k, s, p, (1,) * len(k), ceil_mode)
    flat = x.reshape(N, C, int(np.prod(in_size)))
    y = np.empty((N, C) + out)
    for o, cells, div in _avg_windows(in_size, out, k, s, p, count_include_pad,
                                      divisor_override):
        y[(slice(None), slice(None)) + o] = flat[:, :, cells].sum(-1) / div
    return y


def ref_avg_pool_grad(gy, in_size, k, s, p, count_include_pad, divisor_override):
    gy = np.asarray(gy, np.float64)
    N, C, out = gy.shape[0], gy.shape[1], gy.shape[2:]
    gx = np.zeros((N, C, int(np.prod(in_size))))
    for o, cells, div in _avg_windows(in_size, out, k, s, p, count_include_pad,
                                      divisor_override):
        gx[:, :, cells] += gy[(slice(None), slice(None)) + o][:, :, None] / div
    return gx.reshape((N, C) + tuple(in_size))


def _adaptive_cells(in_size, out):
    for o in np.ndindex(*out):
        ranges = [range(oi * ni // mi, -(-(oi + 1) * ni // mi))
                  for oi, ni, mi in zip(o, in_size, out)]
        yield o, [int(np.ravel_multi_index(c, in_size)) for c in itertools.product(*ranges)]


def ref_adaptive_avg_pool(x, out):
    x = np.asarray(x, np.float64)
    N, C, in_size = x.shape[0], x.shape[1], x.shape[2:]
    flat = x.reshape(N, C, int(np.prod(in_size)))
    y = np.empty((N, C) + tuple(out))
    for o, cells in _adaptive_cells(in_size, out):
        y[(slice(None), slice(None)) + o] = flat[:, :, cells].mean(-1)
    return y


def ref_adaptive_avg_pool_grad(gy, in_size):
    gy = np.asarray(gy, np.float64)
    N, C, out = gy.shape[0], gy.shape[1], gy.shape[2:]
    gx = np.zeros((N, C, int(np.prod(in_size))))
    for o, cells in _adaptive_cells(in_size, out):
        gx[:, :, cells] += gy[(slice(None), slice(None)) + o][:, :, None] / len(cells)
    return gx.reshape((N, C) + tuple(in_size))


def test_reference_out_size_matches_user_needs_c6():
    assert ref_out_size((6, 7), (1, 1), (2, 2), (0, 0), (1, 1), True) == (3, 4)
    assert ref_out_size((5,), (2,), (2,), (1,), (1,), True) == (3,)


# -- cases ------------------------------------------------------------------------------------

IN_SIZES = {1: (11,), 2: (7, 9), 3: (5, 6, 7)}


def _t(v, nd):
    return v if isinstance(v, tuple) else (v,) * nd


@dataclasses.dataclass(frozen=True)
class PoolCase:
    """One pooling, arguments as a user passes them; ``N=None`` is unbatched."""
    nd: int
    N: object
    kernel_size: object
    stride: object
    padding: object
    dilation: object = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: object = None
    layout: str = "contiguous"
    C: int = 3

    @property
    def batched(self):
        return self.N is not None

    @property
    def x_shape(self):
        return ((self.N,) if self.batched else ()) + (self.C,) + IN_SIZES[self.nd]

    @property
    def geom(self):
        """(k, s, p, d) as nd-tuples."""
        k = _t(self.kernel_size, self.nd)
        s = k if self.stride is None else _t(self.stride, self.nd)
        return k, s, _t(self.padding, self.nd), _t(self.dilation, self.nd)

    @property
    def out_size(self):
        return ref_out_size(IN_SIZES[self.nd], *self.geom, self.ceil_mode)

    @property
    def max_kwargs(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    @property
    def avg_kwargs(self):
        kw = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                  ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)
        if self.nd > 1:
            kw["divisor_override"] = self.divisor_override
        return kw

    @property
    def id(self):
        n = "unb" if not self.batched else f"N{self.N}"
        s = str((self.kernel_size, self.stride, self.padding, self.dilation)).replace(" ", "")
        extra = "".join([
            "-ceil" if self.ceil_mode else "", "" if self.count_include_pad else "-nopad",
            f"-div{self.divisor_override}" if self.divisor_override else "",
            "" if self.layout == "contiguous" else f"-{self.layout}"])
        return f"{self.nd}d-{n}-{s}{extra}"

    def valid(self):
        k, s, p, d = self.geom
        return all(pp <= kk // 2 for pp, kk in zip(p, k)) and all(
            o >= 1 for o in self.out_size)

    def x(self, dtype, seed=0, kind="uniform"):
        rng = np.random.default_rng(seed)
        if kind == "distinct":       # no ties: a permutation of distinct values
            a = rng.permutation(int(np.prod(self.x_shape))).reshape(self.x_shape) / 7.0 - 3
        elif kind == "ties":         # many ties: small integers
            a = rng.integers(-2, 3, self.x_shape).astype(np.float64)
        else:
            a = rng.uniform(-1, 1, self.x_shape)
        return a.astype(dtype)

    def batch(self, a):
        a = to_numpy(a)
        return a if self.batched else a[None]


BATCH_FORMS = [(2, "contiguous"), (None, "contiguous"), (0, "contiguous"), (2, "strided"),
               (2, "channels_last"), (1, "negative"), (2, "fortran")]


def pool_grid(kind, seed):
    """A seeded sample of pooling cases: per-dim kernel, stride (None included),
    padding, dilation (max only), ceil_mode, count_include_pad and divisor_override
    (avg only), batch form and layout."""
    rng = np.random.default_rng(seed)
    cases = []
    pick = lambda seq: seq[rng.integers(len(seq))]  # noqa: E731
    for nd, count in ((1, 22), (2, 26), (3, 16)):
        while sum(c.nd == nd for c in cases) < count:
            per_dim = lambda seq: (pick(seq) if rng.integers(2) else  # noqa: E731
                                   tuple(pick(seq) for _ in range(nd)))
            N, layout = pick(BATCH_FORMS)
            case = PoolCase(
                nd=nd, N=N, kernel_size=per_dim([1, 2, 3, 4]),
                stride=None if rng.integers(4) == 0 else per_dim([1, 2, 3]),
                padding=per_dim([0, 1, 2]),
                dilation=per_dim([1, 2, 3]) if kind == "max" else 1,
                ceil_mode=bool(rng.integers(2)),
                count_include_pad=bool(rng.integers(2)),
                divisor_override=(pick([None, None, 3, -2]) if kind == "avg" and nd > 1
                                  else None),
                layout=layout)
            if case.valid() and case not in cases:
                cases.append(case)
    return cases


MAX_CASES = pool_grid("max", 1) + [
    PoolCase(2, 2, 3, 2, 1, ceil_mode=True),              # ResNet stem
    PoolCase(2, 2, 2, None, 0),                           # the usual 2x2
    PoolCase(1, 2, 2, 1, 1, dilation=5),                  # windows with no in-bounds tap
    PoolCase(3, None, (1, 2, 3), (1, 2, 2), (0, 1, 1), (1, 1, 2), ceil_mode=True),
]
AVG_CASES = pool_grid("avg", 2) + [
    PoolCase(2, 1, 2, 3, 0, ceil_mode=True),              # C7
    PoolCase(2, 2, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    PoolCase(3, 2, 3, 2, 1, ceil_mode=True, divisor_override=5),
    PoolCase(1, 2, 4, 3, 2, ceil_mode=True),
]
ids = lambda cases: [c.id for c in cases]  # noqa: E731


# -- max pooling -----------------------------------------------------------------------------

def _check_indices(idx, ref_idx, y, plane):
    """Indices equal the reference; where the reference window is empty (-1), the
    value is -inf and the index stays inside the plane."""
    empty = ref_idx < 0
    np.testing.assert_array_equal(idx[~empty], ref_idx[~empty])
    assert np.all(y[empty] == -np.inf)
    assert np.all((idx >= 0) & (idx < plane))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=ids(MAX_CASES))
def test_max_pool_matches_reference(case, dtype, xp):
    x = case.x(dtype, kind="ties" if case.N == 1 else "uniform")
    y, idx = getattr(cyconv, f"max_pool{case.nd}d")(with_layout(x, case.layout, xp),
                                                    **case.max_kwargs, return_indices=True)
    ref_y, ref_idx = ref_max_pool(case.batch(x), *case.geom, case.ceil_mode)
    assert y.shape == idx.shape == (case.x_shape[:-case.nd] + case.out_size)
    assert idx.dtype == np.int64
    y, idx = case.batch(y), case.batch(idx)
    np.testing.assert_array_equal(y, ref_y.astype(dtype))       # a max is exact
    _check_indices(idx, ref_idx, y, int(np.prod(IN_SIZES[case.nd])))
    y_only = getattr(cyconv, f"max_pool{case.nd}d")(with_layout(x, case.layout, xp),
                                                    **case.max_kwargs)
    np.testing.assert_array_equal(case.batch(y_only), y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=ids(MAX_CASES))
def test_max_pool_grad_matches_reference(case, dtype, xp):
    x = case.x(dtype, kind="distinct")
    _, idx = getattr(cyconv, f"max_pool{case.nd}d")(xp.asarray(x), **case.max_kwargs,
                                                    return_indices=True)
    gy = np.random.default_rng(3).uniform(-1, 1, idx.shape).astype(dtype)
    gx = getattr(cyconv.grad, f"max_pool{case.nd}d")(with_layout(gy, case.layout, xp), idx,
                                                     case.x_shape)
    assert gx.shape == case.x_shape
    ref = ref_max_pool_grad(case.batch(gy), case.batch(idx), IN_SIZES[case.nd])
    assert_close(case.batch(gx), ref, dtype, what=case.id)


TORCH_MAX_CASES = [c for c in MAX_CASES if c.N != 0]


@pytest.mark.parametrize("case", TORCH_MAX_CASES, ids=ids(TORCH_MAX_CASES))
def test_max_pool_matches_torch(case):
    torch = pytest.importorskip("torch")
    x = case.batch(case.x(np.float64, kind="ties"))
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    yt, it = getattr(F, f"max_pool{case.nd}d")(xt, **case.max_kwargs, return_indices=True)
    y, idx = getattr(cyconv, f"max_pool{case.nd}d")(x, **case.max_kwargs,
                                                    return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    plane = int(np.prod(IN_SIZES[case.nd]))
    _check_indices(idx, np.where(np.isneginf(y), -1, it.numpy()), y, plane)
    if np.isneginf(y).any():       # PyTorch's index of an empty window is out of bounds
        return
    gy = np.random.default_rng(1).uniform(-1, 1, y.shape)
    yt.backward(torch.tensor(gy))
    gx = getattr(cyconv.grad, f"max_pool{case.nd}d")(gy, idx, x.shape)
    assert_close(gx, xt.grad.numpy(), np.float64, what=case.id)


FD_MAX_CASES = [c for c in MAX_CASES if c.N != 0][::3]


@pytest.mark.parametrize("case", FD_MAX_CASES, ids=ids(FD_MAX_CASES))
def test_max_pool_grad_finite_differences(case):
    """Distinct inputs spaced 1/7 apart and a step of 1e-6: no maximum moves."""
    x = case.x(np.float64, kind="distinct")
    rng = np.random.default_rng(5)
    fn = getattr(cyconv, f"max_pool{case.nd}d")
    y, idx = fn(x, **case.max_kwargs, return_indices=True)
    finite = np.isfinite(y)
    gy = np.where(finite, rng.uniform(-1, 1, y.shape), 0)
    v = rng.uniform(-1, 1, x.shape)
    h = 1e-6
    f = lambda a: np.sum(np.where(finite, fn(a, **case.max_kwargs), 0) * gy)  # noqa: E731
    numeric = (f(x + h * v) - f(x - h * v)) / (2 * h)
    gx = getattr(cyconv.grad, f"max_pool{case.nd}d")(gy, idx, x.shape)
    assert abs(np.sum(gx * v) - numeric) <= 1e-7 * max(1.0, abs(numeric))


# -- average pooling --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=ids(AVG_CASES))
def test_avg_pool_matches_reference(case, dtype, xp):
    x = case.x(dtype)
    y = getattr(cyconv, f"avg_pool{case.nd}d")(with_layout(x, case.layout, xp),
                                               **case.avg_kwargs)
    k, s, p, _ = case.geom
    ref = ref_avg_pool(case.batch(x), k, s, p, case.ceil_mode, case.count_include_pad,
                       case.divisor_override)
    assert y.shape == case.x_shape[:-case.nd] + case.out_size
    assert_close(case.batch(y), ref, dtype, what=case.id)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=ids(AVG_CASES))
def test_avg_pool_grad_matches_reference(case, dtype, xp):
    out_shape = case.x_shape[:-case.nd] + case.out_size
    gy = np.random.default_rng(4).uniform(-1, 1, out_shape).astype(dtype)
    gx = getattr(cyconv.grad, f"avg_pool{case.nd}d")(with_layout(gy, case.layout, xp),
                                                     case.x_shape, **case.avg_kwargs)
    k, s, p, _ = case.geom
    ref = ref_avg_pool_grad(case.batch(gy), IN_SIZES[case.nd], k, s, p,
                            case.count_include_pad, case.divisor_override)
    assert gx.shape == case.x_shape
    assert_close(case.batch(gx), ref, dtype, what=case.id)


TORCH_AVG_CASES = [c for c in AVG_CASES if c.N != 0]


@pytest.mark.parametrize("case", TORCH_AVG_CASES, ids=ids(TORCH_AVG_CASES))
def test_avg_pool_matches_torch(case):
    torch = pytest.importorskip("torch")
    x = case.batch(case.x(np.float64))
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, f"avg_pool{case.nd}d")(xt, **case.avg_kwargs)
    y = getattr(cyconv, f"avg_pool{case.nd}d")(x, **case.avg_kwargs)
    assert_close(y, yt.detach().numpy(), np.float64, what=case.id)
    gy = np.random.default_rng(1).uniform(-1, 1, y.shape)
    yt.backward(torch.tensor(gy))
    gx = getattr(cyconv.grad, f"avg_pool{case.nd}d")(gy, x.shape, **case.avg_kwargs)
    assert_close(gx, xt.grad.numpy(), np.float64, what=case.id)


FD_AVG_CASES = [c for c in AVG_CASES if c.N != 0][::3]


@pytest.mark.parametrize("case", FD_AVG_CASES, ids=ids(FD_AVG_CASES))
def test_avg_pool_grad_finite_differences(case):
    x = case.x(np.float64)
    rng = np.random.default_rng(6)
    fn = getattr(cyconv, f"avg_pool{case.nd}d")
    gy = rng.uniform(-1, 1, fn(x, **case.avg_kwargs).shape)
    v = rng.uniform(-1, 1, x.shape)
    h = 1e-4
    numeric = (np.sum(fn(x + h * v, **case.avg_kwargs) * gy)
               - np.sum(fn(x - h * v, **case.avg_kwargs) * gy)) / (2 * h)
    gx = getattr(cyconv.grad, f"avg_pool{case.nd}d")(gy, x.shape, **case.avg_kwargs)
    assert abs(np.sum(gx * v) - numeric) <= 1e-8 * max(1.0, abs(numeric))


# -- adaptive average pooling -----------------------------------------------------------------

ADAPTIVE_CASES = [
    # (nd, N, in_size, output_size)
    (1, 2, (11,), 4), (1, None, (11,), (3,)), (1, 2, (5,), 7), (1, 0, (6,), 2),
    (1, 2, (6,), (None,)), (1, 2, (6,), 0), (1, 1, (13,), 1),
    (2, 2, (7, 9), (3, 4)), (2, None, (7, 9), 2), (2, 2, (5, 6), (None, 4)),
    (2, 2, (4, 4), (None, 0)), (2, 2, (3, 5), (7, 8)), (2, 1, (7, 7), 1), (2, 0, (7, 7), 3),
    (3, 2, (5, 6, 7), (2, 3, 4)), (3, None, (5, 6, 7), (None, 2, None)),
    (3, 1, (3, 4, 5), (4, 5, 6)), (3, 2, (4, 4, 4), 1),
]


def _adaptive_out(in_size, output_size):
    o = output_size if isinstance(output_size, tuple) else (output_size,) * len(in_size)
    return tuple(i if v is None else v for v, i in zip(o, in_size))


def _adaptive_id(c):
    return f"{c[0]}d-N{c[1]}-in{c[2]}-out{c[3]}".replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=[_adaptive_id(c) for c in ADAPTIVE_CASES])
def test_adaptive_avg_pool_matches_reference(case, dtype, xp):
    nd, N, in_size, output_size = case
    lead = (3,) if N is None else (N, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, lead + in_size).astype(dtype)
    out = _adaptive_out(in_size, output_size)
    batch = (lambda a: to_numpy(a)[None]) if N is None else to_numpy
    y = getattr(cyconv, f"adaptive_avg_pool{nd}d")(with_layout(x, "strided", xp), output_size)
    assert y.shape == lead + out and y.dtype == dtype
    assert_close(batch(y), ref_adaptive_avg_pool(batch(x), out), dtype)
    gy = rng.uniform(-1, 1, lead + out).astype(dtype)
    gx = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")(xp.asarray(gy), x.shape)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(batch(gx), ref_adaptive_avg_pool_grad(batch(gy), in_size), dtype)


TORCH_ADAPTIVE = [c for c in ADAPTIVE_CASES if c[1] != 0 and not (
    c[0] == 1 and isinstance(c[3], tuple) and None in c[3])]


@pytest.mark.parametrize("case", TORCH_ADAPTIVE, ids=[_adaptive_id(c) for c in TORCH_ADAPTIVE])
def test_adaptive_avg_pool_matches_torch(case):
    torch = pytest.importorskip("torch")
    nd, N, in_size, output_size = case
    x = np.random.default_rng(0).uniform(-1, 1, (N or 1, 3) + in_size)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, f"adaptive_avg_pool{nd}d")(xt, output_size)
    y = getattr(cyconv, f"adaptive_avg_pool{nd}d")(x, output_size)
    assert_close(y, yt.detach().numpy(), np.float64)
    if y.size:
        gy = np.random.default_rng(1).uniform(-1, 1, y.shape)
        yt.backward(torch.tensor(gy))
        gx = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")(gy, x.shape)
        assert_close(gx, xt.grad.numpy(), np.float64)


@pytest.mark.parametrize("case", ADAPTIVE_CASES[::2], ids=[_adaptive_id(c)
                                                            for c in ADAPTIVE_CASES[::2]])
def test_adaptive_avg_pool_grad_finite_differences(case):
    nd, N, in_size, output_size = case
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 3) + in_size)
    fn = lambda a: getattr(cyconv, f"adaptive_avg_pool{nd}d")(a, output_size)  # noqa: E731
    gy = rng.uniform(-1, 1, fn(x).shape)
    v = rng.uniform(-1, 1, x.shape)
    h = 1e-4
    numeric = (np.sum(fn(x + h * v) * gy) - np.sum(fn(x - h * v) * gy)) / (2 * h)
    gx = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")(gy, x.shape)
    assert abs(np.sum(gx * v) - numeric) <= 1e-8 * max(1.0, abs(numeric))


def test_global_average_pool_float32_is_accurate():
    """A 224 x 224 global average sums 50176 float32 values (in double inside)."""
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
    y = cyconv.adaptive_avg_pool2d(x, 1)
    expected = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


# -- value tests (user-needs C6, C7, C8) -------------------------------------------------------

def test_ceil_mode_sizes_c6():
    y = cyconv.max_pool2d(np.zeros((1, 1, 6, 7)), 1, stride=2, ceil_mode=True)
    assert y.shape == (1, 1, 3, 4)
    y = cyconv.max_pool1d(np.zeros((1, 1, 5)), 2, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 3)
    y = cyconv.avg_pool1d(np.zeros((1, 1, 5)), 2, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_ceil_mode_divisor_c7(dtype):
    x = np.arange(49, dtype=dtype).reshape(1, 1, 7, 7)
    y = cyconv.avg_pool2d(x, 2, stride=3, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], np.array(
        [[4, 7, 9.5], [25, 28, 30.5], [42.5, 45.5, 48]], dtype))
    y = cyconv.avg_pool1d(np.arange(7, dtype=dtype).reshape(1, 1, 7), 2, 3, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], np.array([0.5, 3.5, 6.0], dtype))


def test_avg_pool_divisor_override_and_count_include_pad():
    x = np.ones((1, 1, 4, 4))
    y = cyconv.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, divisor_override=-2)
    np.testing.assert_array_equal(y[0, 0], [[-2, -3, -1], [-3, -4.5, -1.5], [-1, -1.5, -0.5]])
    y = cyconv.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))
    y = cyconv.avg_pool2d(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[4 / 9, 6 / 9], [6 / 9, 1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_nan_wins_with_its_index_c8(dtype):
    x = np.array([[[[1, np.nan], [3, 2]]]], dtype)
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    x = np.array([[[1, np.nan, 2, np.nan, 0]]], dtype)      # the last NaN, as PyTorch
    y, idx = cyconv.max_pool1d(x, 5, return_indices=True)
    assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 3
    y = cyconv.max_pool1d(np.array([[[np.nan, 5, 7, 1]]], dtype), 2)
    assert np.isnan(y[0, 0, 0]) and y[0, 0, 1] == 7


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_all_minus_inf_window_c8(dtype):
    x = np.full((1, 1, 2, 2), -np.inf, dtype)
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True)
    assert y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == 0
    x = np.full((1, 1, 5, 5), -np.inf, dtype)
    y, idx = cyconv.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    assert np.all(y == -np.inf) and np.all((idx >= 0) & (idx < 25))
    # first in-bounds tap of each window, as PyTorch: rows 0, 1, 3, cols likewise
    np.testing.assert_array_equal(idx[0, 0], [[0, 1, 3], [5, 6, 8], [15, 16, 18]])
    gx = cyconv.grad.max_pool2d(np.ones(y.shape, dtype), idx, x.shape)
    assert gx.sum() == y.size


def test_max_pool_empty_window_gets_in_bounds_index():
    """Dilation 5, padding 1 on length 4: the window taps -1 and 4 are both out of
    bounds.  PyTorch returns index 4 (outside the plane); cyconv returns -inf and an
    index inside it, so the gradient cannot write out of bounds."""
    y, idx = cyconv.max_pool1d(np.arange(4.0).reshape(1, 1, 4), 2, stride=1, padding=1,
                               dilation=5, return_indices=True)
    assert y[0, 0, 0] == -np.inf and 0 <= idx[0, 0, 0] < 4


def test_max_pool_inf_and_ties():
    x = np.array([[[np.inf, np.inf, 1, 1, -np.inf, 2]]])
    y, idx = cyconv.max_pool1d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, [[[np.inf, 1, 2]]])
    np.testing.assert_array_equal(idx, [[[0, 2, 5]]])          # the first of a tie


# -- batch forms, layouts, threads, inputs ------------------------------------------------------

OPS = [("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
       ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
       ("adaptive_avg_pool2d", dict(output_size=(3, 2))),
       ("max_pool1d", dict(kernel_size=2)), ("avg_pool3d", dict(kernel_size=2, padding=1)),
       ("adaptive_avg_pool3d", dict(output_size=2)), ("max_pool3d", dict(kernel_size=2))]


def _x_for(op, n=2, dtype=np.float64):
    nd = int(op[-2])
    return np.random.default_rng(0).uniform(-1, 1, (n, 4) + IN_SIZES[nd]).astype(dtype)


@pytest.mark.parametrize("op, kw", OPS, ids=[o for o, _ in OPS])
def test_unbatched_equals_batched_first_sample(op, kw):
    x = _x_for(op)
    fn = getattr(cyconv, op)
    np.testing.assert_array_equal(fn(x[0], **kw), fn(x, **kw)[0])


@pytest.mark.parametrize("op, kw", OPS, ids=[o for o, _ in OPS])
def test_empty_batch(op, kw):
    x = _x_for(op, n=0, dtype=np.float32)
    y = getattr(cyconv, op)(x, **kw)
    full = getattr(cyconv, op)(_x_for(op, n=1, dtype=np.float32), **kw)
    assert y.shape == (0,) + full.shape[1:] and y.dtype == np.float32


def test_empty_batch_gradients():
    gx = cyconv.grad.max_pool2d(np.zeros((0, 2, 3, 3)), np.zeros((0, 2, 3, 3), np.int64),
                                (0, 2, 7, 7))
    assert gx.shape == (0, 2, 7, 7)
    gx = cyconv.grad.avg_pool1d(np.zeros((0, 2, 3), np.float32), (0, 2, 7), 2)
    assert gx.shape == (0, 2, 7) and gx.dtype == np.float32
    gx = cyconv.grad.adaptive_avg_pool3d(np.zeros((0, 1, 1, 1, 1)), (0, 1, 2, 3, 4))
    assert gx.shape == (0, 1, 2, 3, 4)


def test_adaptive_zero_output_gradient_is_zero():
    gx = cyconv.grad.adaptive_avg_pool2d(np.zeros((2, 3, 4, 0)), (2, 3, 4, 4))
    np.testing.assert_array_equal(gx, np.zeros((2, 3, 4, 4)))


@pytest.mark.parametrize("op, kw", OPS, ids=[o for o, _ in OPS])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_thread_count_does_not_change_results(op, kw, n, num_threads):
    # about 1e6 elements: enough work for cyconv._ext.threads_for to go parallel
    shape = {1: (8, 64, 2000), 2: (4, 64, 64, 64), 3: (2, 32, 16, 32, 32)}[int(op[-2])]
    x = np.random.default_rng(0).uniform(-1, 1, shape)
    assert cyconv._ext.threads_for(x.size) > 1 or cyconv.get_num_threads() == 1
    fn = getattr(cyconv, op)
    num_threads(1)
    y1 = fn(x, **kw)
    gy = np.random.default_rng(1).uniform(-1, 1, y1.shape)
    g1 = _grad_of(op, kw, x, y1, gy)
    num_threads(n)
    assert_identical(fn(x, **kw), y1, op)
    assert_identical(_grad_of(op, kw, x, y1, gy), g1, op)


def _grad_of(op, kw, x, y, gy):
    g = getattr(cyconv.grad, op)
    if op.startswith("max"):
        _, idx = getattr(cyconv, op)(x, **kw, return_indices=True)
        return g(gy, idx, x.shape)
    if op.startswith("adaptive"):
        return g(gy, x.shape)
    return g(gy, x.shape, **kw)


@pytest.mark.parametrize("layout", ["strided", "negative", "fortran", "channels_last"])
def test_inputs_not_modified_and_read_only_accepted(layout):
    x = with_layout(_x_for("max_pool2d"), layout)
    x.flags.writeable = False
    before = x.copy()
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True)
    gy = np.ones_like(y)
    gy.flags.writeable = False
    idx.flags.writeable = False
    cyconv.grad.max_pool2d(gy, idx, x.shape)
    cyconv.avg_pool2d(x, 3, padding=1)
    cyconv.grad.avg_pool2d(gy, x.shape, 2)
    cyconv.adaptive_avg_pool2d(x, 3)
    np.testing.assert_array_equal(x, before)
    assert np.all(gy == 1)


def test_large_plane_max_pool_matches_numpy():
    """A 2x2 max pool on a 64 x 112 x 112 float32 batch (the vectorised rows)."""
    x = np.random.default_rng(0).standard_normal((2, 64, 112, 112)).astype(np.float32)
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True)
    blocks = x.reshape(2, 64, 56, 2, 56, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 64, 56, 56, 4)
    np.testing.assert_array_equal(y, blocks.max(-1))
    a = blocks.argmax(-1)
    rows = np.arange(56)[:, None] * 2 + a // 2
    cols = np.arange(56)[None, :] * 2 + a % 2
    np.testing.assert_array_equal(idx, rows * 112 + cols)


# -- dtypes and errors ----------------------------------------------------------------------

ALL_POOL_CALLS = [
    lambda x: cyconv.max_pool2d(x, 2), lambda x: cyconv.avg_pool2d(x, 2),
    lambda x: cyconv.adaptive_avg_pool2d(x, 2),
    lambda x: cyconv.grad.avg_pool2d(x, x.shape, 1),
    lambda x: cyconv.grad.adaptive_avg_pool2d(x, x.shape),
    lambda x: cyconv.grad.max_pool2d(x, np.zeros(x.shape, np.int64), x.shape),
]


@pytest.mark.parametrize("call", ALL_POOL_CALLS)
def test_float16_on_cpu_is_a_type_error(call):
    with pytest.raises(TypeError, match="float16 is supported for CuPy \\(GPU\\) arrays only"):
        call(np.zeros((1, 1, 4, 4), np.float16))


@pytest.mark.parametrize("call", ALL_POOL_CALLS)
@pytest.mark.parametrize("dtype", [np.int64, np.complex64, np.bool_])
def test_other_dtypes_are_type_errors_naming_the_dtype(call, dtype):
    with pytest.raises(TypeError, match=f"unsupported dtype {np.dtype(dtype).name}"):
        call(np.zeros((1, 1, 4, 4), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_native_byte_order_gives_the_native_results(dtype):
    """A big-endian input computes what the native one does (the outputs were once
    allocated in the input's byte order and filled with native values: garbage)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 9)).astype(dtype)
    xb = x.astype(np.dtype(dtype).newbyteorder(">"))
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True)
    calls = [
        lambda a: cyconv.max_pool2d(a, 3, 2, 1),
        lambda a: cyconv.avg_pool2d(a, 2, ceil_mode=True),
        lambda a: cyconv.adaptive_avg_pool2d(a, (3, 4)),
        lambda a: cyconv.relu(a),
        lambda a: cyconv.pad(a, (1, 2, 0, 1), mode="reflect"),
        lambda a: cyconv.grad.max_pool2d(a[:, :, :4, :4], idx, x.shape),
        lambda a: cyconv.grad.avg_pool2d(a[:, :, :4, :4], x.shape, 2),
        lambda a: cyconv.grad.adaptive_avg_pool2d(a[:, :, :3, :4], x.shape),
    ]
    for i, call in enumerate(calls):
        got, want = call(xb), call(x)
        np.testing.assert_array_equal(got, want, err_msg=f"call {i}")
        assert got.dtype.isnative


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError,
                       match="max_pool2d: input must be a NumPy or CuPy array, got list"):
        cyconv.max_pool2d([[[[1.0]]]], 1)


X2 = np.zeros((2, 3, 8, 8))
ERRORS = [
    (lambda: cyconv.max_pool2d(np.zeros((8, 8)), 2),
     "max_pool2d expects input of 3-D (C, H, W) or 4-D (N, C, H, W) shape, got 2-D (8, 8)"),
    (lambda: cyconv.avg_pool1d(np.zeros((1, 2, 3, 4)), 2),
     "avg_pool1d expects input of 2-D (C, L) or 3-D (N, C, L) shape, got 4-D (1, 2, 3, 4)"),
    (lambda: cyconv.max_pool2d(np.zeros((2, 0, 8, 8)), 2),
     "max_pool2d: input (2, 0, 8, 8) has an empty channel or spatial dimension; only the "
     "batch dimension may be 0"),
    (lambda: cyconv.max_pool2d(X2, (2, 2, 2)),
     "max_pool2d: kernel_size must be an int or a tuple of 2 ints, got (2, 2, 2)"),
    (lambda: cyconv.max_pool2d(X2, 2.0),
     "max_pool2d: kernel_size must be an int or a tuple of 2 ints, got 2.0"),
    (lambda: cyconv.max_pool2d(X2, 0),
     "max_pool2d: kernel_size must be positive, got (0, 0) (input (2, 3, 8, 8))"),
    (lambda: cyconv.max_pool3d(np.zeros((1, 1, 4, 4, 4)), 2, stride=(1, 0, 1)),
     "max_pool3d: stride must be positive, got (1, 0, 1) (input (1, 1, 4, 4, 4))"),
    (lambda: cyconv.max_pool2d(X2, 2, dilation=0),
     "max_pool2d: dilation must be positive, got (0, 0) (input (2, 3, 8, 8))"),
    (lambda: cyconv.avg_pool2d(X2, 2, padding=-1),
     "avg_pool2d: padding must be non-negative, got (-1, -1) (input (2, 3, 8, 8))"),
    (lambda: cyconv.max_pool2d(X2, 3, padding=(1, 2)),
     "max_pool2d: padding (1, 2) must be at most half of kernel_size (3, 3) (padding <= "
     "kernel_size // 2 in every dim; input (2, 3, 8, 8))"),
    (lambda: cyconv.max_pool1d(np.zeros((1, 1, 4)), 3, dilation=2),
     "max_pool1d: output size (0,) is too small for input (1, 1, 4) (kernel_size (3,), "
     "stride (3,), padding (0,), dilation (2,), ceil_mode=False); per dim, out = "
     "floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1 must be >= 1"),
    (lambda: cyconv.avg_pool2d(X2, 2, divisor_override=0),
     "avg_pool2d: divisor_override must be a non-zero int or None, got 0"),
    (lambda: cyconv.adaptive_avg_pool2d(X2, (2, 2, 2)),
     "adaptive_avg_pool2d: output_size must be an int or a tuple of 2 ints or None, got "
     "(2, 2, 2)"),
    (lambda: cyconv.adaptive_avg_pool1d(np.zeros((1, 1, 4)), -1),
     "adaptive_avg_pool1d: output_size must be non-negative, got -1 (input (1, 1, 4))"),
    (lambda: cyconv.grad.max_pool2d(np.ones((1, 1, 2, 2)), np.array([[[[0, 1], [2, 16]]]]),
                                    (1, 1, 4, 4)),
     "max_pool2d: indices hold 1 value(s) outside the input plane [0, 16) of input_size "
     "(1, 1, 4, 4)"),
    (lambda: cyconv.grad.max_pool1d(np.ones((1, 1, 2)), np.array([[[-1, 0]]]), (1, 1, 4)),
     "max_pool1d: indices hold 1 value(s) outside the input plane [0, 4) of input_size "
     "(1, 1, 4)"),
    (lambda: cyconv.grad.max_pool2d(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 3), np.int64),
                                    (1, 1, 4, 4)),
     "max_pool2d: indices has shape (1, 1, 2, 3), but grad_output has shape (1, 1, 2, 2)"),
    (lambda: cyconv.grad.max_pool2d(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), np.int64),
                                    (1, 3, 4, 4)),
     "max_pool2d: grad_output has shape (1, 2, 2, 2), expected 4 dims with the (N, C) of "
     "input_size (1, 3, 4, 4)"),
    (lambda: cyconv.grad.adaptive_avg_pool2d(np.ones((2, 2, 2)), (1, 2, 4, 4)),
     "adaptive_avg_pool2d: grad_output has shape (2, 2, 2), expected 4 dims with the (N, C) "
     "of input_size (1, 2, 4, 4)"),
    (lambda: cyconv.grad.avg_pool2d(np.ones((2, 3, 3, 3)), (2, 3, 8, 8), 2),
     "avg_pool2d: grad_output has shape (2, 3, 3, 3), expected (2, 3, 4, 4) for input_size "
     "(2, 3, 8, 8)"),
    (lambda: cyconv.grad.avg_pool2d(np.ones((2, 3, 4, 4)), (2, 3, 8.0, 8), 2),
     "avg_pool2d: input_size must be a tuple of non-negative ints, got (2, 3, 8.0, 8)"),
    (lambda: cyconv.grad.max_pool2d(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int64),
                                    (3, 8, 8, 8, 8)),
     "max_pool2d expects input_size of 3-D (C, H, W) or 4-D (N, C, H, W) shape, got 5-D "
     "(3, 8, 8, 8, 8)"),
]


@pytest.mark.parametrize("call, message", ERRORS, ids=[m.split(":")[0].split(" ")[0] + str(i)
                                                       for i, (_, m) in enumerate(ERRORS)])
def test_error_messages(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_indices_must_be_integers():
    with pytest.raises(TypeError, match="max_pool2d: indices must be an integer array .*got "
                                        "float64"):
        cyconv.grad.max_pool2d(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), (1, 1, 4, 4))


def test_gradient_dtype_mismatch_is_a_type_error():
    with pytest.raises(TypeError, match="relu: grad_output is float32 but output is float64"):
        cyconv.grad.relu(np.ones(3, np.float32), np.ones(3))
