"""Shared fixtures and helpers for the cyconv test suite.

- ``xp``: the array module under test: NumPy always, CuPy when it imports *and* a GPU
  is present (otherwise that parameter is skipped, as CuPy's ``numpy_cupy_allclose``).
- ``TOLERANCE``: the one table of tolerances, keyed by dtype (scikit-learn's
  ``ASSERT_RESULT`` idea); :func:`assert_close` reads it.
- Layout helpers: :func:`with_layout` gives the same values as a contiguous,
  non-contiguous (strided, channels-last, Fortran) or negatively strided array.
- Case descriptions (:class:`ConvCase`, :class:`ConvTransposeCase`) shared by the
  forward, gradient and transposed-convolution tests, each with a readable ``id``.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS_DIR)

import reference  # noqa: E402


# -- array modules ------------------------------------------------------------------------

def _cupy_or_reason():
    try:
        import cupy
    except Exception as exc:  # ImportError or a broken CUDA install
        return None, f"CuPy not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no GPU"
    except Exception as exc:
        return None, f"no usable GPU ({exc})"
    return cupy, None


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module a test runs on (CuPy only with a GPU)."""
    if request.param == "numpy":
        return np
    cupy, reason = _cupy_or_reason()
    if cupy is None:
        pytest.skip(reason)
    return cupy


def to_numpy(a):
    """A NumPy copy/view of a NumPy or CuPy array."""
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)


def torch_or_skip():
    """Import torch (a test oracle only) or skip the calling test."""
    return pytest.importorskip("torch")


# -- tolerances -----------------------------------------------------------------------------

#: Per dtype: ``reference`` bounds cyconv against a float64 computation on the same
#: (already rounded) inputs; ``parity`` bounds two cyconv paths that may only differ in
#: summation order (im2col vs direct, 1 vs 2 threads).  Both are relative to
#: ``max(1, max|expected|)``, on top of an element-wise ``rtol * |expected|``.
TOLERANCE = {
    np.dtype(np.float16): {"reference": 2e-3, "parity": 2e-3},
    np.dtype(np.float32): {"reference": 1e-5, "parity": 5e-6},
    np.dtype(np.float64): {"reference": 1e-12, "parity": 1e-13},
}

DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype, kind="reference", what=""):
    """Assert ``|actual - expected| <= tol * (max(1, max|expected|) + |expected|)``.

    ``tol = TOLERANCE[dtype][kind]``.  The message gives the worst element, its index and
    the error, so a failure reads as a bug report.
    """
    actual = to_numpy(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}")
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    if expected.size == 0:
        return
    tol = TOLERANCE[np.dtype(dtype)][kind]
    a = actual.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = np.abs(a - expected)
    bad = err > tol * (scale + np.abs(expected))
    bad |= np.isnan(a) != np.isnan(expected)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(np.where(np.isnan(err), np.inf, err))), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} elements off; max error "
            f"{float(np.nanmax(err)):.3e} (relative to scale {scale:.3g}: "
            f"{float(np.nanmax(err)) / scale:.3e}, tolerance {tol:.1e}) at {idx}: "
            f"got {a[idx]!r}, expected {expected[idx]!r}")


def assert_identical(a, b, what=""):
    """Bit-for-bit equality (same shape, dtype and bytes; NaNs in the same places)."""
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.tobytes() != b.tobytes():
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        raise AssertionError(
            f"{what}: not bit-identical; {int(np.count_nonzero(a != b))} of {a.size} elements "
            f"differ, max difference {float(np.nanmax(diff)):.3e}")


# -- layouts --------------------------------------------------------------------------------

LAYOUTS = ("contiguous", "strided", "channels_last", "fortran", "negative")


def with_layout(a, kind, xp=np):
    """The values of ``a`` as an ``xp`` array with the given memory layout.

    - ``contiguous``: C order.
    - ``strided``: every other element of a buffer twice as long in the last axis.
    - ``channels_last``: stored with axis 1 (channels) last, viewed in PyTorch's order.
    - ``fortran``: Fortran order.
    - ``negative``: every stride negative (a reversed copy, viewed reversed).
    """
    a = xp.asarray(a)
    if kind == "contiguous":
        out = xp.ascontiguousarray(a)
    elif kind == "strided":
        big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    elif kind == "channels_last":
        if a.ndim < 3:
            return with_layout(a, "strided", xp)
        perm = (0,) + tuple(range(2, a.ndim)) + (1,)
        inv = np.argsort(perm)
        out = xp.ascontiguousarray(a.transpose(perm)).transpose(tuple(int(i) for i in inv))
    elif kind == "fortran":
        out = xp.asfortranarray(a)
    elif kind == "negative":
        rev = (slice(None, None, -1),) * a.ndim
        out = a[rev].copy()[rev]
    else:
        raise ValueError(kind)
    return out


