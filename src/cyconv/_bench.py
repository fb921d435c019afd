"""CPU benchmark: cyconv against PyTorch and a plain NumPy im2col + matmul baseline.

Run it as ``python -m cyconv bench`` (or ``python benchmarks/bench_conv.py``);
``--help`` lists the options and ``benchmarks/README.md`` explains how to read the
results.  PyTorch is optional: without it only the NumPy comparisons are made.

Notes
-----
The machines this runs on are shared and noisy, so absolute times drift by 2x from one
run to the next.  What holds is a ratio taken side by side, hence:

* every contender of one case (cyconv 'auto', optionally the forced 'im2col' and
  'direct', PyTorch, NumPy) runs in the same process, after a warm-up, *interleaved*:
  each round times every contender once, and the order rotates from round to round;
* the reported ratio is the median over rounds of the per-round ratio
  ``t_cyconv / t_torch`` (below 1 means cyconv is faster), the reported times the
  medians of the samples;
* before each sample the process waits until it is idle.  Worker threads keep spinning
  after a parallel call returns (NumPy's OpenBLAS for about 0.1 s, libgomp for a few ms,
  and PyTorch ships a libgomp of its own besides the one cyconv uses), and a spinning
  pool steals cores from whatever runs next;
* all libraries get the same thread count (``--threads``): ``cyconv.set_num_threads``,
  ``torch.set_num_threads`` and NumPy's BLAS pool through threadpoolctl;
* GFLOP/s are set against the float matmul peak (``np.matmul`` of large square
  matrices) measured in the same run, at the same thread count.

Every result is checked before it is timed: against PyTorch (``np.allclose``) when it
is available; otherwise forward results against the NumPy baseline and gradients
through the adjoint identities, e.g. ``<conv(v, w), gy> = <v, conv_input(gy, w)>``, in
float64.  A mismatch is printed loudly, flagged in the table and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._params import ConvParams, conv_params
from ._plan import winograd_applies

#: every direction, in conv terms (``transposed`` is a transposed convolution's forward).
DIRECTIONS = ("forward", "backward_input", "backward_weight", "transposed")
ALGORITHMS = ("im2col", "direct", "winograd")
#: relative tolerance of the correctness checks, by dtype.
TOLERANCE = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}
#: an unbounded inner loop would make a tiny op's sample last forever on a busy machine.
_MAX_NUMBER = 10_000


# -- the shape table ------------------------------------------------------------------

@dataclass(frozen=True)
class BenchShape:
    """One layer of the benchmark table.

    A convolution takes ``(batch, in_channels, *in_size)`` to ``out_channels``; with
    ``transposed=True`` it is a transposed convolution (weight ``(in_channels,
    out_channels/groups, *kernel_size)``).  Per-dimension fields are tuples; build
    entries with :func:`shape` to write them as ints.
    """
    name: str
    batch: int
    in_channels: int
    in_size: tuple
    out_channels: int
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int = 1
    transposed: bool = False
    output_padding: tuple = ()
    note: str = ""
    #: only the forward pass is timed (inference: the networks suite's batch-1 layers).
    inference: bool = False

    @property
    def nd(self) -> int:
        return len(self.in_size)

    @property
    def kind(self) -> str:
        """'dense', 'depthwise' or 'grouped'."""
        if self.groups == 1:
            return "dense"
        if self.groups == self.in_channels == self.out_channels:
            return "depthwise"
        return "grouped"

    @property
    def directions(self) -> tuple:
        first = "transposed" if self.transposed else "forward"
        return (first,) if self.inference else (first, "backward_input", "backward_weight")

    @property
    def x_shape(self) -> tuple:
        return (self.batch, self.in_channels) + tuple(self.in_size)

    @property
    def w_shape(self) -> tuple:
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    def params(self):
        """The checked :class:`cyconv._params.ConvParams` of this layer."""
        op = f"conv_transpose{self.nd}d" if self.transposed else f"conv{self.nd}d"
        return conv_params(op, self.nd, self.x_shape, self.w_shape, stride=self.stride,
                           padding=self.padding, dilation=self.dilation, groups=self.groups,
                           output_padding=self.output_padding or 0,
                           transposed=self.transposed)

    def describe(self) -> str:
        """E.g. ``8x64x56x56 -> 64, k3x3 p1`` (stride 1, dilation 1, groups 1 omitted)."""
        def dims(t):
            return "x".join(map(str, t))
        parts = [f"k{dims(self.kernel_size)}"]
        for tag, value, default in (("s", self.stride, 1), ("p", self.padding, 0),
                                    ("d", self.dilation, 1), ("op", self.output_padding, 0)):
            if any(v != default for v in value):
                parts.append(tag + (str(value[0]) if len(set(value)) == 1 else dims(value)))
        if self.groups > 1:
            parts.append(f"g{self.groups}")
        arrow = "-T->" if self.transposed else "->"
        return f"{dims(self.x_shape)} {arrow} {self.out_channels}, {' '.join(parts)}"


def shape(name, batch, in_channels, in_size, out_channels, kernel_size, stride=1, padding=0,
          dilation=1, groups=1, *, transposed=False, output_padding=0, note="") -> BenchShape:
    """A :class:`BenchShape` from PyTorch-style arguments (ints or per-dim tuples).

    ``in_size`` is an int for 1-D or a tuple with one entry per spatial dimension.
    """
    in_size = (in_size,) if isinstance(in_size, int) else tuple(in_size)
    nd = len(in_size)

    def per_dim(v):
        return (v,) * nd if isinstance(v, int) else tuple(v)

    return BenchShape(name, batch, in_channels, in_size, out_channels, per_dim(kernel_size),
                      per_dim(stride), per_dim(padding), per_dim(dilation), groups,
                      transposed, per_dim(output_padding) if transposed else (), note)


DEFAULT_SHAPES = (
    shape("resnet3x3_56", 8, 64, (56, 56), 64, 3, 1, 1, note="ResNet stage 1"),
    shape("resnet3x3_14", 8, 256, (14, 14), 256, 3, 1, 1, note="ResNet stage 3"),
    shape("pointwise_28", 8, 256, (28, 28), 128, 1, note="1x1 projection"),
    shape("stem7x7_s2", 8, 3, (224, 224), 64, 7, 2, 3, note="ResNet stem"),
    shape("depthwise3x3_28", 8, 256, (28, 28), 256, 3, 1, 1, 1, 256, note="MobileNet"),
    shape("dilated3x3_d2", 8, 64, (56, 56), 64, 3, 1, 2, 2, note="DeepLab-style"),
    shape("grouped3x3_g32", 8, 128, (28, 28), 128, 3, 1, 1, 1, 32, note="ResNeXt 4 ch/group"),
    shape("conv1d_k9", 16, 64, 4096, 64, 9, 1, 4, note="1-D signal"),
    shape("wavenet_k2_d8", 8, 64, 8192, 64, 2, dilation=8, note="WaveNet causal layer"),
    shape("conv3d_k3", 2, 32, (16, 32, 32), 32, 3, 1, 1, note="3-D volume"),
    shape("convT_dcgan", 16, 256, (8, 8), 128, 4, 2, 1, transposed=True,
          note="DCGAN generator"),
)

FULL_EXTRA_SHAPES = (
    shape("video_conv3d", 2, 64, (8, 56, 56), 64, 3, 1, 1, note="video 3-D conv"),
    shape("vocoder_convT1d", 4, 512, 1024, 256, 16, 8, 4, transposed=True,
          note="vocoder upsampling"),
    shape("istft_convT1d", 1, 1026, 224, 1, 1024, 256, transposed=True,
          note="large kernel and stride (pytorch#120982)"),
    shape("long_convT1d", 1, 64, 40000, 32, 4, 2, 1, transposed=True,
          note="long signal (pytorch#41382)"),
) + tuple(
    shape(f"dilated3x3_d{d}", 8, 64, (56, 56), 64, 3, 1, d, d, note="dilation sweep")
    for d in (1, 2, 4, 8, 16, 32))

#: small layers: per-call overhead, and a fast smoke run of every code path.
TINY_SHAPES = (
    shape("tiny_k3", 1, 1, (8, 8), 1, 3, note="one 8x8 plane"),
    shape("digits_k3", 32, 16, (8, 8), 16, 3, 1, 1, note="8x8 digits"),
    shape("tiny_depthwise", 2, 8, (8, 8), 8, 3, 1, 1, 1, 8),
    shape("tiny_conv1d", 4, 8, 64, 8, 5, 1, 2),
    shape("tiny_convT", 2, 8, (4, 4), 4, 4, 2, 1, transposed=True),
)


#: dense 3x3 unit-stride layers: where algorithm='winograd' applies.
WINOGRAD_SHAPES = (
    DEFAULT_SHAPES[0], DEFAULT_SHAPES[1],
    shape("resnet3x3_7", 8, 512, (7, 7), 512, 3, 1, 1, note="ResNet stage 4"),
    shape("vgg3x3_224", 1, 64, (224, 224), 64, 3, 1, 1, note="VGG conv1_2"),
    shape("vgg3x3_56", 2, 256, (56, 56), 256, 3, 1, 1, note="VGG conv3"),
    shape("unet3x3_128", 1, 128, (128, 128), 128, 3, 1, 1, note="U-Net encoder"),
    shape("unet3x3_up", 1, 256, (64, 64), 128, 3, 1, 1, note="U-Net decoder"),
    shape("cifar3x3_16", 32, 16, (32, 32), 16, 3, 1, 1, note="ResNet-20 stage 1"),
    shape("cifar3x3_32", 32, 32, (16, 16), 32, 3, 1, 1, note="ResNet-20 stage 2"),
    shape("cifar3x3_64", 32, 64, (32, 32), 64, 3, 1, 1, note="CIFAR, 64 channels"),
    shape("b1_resnet3x3_56", 1, 64, (56, 56), 64, 3, 1, 1, note="batch 1"),
    shape("b1_resnet3x3_28", 1, 128, (28, 28), 128, 3, 1, 1, note="batch 1"),
    shape("b1_resnet3x3_7", 1, 512, (7, 7), 512, 3, 1, 1, note="batch 1"),
)


def _unique(shapes):
    seen = {}
    for s in shapes:
        seen.setdefault(s.name, s)
    return tuple(seen.values())


SUITES = {
    "default": DEFAULT_SHAPES,
    "full": _unique(DEFAULT_SHAPES + FULL_EXTRA_SHAPES),
    "tiny": TINY_SHAPES,
    "winograd": WINOGRAD_SHAPES,
}


def select_shapes(suite="default", names=None) -> list:
    """The shapes of ``suite``, or those named in ``names`` (looked up in every suite)."""
    if suite not in SUITES:
        raise ValueError(f"bench: unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    if not names:
        return list(SUITES[suite])
    table = {s.name: s for s in _unique(sum(SUITES.values(), ()))}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"bench: unknown shape name(s) {', '.join(unknown)}; "
                         f"known: {', '.join(table)}")
    return [table[n] for n in dict.fromkeys(names)]


def parse_directions(text) -> tuple:
    """``'forward,backward-input'`` -> ('forward', 'backward_input'); 'all' for every one."""
    out = []
    for item in str(text).split(","):
        item = item.strip().lower().replace("-", "_")
        if not item:
            continue
        if item == "all":
            out.extend(DIRECTIONS)
        elif item in DIRECTIONS:
            out.append(item)
        else:
            raise ValueError(f"bench: unknown direction {item!r}; expected a comma-separated "
                             f"list of {', '.join(DIRECTIONS)} or 'all'")
    if not out:
        raise ValueError("bench: --directions is empty")
    return tuple(dict.fromkeys(out))


# -- the NumPy baseline -----------------------------------------------------------------

def numpy_conv(x, w, stride, padding, dilation, groups):
    """Convolution (cross-correlation) in plain NumPy: im2col, then one matmul per group.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, *in_size)
    w : ndarray, shape (C_out, C_in/groups, *kernel_size)
    stride, dilation : tuple of ints, one per spatial dim
    padding : tuple of (before, after) pairs, one per spatial dim
    groups : int

    Returns
    -------
    ndarray, shape (N, C_out, *out_size), the dtype of ``x``.

    Notes
    -----
    ``sliding_window_view`` of the padded input gives every window of the dilated
    kernel's span; slicing the window positions by ``stride`` and the window itself by
    ``dilation`` leaves ``(N, C, *out_size, *kernel_size)``, still a view.  Reshaping it
    to ``(N, G, L, C/G * prod(kernel))`` is the im2col copy; ``np.matmul`` with the
    weight ``(G, C/G * prod(kernel), C_out/G)`` is the GEMM.  This is the code a NumPy
    user would write, the baseline cyconv has to beat.
    """
    nd = x.ndim - 2
    N, C = x.shape[:2]
    K = w.shape[0]
    G = groups
    kernel = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(tuple(p) for p in padding))
    span = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
              + tuple(slice(None, None, d) for d in dilation)]
    out = win.shape[2:2 + nd]
    win = win.reshape((N, G, C // G) + out + tuple(kernel))
    perm = (0, 1) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
    col = win.transpose(perm).reshape(N, G, math.prod(out), (C // G) * math.prod(kernel))
    wg = w.reshape(G, K // G, -1)
    y = np.matmul(col, wg.transpose(0, 2, 1))                  # (N, G, L, K/G)
    return y.transpose(0, 1, 3, 2).reshape((N, K) + out)


# -- one case: a shape in one direction -------------------------------------------------

@dataclass
class Case:
    """The arrays and the contenders (name -> zero-argument callable) of one measurement."""
    shape: BenchShape
    direction: str
    dtype: np.dtype
    p: ConvParams = None
    arrays: dict = field(default_factory=dict)
    contenders: dict = field(default_factory=dict)


def _conv_kwargs(s: BenchShape):
    return dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)


def build_case(s: BenchShape, direction: str, dtype, algorithms, torch, rng) -> Case:
    """Arrays and callables for cyconv (one per algorithm), PyTorch and NumPy."""
    import cyconv

    dtype = np.dtype(dtype)
    p = s.params()
    nd = s.nd
    case = Case(s, direction, dtype, p)
    x = rng.standard_normal(p.x_shape, dtype=np.float64).astype(dtype)
    fan_in = math.prod(p.w_shape[1:])
    w = (rng.standard_normal(p.w_shape, dtype=np.float64) / math.sqrt(fan_in)).astype(dtype)
    gy = rng.standard_normal(p.y_shape, dtype=np.float64).astype(dtype)
    case.arrays = {"x": x, "w": w, "gy": gy}
    kw = _conv_kwargs(s)
    tkw = dict(stride=s.stride, padding=s.padding, output_padding=s.output_padding,
               groups=s.groups, dilation=s.dilation)

    def cy(alg):
        if s.transposed:
            fns = {"transposed": lambda: getattr(cyconv, f"conv_transpose{nd}d")(
                       x, w, None, **tkw, algorithm=alg),
                   "backward_input": lambda: getattr(cyconv.grad, f"conv_transpose{nd}d_input")(
                       x.shape, w, gy, **tkw, algorithm=alg),
                   "backward_weight": lambda: getattr(cyconv.grad, f"conv_transpose{nd}d_weight")(
                       x, w.shape, gy, **tkw, algorithm=alg)}
        else:
            fns = {"forward": lambda: getattr(cyconv, f"conv{nd}d")(
                       x, w, None, **kw, algorithm=alg),
                   "backward_input": lambda: getattr(cyconv.grad, f"conv{nd}d_input")(
                       x.shape, w, gy, **kw, algorithm=alg),
                   "backward_weight": lambda: getattr(cyconv.grad, f"conv{nd}d_weight")(
                       x, w.shape, gy, **kw, algorithm=alg)}
        return fns[direction]

    case.contenders["cyconv"] = cy("auto")
    for alg in algorithms:
        if alg != "winograd" or winograd_applies(p):
            case.contenders[f"cyconv:{alg}"] = cy(alg)

    if torch is not None:
        F, tgrad = torch.nn.functional, torch.nn.grad
        tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
        if s.transposed:
            # conv view: the transposed op's output is the image side, its input the
            # column side; its gradients are a plain convolution and a conv weight grad.
            tfn = {"transposed": lambda: getattr(F, f"conv_transpose{nd}d")(
                       tx, tw, None, **tkw),
                   "backward_input": lambda: getattr(F, f"conv{nd}d")(tgy, tw, None, **kw),
                   "backward_weight": lambda: getattr(tgrad, f"conv{nd}d_weight")(
                       tgy, tw.shape, tx, **kw)}[direction]
        else:
            tfn = {"forward": lambda: getattr(F, f"conv{nd}d")(tx, tw, None, **kw),
                   "backward_input": lambda: getattr(tgrad, f"conv{nd}d_input")(
                       tx.shape, tw, tgy, **kw),
                   "backward_weight": lambda: getattr(tgrad, f"conv{nd}d_weight")(
                       tx, tw.shape, tgy, **kw)}[direction]
        case.contenders["torch"] = tfn

    if direction == "forward":
        pads = p.padding
        case.contenders["numpy"] = lambda: numpy_conv(x, w, p.stride, pads, p.dilation, p.G)
    return case


# -- correctness ------------------------------------------------------------------------

def _close(a, ref, tol):
    """(ok, error) for ``np.allclose(a, ref, rtol=tol, atol=tol * max|ref|)``."""
    a = np.asarray(a)
    ref = np.asarray(ref)
    if a.shape != ref.shape:
        return False, f"shape {a.shape} != {ref.shape}"
    if not a.size:
        return True, "empty"
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    ok = bool(np.allclose(a, ref, rtol=tol, atol=tol * scale))
    err = float(np.max(np.abs(a.astype(np.float64) - ref))) / scale
    return ok, f"max err {err:.1e} of max|ref|"


def _adjoint(lhs, rhs, result, tol):
    """Compare two sides of an adjoint identity probed with a unit-variance random array.

    ``lhs - rhs`` is ``<probe, error of result>``, whose spread is the norm of the error;
    dividing by the norm of the result gives the relative error.
    """
    err = abs(lhs - rhs) / max(float(np.linalg.norm(result.astype(np.float64))), 1e-300)
    return err <= tol, f"adjoint rel err {err:.1e}"


def _numpy_reference_check(case: Case, result, tol, rng):
    """Check ``result`` without PyTorch: NumPy for a convolution, else an adjoint identity."""
    s, p = case.shape, case.p
    x, w, gy = (case.arrays[k].astype(np.float64) for k in ("x", "w", "gy"))

    def conv(img, weight):
        return numpy_conv(img, weight, p.stride, p.padding, p.dilation, p.G)

    r = np.asarray(result)
    expected = {"forward": p.y_shape, "transposed": p.y_shape, "backward_input": p.x_shape,
                "backward_weight": p.w_shape}[case.direction]
    if r.shape != expected:
        return False, f"result shape {r.shape} != {expected}"
    rd = r.astype(np.float64)
    probe = rng.standard_normal(r.shape)
    if not s.transposed:
        if case.direction == "forward":
            return _close(r, conv(x, w), tol)
        if case.direction == "backward_input":       # <conv(v, w), gy> = <v, gx>
            return _adjoint(np.vdot(conv(probe, w), gy), np.vdot(probe, rd), r, tol)
        return _adjoint(np.vdot(conv(x, probe), gy), np.vdot(probe, rd), r, tol)
    if case.direction == "backward_input":           # a plain conv of the image side gy
        return _close(r, conv(gy, w), tol)
    if case.direction == "transposed":               # <convT(x), v> = <x, conv(v, w)>
        return _adjoint(np.vdot(rd, probe), np.vdot(x, conv(probe, w)), r, tol)
    return _adjoint(np.vdot(conv(gy, probe), x), np.vdot(probe, rd), r, tol)


def check_case(case: Case, rng) -> dict:
    """Run every contender once and check it; returns name -> status string.

    Status is 'ok', 'MISMATCH (...)' or 'error: ...'.  Contenders that raised are
    removed from ``case.contenders``; mismatching ones stay (and are flagged).
    """
    tol = TOLERANCE[case.dtype]
    results, status = {}, {}
    for name, fn in list(case.contenders.items()):
        try:
            out = fn()
            results[name] = out.numpy() if hasattr(out, "numpy") and not isinstance(
                out, np.ndarray) else np.asarray(out)
        except Exception as exc:  # an unimplemented path must not stop the suite
            status[name] = f"error: {type(exc).__name__}: {exc}"
            del case.contenders[name]
    ref = results.get("torch")
    for name, out in results.items():
        if name == "torch":
            status[name] = "ok"
            continue
        if ref is not None:
            ok, detail = _close(out, ref, tol)
        else:
            ok, detail = _numpy_reference_check(case, out, tol, rng)
        status[name] = "ok" if ok else f"MISMATCH ({detail})"
    return status


# -- timing -----------------------------------------------------------------------------

def wait_until_idle(quantum=0.005, max_wait=0.5):
    """Sleep until this process uses (almost) no CPU time while sleeping.

    Thread pools spin after a parallel region ends (NumPy's OpenBLAS for about 0.1 s,
    libgomp for a few ms) and would steal cores from the next timed call.
    """
    deadline = time.perf_counter() + max_wait
    while True:
        c0 = time.process_time()
        time.sleep(quantum)
        if time.process_time() - c0 < 0.2 * quantum or time.perf_counter() > deadline:
            return


def _sample(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(contenders: dict, *, repeats, min_time, warmup, settle=True) -> tuple:
    """Interleaved timing: ``repeats`` rounds, each timing every contender once.

    Returns ``(times, number)``: name -> list of seconds per call (one per round), and
    name -> calls per sample (chosen from a call right after the warm-up, so that one
    sample lasts about ``min_time``).  The order of the contenders rotates from round
    to round, so none always runs first.  Each sample starts from idle thread pools (see
    :func:`wait_until_idle`), so its first call pays their wake-up; the repeated calls
    of a sample amortise it for small ops.
    """
    names = list(contenders)
    number = {}
    for name in names:
        fn = contenders[name]
        for _ in range(warmup):
            fn()
        t = _sample(fn, 1)
        number[name] = max(1, min(_MAX_NUMBER, math.ceil(min_time / max(t, 1e-9))))
    times = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if settle:
                wait_until_idle()
            times[name].append(_sample(contenders[name], number[name]))
    return times, number


def median_ratio(a, b):
    """Median of the per-round ratios a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b))


# -- the machine ------------------------------------------------------------------------

class NumpyBlasThreads:
    """Set the thread count of NumPy's own BLAS (not SciPy's, which cyconv pins to 1)."""

    def __init__(self, n):
        self.n, self.saved, self.note = n, [], ""

    def __enter__(self):
        try:
            from threadpoolctl import ThreadpoolController
            libs = [lib for lib in ThreadpoolController().lib_controllers
                    if lib.user_api == "blas"
                    and "numpy" in os.path.basename(os.path.dirname(lib.filepath))]
            for lib in libs:
                self.saved.append((lib, lib.num_threads))
                lib.set_num_threads(self.n)
            if not libs:
                self.note = "NumPy's BLAS not found by threadpoolctl; its thread count is unset"
        except Exception as exc:
            self.note = f"could not set NumPy's BLAS threads: {exc}"
        return self

    def __exit__(self, *exc):
        for lib, n in self.saved:
            lib.set_num_threads(n)


def matmul_peak(dtype, size, repeats=3) -> float:
    """GFLOP/s of ``np.matmul`` on ``size`` x ``size`` matrices: best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(repeats):
        wait_until_idle()
        best = min(best, _sample(lambda: np.matmul(a, b, out=c), 1))
    wait_until_idle()
    return 2.0 * size ** 3 / best / 1e9


def _import_torch(disabled):
    if disabled:
        return None, "PyTorch disabled with --no-torch"
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return None, f"PyTorch is not importable ({type(exc).__name__}: {exc})"
    return torch, ""


def _thread_pools():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads",
                                        "version", "filepath")} for d in threadpool_info()]
    except Exception as exc:
        return [{"error": str(exc)}]


def _auto_plan(case: Case):
    """The plan of the 'auto' call being timed (the same object the call runs)."""
    import cyconv
    s = case.shape
    op = f"conv_transpose{s.nd}d" if s.transposed else f"conv{s.nd}d"
    direction = {"forward": "forward", "transposed": "forward", "backward_input": "input",
                 "backward_weight": "weight"}[case.direction]
    kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)
    if s.transposed:
        kw["output_padding"] = s.output_padding
    return cyconv.plan(op, case.arrays["x"].shape, case.arrays["w"].shape,
                       dtype=case.dtype.name, direction=direction, **kw)


# -- running the suite ------------------------------------------------------------------

def run(shapes, directions=DIRECTIONS, *, algorithms=False, threads=None, dtype="float32",
        repeats=7, min_time=0.05, warmup=2, peak_size=2048, use_torch=True, seed=0,
        progress=True) -> dict:
    """Check and time every applicable (shape, direction); returns the results as a dict.

    The dict holds ``settings``, ``peak_gflops``, ``torch`` (version and threads, or
    the reason it is missing), ``rows`` (one per case) and ``summary``.  A progress
    line per case goes to stderr, or to ``progress`` if it is a file (none if False).
    """
    import cyconv

    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise ValueError(f"bench: dtype must be float32 or float64, got {dtype}")
    threads = cyconv.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"bench: --threads must be positive, got {threads}")
    algs = ALGORITHMS if algorithms else ()
    torch, torch_note = _import_torch(not use_torch)

    def say(msg):
        if progress:
            print(msg, file=sys.stderr if progress is True else progress, flush=True)

    saved_cy = cyconv.get_num_threads()
    cyconv.set_num_threads(threads)
    torch_info = {"available": torch is not None, "note": torch_note}
    if torch is not None:
        saved_torch = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch_info.update(version=torch.__version__, num_threads=torch.get_num_threads())
    rng = np.random.default_rng(seed)
    cases = [(s, d) for s in shapes for d in s.directions if d in directions]
    rows = []
    try:
        no_grad = torch.no_grad() if torch is not None else contextlib.nullcontext()
        with NumpyBlasThreads(threads) as blas, no_grad:
            say(f"bench: {len(cases)} cases, {threads} thread(s), {dtype.name}; "
                f"measuring the {dtype.name} matmul peak ({peak_size}^2) ...")
            peaks = [matmul_peak(dtype, peak_size)]
            for i, (s, direction) in enumerate(cases, 1):
                rows.append(_run_case(s, direction, dtype, algs, torch, rng, threads,
                                      repeats, min_time, warmup))
                say(f"[{i}/{len(cases)}] {_progress(rows[-1])}")
            peaks.append(matmul_peak(dtype, peak_size))
    finally:
        cyconv.set_num_threads(saved_cy)
        if torch is not None:
            torch.set_num_threads(saved_torch)
    peak = max(peaks)
    for row in rows:
        t = row["ms"].get("cyconv")
        if t:
            row["gflops"] = row["flops"] / (t * 1e-3) / 1e9
            row["peak_fraction"] = row["gflops"] / peak
    settings = dict(threads=threads, dtype=dtype.name, repeats=repeats, min_time=min_time,
                    warmup=warmup, algorithms=list(algs), directions=list(directions),
                    shapes=[s.name for s in shapes], peak_size=peak_size, seed=seed)
    return {"settings": settings, "peak_gflops": peak, "peak_runs_gflops": peaks,
            "torch": torch_info, "numpy": {"version": np.__version__, "blas_note": blas.note},
            "rows": rows, "summary": summarize(rows)}


def _run_case(s, direction, dtype, algs, torch, rng, threads, repeats, min_time, warmup):
    case = build_case(s, direction, dtype, algs, torch, rng)
    status = check_case(case, rng)
    for name, st in status.items():
        if st.startswith("MISMATCH"):
            print(f"\n!!! MISMATCH: {name} on {s.name} {direction}: {st}\n",
                  file=sys.stderr, flush=True)
    row = {"shape": s.name, "direction": direction, "describe": s.describe(), "kind": s.kind,
           "nd": s.nd, "flops": case.p.flops, **_plan_columns(case),
           "check": status, "ms": {}, "ratio_vs_torch": {}, "speedup_vs_numpy": None,
           "number": {}, "rounds": 0}
    if not case.contenders:
        return row
    times, number = measure(case.contenders, repeats=repeats, min_time=min_time,
                            warmup=warmup)
    row["number"], row["rounds"] = number, repeats
    row["ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    row["samples_ms"] = {k: [t * 1e3 for t in v] for k, v in times.items()}
    if "torch" in times:
        row["ratio_range"] = {}
        for name in times:
            if name.startswith("cyconv"):
                row["ratio_vs_torch"][name] = median_ratio(times[name], times["torch"])
                each = [a / b for a, b in zip(times[name], times["torch"])]
                row["ratio_range"][name] = [min(each), max(each)]
    if "numpy" in times and "cyconv" in times:
        row["speedup_vs_numpy"] = median_ratio(times["numpy"], times["cyconv"])
    row["auto_vs_best"] = _auto_vs_best(row["ratio_vs_torch"])
    return row


def _plan_columns(case):
    """The row's 'auto' algorithm and the kernel its plan names."""
    try:
        plan = _auto_plan(case)
        return {"auto": plan.algorithm, "kernel": plan.kernel}
    except Exception as exc:   # a report should still come out
        return {"auto": "?", "kernel": f"? ({type(exc).__name__})"}