# -- cases -----------------------------------------------------------------------------------

def _fmt(v):
    return str(v).replace(" ", "")


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """One convolution: shapes and the arguments exactly as a user would pass them.

    ``N=None`` is an unbatched input.  ``layout`` applies to the input, weight and bias.
    """
    nd: int
    N: object
    C_in: int
    C_out: int
    groups: int
    in_size: tuple
    kernel_size: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    bias: bool = False
    layout: str = "contiguous"

    @property
    def op(self):
        return f"conv{self.nd}d"

    @property
    def batched(self):
        return self.N is not None

    @property
    def x_shape(self):
        return ((self.N,) if self.batched else ()) + (self.C_in,) + tuple(self.in_size)

    @property
    def w_shape(self):
        return (self.C_out, self.C_in // self.groups) + tuple(self.kernel_size)

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    @property
    def stride_t(self):
        return reference._per_dim(self.stride, self.nd)

    @property
    def dilation_t(self):
        return reference._per_dim(self.dilation, self.nd)

    @property
    def pairs(self):
        return reference.padding_pairs(self.padding, self.nd, self.in_size, self.kernel_size,
                                       self.stride_t, self.dilation_t)

    @property
    def out_size(self):
        return reference.conv_out_size(self.in_size, self.kernel_size, self.stride_t,
                                       self.pairs, self.dilation_t)

    @property
    def y_shape(self):
        return ((self.N,) if self.batched else ()) + (self.C_out,) + self.out_size

    @property
    def id(self):
        n = "unb" if not self.batched else f"N{self.N}"
        return (f"{self.op}-{n}-c{self.C_in}to{self.C_out}g{self.groups}-in{_fmt(self.in_size)}"
                f"-k{_fmt(self.kernel_size)}-s{_fmt(self.stride)}-p{_fmt(self.padding)}"
                f"-d{_fmt(self.dilation)}{'-bias' if self.bias else ''}"
                f"{'' if self.layout == 'contiguous' else '-' + self.layout}")

    def numpy_arrays(self, dtype, seed=0):
        """Contiguous NumPy ``(x, w, b)`` of ``dtype`` (``b`` None without bias)."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, self.x_shape).astype(dtype)
        w = rng.uniform(-1, 1, self.w_shape).astype(dtype)
        b = rng.uniform(-1, 1, (self.C_out,)).astype(dtype) if self.bias else None
        return x, w, b

    def arrays(self, xp, dtype, seed=0):
        """``(x, w, b)`` as ``xp`` arrays in this case's layout."""
        x, w, b = self.numpy_arrays(dtype, seed)
        lay = lambda a: None if a is None else with_layout(a, self.layout, xp)  # noqa: E731
        return lay(x), lay(w), lay(b)

    def grad_output(self, dtype, seed=1):
        rng = np.random.default_rng(seed)
        return rng.uniform(-1, 1, self.y_shape).astype(dtype)


@dataclasses.dataclass(frozen=True)
class ConvTransposeCase:
    """One transposed convolution (weights ``(C_in, C_out/groups, *kernel)``)."""
    nd: int
    N: object
    C_in: int
    C_out: int
    groups: int
    in_size: tuple
    kernel_size: tuple
    stride: object = 1
    padding: object = 0
    output_padding: object = 0
    dilation: object = 1
    bias: bool = False
    layout: str = "contiguous"

    @property
    def op(self):
        return f"conv_transpose{self.nd}d"

    @property
    def batched(self):
        return self.N is not None

    @property
    def x_shape(self):
        return ((self.N,) if self.batched else ()) + (self.C_in,) + tuple(self.in_size)

    @property
    def w_shape(self):
        return (self.C_in, self.C_out // self.groups) + tuple(self.kernel_size)

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    @property
    def out_size(self):
        nd = self.nd
        return reference.conv_transpose_out_size(
            self.in_size, self.kernel_size, reference._per_dim(self.stride, nd),
            reference.padding_pairs(self.padding, nd), reference._per_dim(self.dilation, nd),
            reference._per_dim(self.output_padding, nd))

    @property
    def y_shape(self):
        return ((self.N,) if self.batched else ()) + (self.C_out,) + self.out_size

    @property
    def id(self):
        n = "unb" if not self.batched else f"N{self.N}"
        return (f"{self.op}-{n}-c{self.C_in}to{self.C_out}g{self.groups}-in{_fmt(self.in_size)}"
                f"-k{_fmt(self.kernel_size)}-s{_fmt(self.stride)}-p{_fmt(self.padding)}"
                f"-op{_fmt(self.output_padding)}-d{_fmt(self.dilation)}"
                f"{'-bias' if self.bias else ''}"
                f"{'' if self.layout == 'contiguous' else '-' + self.layout}")

    numpy_arrays = ConvCase.numpy_arrays
    arrays = ConvCase.arrays
    grad_output = ConvCase.grad_output


def batch(a, case):
    """View an op-side array as batched."""
    return a if case.batched else a[None]


def unbatch(a, case):
    return a if case.batched else a[0]


# -- runtime state ----------------------------------------------------------------------------

@pytest.fixture
def num_threads():
    """Set cyconv's thread count inside a test; the previous value is restored after."""
    import cyconv
    before = cyconv.get_num_threads()
    yield cyconv.set_num_threads
    cyconv.set_num_threads(before)


@pytest.fixture
def workspace_limit():
    """Set cyconv's workspace cap inside a test; the previous value is restored after."""
    import cyconv
    before = cyconv.get_workspace_limit()
    yield cyconv.set_workspace_limit
    cyconv.set_workspace_limit(before)


# -- PyTorch as a second oracle (float64, autograd) ---------------------------------------------

def _torch():
    torch = torch_or_skip()
    torch.set_num_threads(1)   # the cores are shared; torch is only an oracle here
    return torch


def _torch_pad_args(case, xt):
    """Torch input and padding argument for a convolution case.

    Forms torch accepts are passed through (so torch checks their meaning on its own);
    (before, after) pairs and 'same' with a stride > 1 become an explicit ``F.pad``.
    """
    torch = _torch()
    F = torch.nn.functional
    pad = case.padding
    if isinstance(pad, str) and (pad == "valid" or all(s == 1 for s in case.stride_t)):
        return xt, pad
    if isinstance(pad, int) or (isinstance(pad, tuple) and all(isinstance(p, int)
                                                             for p in pad)):
        return xt, pad
    flat = tuple(v for pair in reversed(case.pairs) for v in pair)   # last dim first
    return F.pad(xt, flat), 0


def torch_conv(case, x, w, b=None, gy=None):
    """``torch.nn.functional.conv{nd}d`` in float64 on the case's arrays.

    Returns ``y`` or, when ``gy`` is given, ``(y, gx, gw, gb)`` from autograd.
    """
    torch = _torch()
    F = torch.nn.functional
    t = lambda a: None if a is None else torch.tensor(np.ascontiguousarray(to_numpy(a)), dtype=torch.float64)  # noqa
    xt, wt, bt = t(x), t(w), t(b)
    if gy is not None:
        for a in (xt, wt, bt):
            if a is not None:
                a.requires_grad_(True)
    xin, pad = _torch_pad_args(case, xt)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # 'same' with an even kernel
        yt = getattr(F, case.op)(xin, wt, bt, stride=case.stride, padding=pad,
                                 dilation=case.dilation, groups=case.groups)
    if gy is None:
        return yt.detach().numpy()
    yt.backward(t(gy))
    return (yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if bt is None else bt.grad.numpy())


def torch_conv_transpose(case, x, w, b=None, gy=None):
    """``torch.nn.functional.conv_transpose{nd}d`` in float64 (and autograd with ``gy``)."""
    torch = _torch()
    F = torch.nn.functional
    t = lambda a: None if a is None else torch.tensor(np.ascontiguousarray(to_numpy(a)), dtype=torch.float64)  # noqa
    xt, wt, bt = t(x), t(w), t(b)
    if gy is not None:
        for a in (xt, wt, bt):
            if a is not None:
                a.requires_grad_(True)
    yt = getattr(F, case.op)(xt, wt, bt, stride=case.stride, padding=case.padding,
                             output_padding=case.output_padding, groups=case.groups,
                             dilation=case.dilation)
    if gy is None:
        return yt.detach().numpy()
    yt.backward(t(gy))
    return (yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if bt is None else bt.grad.numpy())


# -- the float64 reference on a case (handles the batch forms) ----------------------------------

def ref_conv(case, x, w, b=None):
    y = reference.conv(batch(to_numpy(x), case), to_numpy(w),
                       None if b is None else to_numpy(b), case.stride_t, case.pairs,
                       case.dilation_t, case.groups)
    return unbatch(y, case)


def ref_conv_input_grad(case, w, gy):
    shape = tuple(case.x_shape) if case.batched else (1,) + tuple(case.x_shape)
    gx = reference.conv_input_grad(shape, to_numpy(w), batch(to_numpy(gy), case),
                                   case.stride_t, case.pairs, case.dilation_t, case.groups)
    return unbatch(gx, case)


def ref_conv_weight_grad(case, x, gy):
    return reference.conv_weight_grad(batch(to_numpy(x), case), case.w_shape,
                                      batch(to_numpy(gy), case), case.stride_t, case.pairs,
                                      case.dilation_t, case.groups)


def ref_conv_transpose(case, x, w, b=None):
    y = reference.conv_transpose(batch(to_numpy(x), case), to_numpy(w),
                                 None if b is None else to_numpy(b), case.stride,
                                 case.padding, case.output_padding, case.groups, case.dilation)
    return unbatch(y, case)


def ref_conv_transpose_input_grad(case, w, gy):
    shape = tuple(case.x_shape) if case.batched else (1,) + tuple(case.x_shape)
    gx = reference.conv_transpose_input_grad(shape, to_numpy(w), batch(to_numpy(gy), case),
                                             case.stride, case.padding, case.output_padding,
                                             case.groups, case.dilation)
    return unbatch(gx, case)


def ref_conv_transpose_weight_grad(case, x, gy):
    return reference.conv_transpose_weight_grad(
        batch(to_numpy(x), case), case.w_shape, batch(to_numpy(gy), case), case.stride,
        case.padding, case.output_padding, case.groups, case.dilation)


# -- the convolution grid -----------------------------------------------------------------------

#: (C_in, C_out, groups) for each groups form: dense, 2 groups, depthwise, depthwise x2.
GROUP_FORMS = {"g1": (3, 4, 1), "g2": (4, 6, 2), "dw": (3, 3, 3), "dw2": (3, 6, 3)}
#: odd, unequal sizes on purpose
IN_SIZES = {1: (13,), 2: (7, 9), 3: (5, 6, 7)}
KERNELS = {1: [(3,), (4,)], 2: [(3, 2), (3, 3)], 3: [(2, 3, 3), (3, 1, 2)]}
STRIDES = {1: [1, 2, 3, (2,)], 2: [1, 2, 3, (2, 1)], 3: [1, 2, 3, (1, 2, 3)]}
DILATIONS = {1: [1, 2, (3,)], 2: [1, 2, (1, 2)], 3: [1, 2, (2, 1, 1)]}
PADDINGS = {
    1: [1, (2,), "valid", "same", ((0, 2),)],
    2: [1, (1, 0), "valid", "same", ((0, 1), (2, 0))],
    3: [1, (0, 1, 2), "valid", "same", ((1, 0), (0, 0), (0, 2))],
}
#: batched, unbatched, empty batch, and non-contiguous / negatively strided layouts
BATCH_FORMS = ["batched", "unbatched", "empty", "strided", "channels_last", "negative"]


def _batch_form(form):
    return {"batched": (2, "contiguous"), "unbatched": (None, "contiguous"),
            "empty": (0, "contiguous")}.get(form, (2, form))


def _valid(case):
    eff = [d * (k - 1) + 1 for d, k in zip(case.dilation_t, case.kernel_size)]
    return all(n + pb + pa >= e for n, (pb, pa), e in zip(case.in_size, case.pairs, eff))


#: how often each batch form appears among one op's 20 grid cases
_BATCH_FORM_COUNTS = {"batched": 6, "unbatched": 3, "empty": 2, "strided": 3,
                      "channels_last": 3, "negative": 3}


def conv_grid(seed=20240601):
    """A sampled grid of convolution cases.

    Every (nd, padding form, stride) combination appears (so 'same' and asymmetric pairs
    meet every stride).  For each op, the four groups forms (5 cases each) and the batch
    forms (``_BATCH_FORM_COUNTS``) are dealt out in a seeded random order; dilation,
    kernel and bias are drawn from the same generator, so the grid is the same on every
    run.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for nd in (1, 2, 3):
        combos = [(p, s) for p in PADDINGS[nd] for s in STRIDES[nd]]
        gforms = rng.permutation(np.repeat(list(GROUP_FORMS), len(combos) // len(GROUP_FORMS)))
        bforms = rng.permutation([f for f, n in _BATCH_FORM_COUNTS.items() for _ in range(n)])
        for (padding, stride), gform, bform in zip(combos, gforms, bforms):
            C_in, C_out, G = GROUP_FORMS[str(gform)]
            N, layout = _batch_form(str(bform))
            while True:
                case = ConvCase(
                    nd=nd, N=N, C_in=C_in, C_out=C_out, groups=G, in_size=IN_SIZES[nd],
                    kernel_size=KERNELS[nd][rng.integers(2)], stride=stride, padding=padding,
                    dilation=DILATIONS[nd][rng.integers(len(DILATIONS[nd]))],
                    bias=bool(rng.integers(2)), layout=layout)
                if _valid(case):
                    break
            cases.append(case)
    return cases


#: hand-picked cases the sampled grid might miss
SPECIAL_CONV_CASES = [
    # TF "same" with stride 2 and an even kernel: padding (1, 2) / (0, 1)
    ConvCase(2, 2, 3, 4, 1, (9, 10), (4, 4), stride=2, padding="same", bias=True),
    ConvCase(2, 2, 3, 6, 3, (9, 8), (3, 3), stride=2, padding="same", dilation=2),
    ConvCase(1, 0, 3, 4, 1, (13,), (3,), padding=1),
    ConvCase(3, 0, 4, 6, 2, (5, 6, 7), (2, 3, 3), stride=2, padding="same", bias=True),
    ConvCase(2, None, 4, 6, 2, (7, 9), (3, 3), padding=((0, 1), (2, 0)), bias=True),
    ConvCase(2, 3, 5, 7, 1, (6, 5), (1, 1)),                           # 1x1
    ConvCase(2, 2, 3, 4, 1, (5, 7), (5, 7), bias=True),                # output 1x1
    ConvCase(2, 2, 3, 4, 1, (11, 10), (2, 2), stride=3),               # stride > kernel
    ConvCase(1, 2, 2, 3, 1, (17,), (4,), padding="same", dilation=3),
    ConvCase(2, 1, 3, 4, 1, (7, 9), (3, 3), padding=1, layout="fortran"),
    ConvCase(3, 2, 3, 3, 3, (5, 6, 7), (3, 3, 3), padding=1, layout="negative", bias=True),
    ConvCase(2, 2, 8, 8, 8, (7, 9), (3, 3), padding=1, layout="channels_last"),
]


# -- child processes ----------------------------------------------------------------------------

def run_python(args, timeout, env=None):
    """Run ``python *args`` in a child process that imports the cyconv under test.

    The child imports the installed cyconv (the src layout keeps the clone's root from
    shadowing it) and gets the tests directory on ``PYTHONPATH``, faulthandler on (a
    crash prints a traceback), and ``env`` on top of the current
    environment (a value of None removes a variable).  A hang past ``timeout`` seconds
    fails the calling test.  Returns the ``CompletedProcess`` (text output).
    """
    child_env = dict(os.environ)
    paths = [TESTS_DIR]
    if child_env.get("PYTHONPATH"):
        paths.append(child_env["PYTHONPATH"])
    child_env["PYTHONPATH"] = os.pathsep.join(paths)
    child_env["PYTHONFAULTHANDLER"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = str(value)
    try:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=timeout, env=child_env, cwd=TESTS_DIR)
    except subprocess.TimeoutExpired:
        shown = ["-c <script>" if a == "-c" else a for a in args if a not in _scripts(args)]
        pytest.fail(f"child process {' '.join(map(str, shown))} hung (no result within "
                    f"{timeout} s)", pytrace=False)


def _scripts(args):
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-c"]