def _auto_vs_best(ratios):
    """'auto' against the faster forced algorithm, each as its ratio to PyTorch (the
    per-round normalisation cancels most of a shared machine's drift); None unless the
    forced algorithms were timed."""
    forced = [v for k, v in ratios.items() if k.startswith("cyconv:")]
    if "cyconv" not in ratios or not forced:
        return None
    return ratios["cyconv"] / min(forced)


def _progress(row):
    ms = row["ms"]
    parts = [f"{row['shape']:<16} {row['direction']:<15}"]
    for name in ("cyconv", "torch", "numpy"):
        if name in ms:
            parts.append(f"{name} {_fmt_ms(ms[name])} ms")
    r = row["ratio_vs_torch"].get("cyconv")
    if r is not None:
        parts.append(f"cyconv/torch {r:.2f}")
    bad = [f"{k}: {v}" for k, v in row["check"].items() if v != "ok"]
    if bad:
        parts.append("; ".join(bad))
    return "  ".join(parts)


# -- summary and reports ----------------------------------------------------------------

def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def summarize(rows) -> dict:
    """Geometric mean and worst shape of the ratios per direction; speed-up over NumPy."""
    per_direction = {}
    for d in DIRECTIONS:
        dr = [r for r in rows if r["direction"] == d]
        if not dr:
            continue
        entry = {"cases": len(dr)}
        names = sorted({k for r in dr for k in r["ratio_vs_torch"]},
                       key=lambda k: (k != "cyconv", k))
        for name in names:
            vals = [(r["ratio_vs_torch"][name], r["shape"]) for r in dr
                    if name in r["ratio_vs_torch"]]
            worst = max(vals)
            entry[name] = {"geomean_ratio": _geomean(v for v, _ in vals), "n": len(vals),
                           "worst_ratio": worst[0], "worst_shape": worst[1]}
        per_direction[d] = entry
    dense = [(r["speedup_vs_numpy"], r["shape"]) for r in rows
             if r["speedup_vs_numpy"] and r["kind"] == "dense"]
    numpy_dense = None
    if dense:
        numpy_dense = {"geomean_speedup": _geomean(v for v, _ in dense), "n": len(dense),
                       "min_speedup": min(dense)[0], "min_shape": min(dense)[1]}
    ab = [(r["auto_vs_best"], f"{r['shape']} {r['direction']}") for r in rows
          if r.get("auto_vs_best")]
    auto_vs_best = None
    if ab:
        auto_vs_best = {"n": len(ab), "within_10pct": sum(v <= 1.10 for v, _ in ab),
                        "worst": max(ab)[0], "worst_case": max(ab)[1]}
    problems = [f"{r['shape']} {r['direction']} {k}: {v}" for r in rows
                for k, v in r["check"].items() if v != "ok"]
    mismatches = [p for p in problems if "MISMATCH" in p]
    return {"per_direction": per_direction, "numpy_dense_forward": numpy_dense,
            "auto_vs_best": auto_vs_best, "problems": problems, "mismatches": mismatches}


def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 \
        else f"{v:.3f}"


def _fmt(v, spec=".2f", suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def table(result) -> str:
    """The results as an aligned Markdown table."""
    algs = result["settings"]["algorithms"]
    head = ["shape", "direction", "kernel", "cyconv ms", "torch ms", "cyconv/torch", "GFLOP/s",
            "% peak"]
    for a in algs:
        head += [f"{a} ms", f"{a}/torch"]
    if algs:
        head += ["auto/best"]
    head += ["numpy ms", "x numpy", "check"]
    body = []
    for r in result["rows"]:
        ms, rt = r["ms"], r["ratio_vs_torch"]
        line = [r["shape"], r["direction"], r.get("kernel", r["auto"]),
                _fmt_ms(ms.get("cyconv")), _fmt_ms(ms.get("torch")), _fmt(rt.get("cyconv")),
                _fmt(r.get("gflops"), ".1f"),
                _fmt(None if r.get("peak_fraction") is None else 100 * r["peak_fraction"],
                     ".0f", "%")]
        for a in algs:
            line += [_fmt_ms(ms.get(f"cyconv:{a}")), _fmt(rt.get(f"cyconv:{a}"))]
        if algs:
            line += [_fmt(r.get("auto_vs_best"))]
        bad = [f"{k}: {v}" for k, v in r["check"].items() if v != "ok"]
        line += [_fmt_ms(ms.get("numpy")), _fmt(r["speedup_vs_numpy"], ".1f", "x"),
                 "ok" if not bad else "; ".join(bad)]
        body.append(line)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    numeric = {i for i, h in enumerate(head)
               if h not in ("shape", "direction", "kernel", "check")}

    def fmt_line(cells):
        return "| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt_line(head), rule] + [fmt_line(b) for b in body])


def summary_text(result) -> str:
    s = result["summary"]
    lines = [f"float matmul peak ({result['settings']['dtype']}, "
             f"{result['settings']['threads']} thread(s)): {result['peak_gflops']:.1f} GFLOP/s"]
    if not result["torch"]["available"]:
        lines.append(f"NOTE: {result['torch']['note']}: no PyTorch comparison, "
                     "only cyconv against NumPy (results checked against NumPy instead).")
    for d, entry in s["per_direction"].items():
        for name, v in entry.items():
            if name == "cases":
                continue
            lines.append(f"{d:<15} {name:<14} geomean cyconv/torch {v['geomean_ratio']:.2f} "
                         f"over {v['n']} shape(s); worst {v['worst_ratio']:.2f} "
                         f"({v['worst_shape']})")
    ab = s.get("auto_vs_best")
    if ab:
        lines.append(f"'auto' against the faster forced algorithm: {ab['within_10pct']} of "
                     f"{ab['n']} case(s) within 10%; worst {ab['worst']:.2f} "
                     f"({ab['worst_case']})")
    nd = s["numpy_dense_forward"]
    if nd:
        lines.append(f"speed-up over NumPy im2col+matmul, dense forward: geomean "
                     f"{nd['geomean_speedup']:.1f}x over {nd['n']} shape(s); "
                     f"least {nd['min_speedup']:.1f}x ({nd['min_shape']})")
    if s["mismatches"]:
        lines.append(f"!!! {len(s['mismatches'])} MISMATCH(ES): " + "; ".join(s["mismatches"]))
    other = [p for p in s["problems"] if p not in s["mismatches"]]
    if other:
        lines.append(f"{len(other)} case(s) could not run: " + "; ".join(other))
    lines.append("cyconv/torch is the median of per-round time ratios: below 1 means "
                 "cyconv is faster.")
    return "\n".join(lines)


def _info():
    try:
        import cyconv
        return cyconv.info()
    except Exception as exc:
        return {"error": f"cyconv.info() failed: {type(exc).__name__}: {exc}"}


def write_report(result, path, command) -> tuple:
    """Write the Markdown report to ``path`` and the JSON beside it; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path = path.with_suffix(".json")
    info = _info()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    t = result["torch"]
    torch_line = (f"PyTorch {t['version']}, {t['num_threads']} thread(s)" if t["available"]
                  else f"PyTorch: not used ({t['note']})")
    st = result["settings"]
    md = [f"# cyconv CPU benchmark ({now})", "",
          "Command:", "", "```", command, "```", "",
          f"- threads: {st['threads']}, dtype: {st['dtype']}, rounds: {st['repeats']}, "
          f"min time per sample: {st['min_time']} s, warm-up calls: {st['warmup']}",
          f"- {torch_line}; NumPy {result['numpy']['version']}",
          f"- {st['dtype']} matmul peak: {result['peak_gflops']:.1f} GFLOP/s "
          f"(np.matmul {st['peak_size']}^2, best of the runs at the start and the end: "
          + ", ".join(f"{v:.1f}" for v in result["peak_runs_gflops"]) + ")",
          "", "## Results", "", table(result), "", "## Summary", "", "```",
          summary_text(result), "```", "",
          "Times are medians over interleaved rounds; ratios are medians of per-round "
          "ratios (see benchmarks/README.md).", "",
          "## cyconv.info()", "", "```json", json.dumps(info, indent=2, default=str), "```",
          "", "## Thread pools loaded in the process", "", "```json",
          json.dumps(_thread_pools(), indent=2, default=str), "```", ""]
    path.write_text("\n".join(md), encoding="utf-8")
    doc = dict(result, command=command, date=now, info=info, thread_pools=_thread_pools())
    json_path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    return path, json_path


def plot(result, path) -> str:
    """A bar chart of the cyconv/torch ratios (log scale) as a PNG; returns a message."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    rows = [r for r in result["rows"] if r["ratio_vs_torch"]]
    if not rows:
        return "plot skipped: no cyconv/torch ratios to plot (PyTorch missing or no results)"
    names = ["cyconv"] + [f"cyconv:{a}" for a in result["settings"]["algorithms"]]
    labels = [f"{r['shape']}\n{r['direction']}" for r in rows]
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 0.3 * len(rows) * len(names) + 2)),
                                    4.5))
    width = 0.8 / len(names)
    xs = np.arange(len(rows))
    for i, name in enumerate(names):
        vals = [r["ratio_vs_torch"].get(name, np.nan) for r in rows]
        label = "auto" if name == "cyconv" else name.split(":")[1]
        ax.bar(xs + (i - (len(names) - 1) / 2) * width, vals, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time cyconv / time PyTorch (lower is better)")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    st = result["settings"]
    ax.set_title(f"cyconv vs PyTorch, {st['dtype']}, {st['threads']} thread(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


# -- command line -----------------------------------------------------------------------

def build_parser(prog="python -m cyconv bench") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, description="Time cyconv's CPU convolutions against PyTorch and NumPy "
        "(interleaved rounds, median of per-round ratios).",
        epilog="See benchmarks/README.md for the method and how to read the table.")
    ap.add_argument("--suite", choices=sorted(SUITES) + ["networks"], default="default",
                    help="shape table: 'default', 'full' (adds video conv3d, vocoder "
                    "conv_transpose1d, a dilation sweep), 'tiny' (small layers) or "
                    "'networks' (every conv layer of published networks, at a training "
                    "batch and batch 1, with each network's total; see --networks)")
    ap.add_argument("--networks", metavar="NAMES",
                    help="with --suite networks: comma-separated network names (default "
                    "all; see --list)")
    ap.add_argument("--shapes", metavar="NAMES",
                    help="comma-separated shape names (from any suite); see --list")
    ap.add_argument("--directions", default="all", metavar="LIST",
                    help="comma-separated: forward, backward_input, backward_weight, "
                    "transposed, or all (default)")
    ap.add_argument("--algorithms", action="store_true",
                    help="also time cyconv with algorithm='im2col' and 'direct' forced")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="threads for every library (default: cyconv.get_num_threads())")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--repeats", type=int, metavar="N",
                    help="interleaved rounds per case (default 7; 3 with --quick)")
    ap.add_argument("--min-time", type=float, metavar="S",
                    help="seconds one sample lasts at least, by repeating the call "
                    "(default 0.05; 0.01 with --quick)")
    ap.add_argument("--warmup", type=int, metavar="N",
                    help="untimed calls per contender first (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter samples")
    ap.add_argument("--peak-size", type=int, metavar="N",
                    help="matrix size of the matmul peak (default 2048; 1024 with --quick)")
    ap.add_argument("--no-torch", action="store_true",
                    help="do not import PyTorch (compare with NumPy only)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    ap.add_argument("--out", metavar="PATH",
                    help="write a Markdown report here and its JSON beside it")
    ap.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the ratios")
    ap.add_argument("--list", action="store_true", help="print the shape table and exit")
    ap.add_argument("--latency", action="store_true",
                    help="the small-op latency run instead (tiny conv2d and its gradients, "
                    "relu, max_pool2d; 1 thread unless --threads; needs PyTorch)")
    ap.add_argument("--layers", action="store_true",
                    help="the CNN layers run instead (BatchNorm2d and the activations, "
                    "forward + backward; 2 threads unless --threads; needs PyTorch)")
    return ap


def _list_shapes(out):
    from . import _networks
    for suite, shapes in SUITES.items():
        print(f"suite {suite}:", file=out)
        for s in shapes:
            print(f"  {s.name:<18} {s.describe():<44} {s.note}", file=out)
    print("suite networks (layers at batch 1, each x its count in the network):", file=out)
    for net in _networks.NETWORKS:
        print(f"  {net.name} (training batch {net.batch}): {net.note}", file=out)
        for count, s in net.layers:
            print(f"    {count:>3} x {s.name:<32} {s.describe()}", file=out)


def main(argv=None, prog="python -m cyconv bench") -> int:
    """Command-line entry point; returns the exit status (1 on a mismatch)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    if args.list:
        _list_shapes(sys.stdout)
        return 0
    quick = args.quick
    repeats = args.repeats if args.repeats is not None else (3 if quick else 7)
    min_time = args.min_time if args.min_time is not None else (0.01 if quick else 0.05)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    peak_size = args.peak_size if args.peak_size is not None else (1024 if quick else 2048)
    for name, value, low in (("--repeats", repeats, 1), ("--warmup", warmup, 0),
                             ("--peak-size", peak_size, 1)):
        if value < low:
            ap.error(f"{name} must be at least {low}, got {value}")
    if min_time < 0:
        ap.error(f"--min-time must be non-negative, got {min_time}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    if args.latency:
        return _latency_main(args, argv, prog, repeats if args.repeats else 21, min_time)
    if args.layers:
        from . import _bench_layers
        return _bench_layers.cli(args, argv, prog, repeats, min_time)
    if args.suite == "networks":
        return _networks_main(args, ap, argv, prog, repeats, min_time, warmup, peak_size)
    if args.networks:
        ap.error("--networks needs --suite networks")
    try:
        names = [n.strip() for n in args.shapes.split(",") if n.strip()] if args.shapes else None
        shapes = select_shapes(args.suite, names)
        directions = parse_directions(args.directions)
    except ValueError as exc:
        ap.error(str(exc))
    result = run(shapes, directions, algorithms=args.algorithms, threads=args.threads,
                 dtype=args.dtype, repeats=repeats, min_time=min_time, warmup=warmup,
                 peak_size=peak_size, use_torch=not args.no_torch, seed=args.seed)
    print(table(result))
    print()
    print(summary_text(result))
    sys.stdout.flush()
    if args.out:
        command = " ".join([prog] + argv)
        md, js = write_report(result, args.out, command)
        print(f"report written to {md} and {js}", file=sys.stderr)
    if args.plot:
        print(plot(result, args.plot), file=sys.stderr)
    return 1 if result["summary"]["mismatches"] else 0


def _networks_main(args, ap, argv, prog, repeats, min_time, warmup, peak_size) -> int:
    from . import _networks
    if args.shapes:
        ap.error("--shapes does not apply to --suite networks; use --networks")
    try:
        names = [n.strip() for n in (args.networks or "").split(",") if n.strip()]
        nets = _networks.select(names)
    except ValueError as exc:
        ap.error(str(exc))
    result = _networks.run(nets, algorithms=args.algorithms, threads=args.threads,
                           dtype=args.dtype, repeats=repeats, min_time=min_time,
                           warmup=warmup, peak_size=peak_size, use_torch=not args.no_torch,
                           seed=args.seed)
    print(table(result))
    print()
    print(_networks.network_table(result["networks"]))
    print()
    print(_networks.summary_text(result, result["networks"], result["passes"]))
    sys.stdout.flush()
    if args.out:
        md, js = _networks.write_report(result, args.out, " ".join([prog] + argv))
        print(f"report written to {md} and {js}", file=sys.stderr)
    if args.plot:
        print(_networks.plot(result["networks"], args.plot, result["settings"]),
              file=sys.stderr)
    return 1 if result["summary"]["mismatches"] else 0


def _latency_main(args, argv, prog, repeats, min_time) -> int:
    from . import _latency
    result = _latency.run(threads=args.threads or 1, repeats=repeats, min_time=min_time,
                          seed=args.seed)
    print(_latency.table(result))
    if args.out:
        md, js = _latency.write_report(result, args.out, " ".join([prog] + argv))
        print(f"report written to {md} and {js}", file=sys.stderr)
    return 1 if any(r["check"] != "ok" for r in result["rows"]) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
