#!/usr/bin/env python
"""GPU benchmark: cyconv (CuPy) against PyTorch cuDNN, forward and both gradients.

The shapes are those of the CPU suite (:mod:`cyconv._bench`) with the batch scaled up to
at least 64 (``--batch``).  For every layer and direction the contenders are

* cyconv ``auto`` (and, with ``--algorithms``, the forced ``im2col`` and ``direct``);
* PyTorch cuDNN with TF32 **off** (``torch.backends.cudnn.allow_tf32 = False``): the
  like-for-like float32 comparison, and the ratio column;
* PyTorch cuDNN with TF32 **on** (PyTorch's default for convolutions), as a second column:
  tensor-core TF32 is about 10 bits of mantissa, so it is not the same computation.

Method (the machines are shared, so only ratios taken side by side hold):

* data is allocated once per layer and shared between CuPy and PyTorch through DLPack;
  every result is checked against PyTorch (TF32 off) before anything is timed;
* after a warm-up, rounds run every contender once, in an order that rotates; each sample
  is ``number`` back-to-back calls between two CUDA events on the stream the library
  launches on, with ``number`` calibrated so that a sample lasts about ``--min-time``;
* reported: the median time of each contender, and the median over rounds of the
  per-round ratio ``t_cyconv / t_torch`` (below 1: cyconv is faster), plus GFLOP/s.

Usage::

    python benchmarks/bench_gpu.py                       # default suite, float32
    python benchmarks/bench_gpu.py --suite full --algorithms --out results/gpu.md
    python benchmarks/bench_gpu.py --dtype float16 --shapes resnet3x3_56,pointwise_28
    python benchmarks/bench_gpu.py --list                # the shapes, no GPU needed
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys

import numpy as np

try:
    import cyconv
except ImportError:  # a source checkout built in place, not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cyconv
from cyconv._bench import SUITES, select_shapes

DIRECTION_NAMES = {"forward": "fwd", "transposed": "fwd(T)", "backward_input": "dgrad",
                   "backward_weight": "wgrad"}


def scaled(shapes, batch):
    """The shapes with their batch raised to at least ``batch`` (kept when larger)."""
    return [dataclasses.replace(s, batch=max(batch, s.batch)) for s in shapes]


# -- the ops ------------------------------------------------------------------------------

def _kw(s):
    return dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)


def cyconv_op(s, direction, x, w, gy, algorithm):
    """A zero-argument callable running one direction of layer ``s`` with cyconv."""
    nd, kw = s.nd, _kw(s)
    if s.transposed:
        tkw = dict(kw, output_padding=s.output_padding)
        if direction == "transposed":
            return lambda: getattr(cyconv, f"conv_transpose{nd}d")(x, w, algorithm=algorithm,
                                                                   **tkw)
        fn = getattr(cyconv.grad, f"conv_transpose{nd}d_"
                                  f"{'input' if direction == 'backward_input' else 'weight'}")
        if direction == "backward_input":
            return lambda: fn(x.shape, w, gy, algorithm=algorithm, **tkw)
        return lambda: fn(x, w.shape, gy, algorithm=algorithm, **tkw)
    if direction == "forward":
        return lambda: getattr(cyconv, f"conv{nd}d")(x, w, algorithm=algorithm, **kw)
    if direction == "backward_input":
        fn = getattr(cyconv.grad, f"conv{nd}d_input")
        return lambda: fn(x.shape, w, gy, algorithm=algorithm, **kw)
    fn = getattr(cyconv.grad, f"conv{nd}d_weight")
    return lambda: fn(x, w.shape, gy, algorithm=algorithm, **kw)


def torch_op(torch, s, direction, x, w, gy):
    """The same computation with PyTorch (cuDNN).  A transposed layer's gradients are
    expressed as the convolution they are (its input gradient is a convolution of
    grad_output, its weight gradient a convolution weight gradient with the roles of
    input and grad_output swapped)."""
    F = torch.nn.functional
    g = torch.nn.grad
    nd, kw = s.nd, _kw(s)
    conv = getattr(F, f"conv{nd}d")
    if s.transposed:
        if direction == "transposed":
            return lambda: getattr(F, f"conv_transpose{nd}d")(
                x, w, stride=s.stride, padding=s.padding, output_padding=s.output_padding,
                groups=s.groups, dilation=s.dilation)
        if direction == "backward_input":
            return lambda: conv(gy, w, **kw)
        fn = getattr(g, f"conv{nd}d_weight")
        return lambda: fn(gy, tuple(w.shape), x, **kw)
    if direction == "forward":
        return lambda: conv(x, w, **kw)
    if direction == "backward_input":
        fn = getattr(g, f"conv{nd}d_input")
        return lambda: fn(tuple(x.shape), w, gy, **kw)
    fn = getattr(g, f"conv{nd}d_weight")
    return lambda: fn(x, tuple(w.shape), gy, **kw)


def with_tf32(torch, enabled, fn):
    """``fn`` run with cuDNN's and cuBLAS's TF32 switched to ``enabled``."""
    def run():
        before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled
        try:
            return fn()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    return run


# -- timing -------------------------------------------------------------------------------

class Timer:
    """CUDA-event timing of ``number`` calls on the stream the library launches on."""

    def __init__(self, cupy, torch):
        self.cupy, self.torch = cupy, torch

    def sample(self, fn, number, lib):
        if lib == "cyconv":
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        else:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        if lib == "cyconv":
            ms = self.cupy.cuda.get_elapsed_time(start, end)
        else:
            ms = start.elapsed_time(end)
        return ms / number

    def calibrate(self, fn, lib, min_time_ms):
        t = self.sample(fn, 1, lib)
        return max(1, min(1000, int(min_time_ms / max(t, 1e-3))))


def measure(timer, contenders, rounds, warmup, min_time_ms):
    """{name: [ms per call, one per round]} with the order rotating from round to round."""
    for name, (fn, lib) in contenders.items():
        for _ in range(warmup):
            fn()
    numbers = {name: timer.calibrate(fn, lib, min_time_ms)
               for name, (fn, lib) in contenders.items()}
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, lib = contenders[name]
            times[name].append(timer.sample(fn, numbers[name], lib))
    return times


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b))


# -- one layer ----------------------------------------------------------------------------

def check(cupy, torch, got, want, dtype):
    g = cupy.asnumpy(got).astype(np.float64)
    t = want.detach().double().cpu().numpy()
    scale = max(1.0, float(np.max(np.abs(t)))) if t.size else 1.0
    tol = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-10}[dtype]
    err = float(np.max(np.abs(g - t))) / scale if t.size else 0.0
    return err <= tol, err


def bench_layer(cupy, torch, timer, s, dtype, algorithms, args):
    rng = np.random.default_rng(0)
    p = s.params()
    x = cupy.asarray(rng.uniform(-1, 1, s.x_shape).astype(dtype))
    w = cupy.asarray(rng.uniform(-1, 1, s.w_shape).astype(dtype))
    gy = cupy.asarray(rng.uniform(-1, 1, p.y_shape).astype(dtype))
    tx, tw, tgy = (torch.from_dlpack(a) for a in (x, w, gy))
    rows = []
    for direction in s.directions:
        contenders = {}
        for alg in algorithms:
            contenders[f"cyconv_{alg}"] = (cyconv_op(s, direction, x, w, gy, alg), "cyconv")
        ref = torch_op(torch, s, direction, tx, tw, tgy)
        contenders["torch"] = (with_tf32(torch, False, ref), "torch")
        contenders["torch_tf32"] = (with_tf32(torch, True, ref), "torch")
        want = contenders["torch"][0]()
        ok, err = True, 0.0
        for name, (fn, lib) in contenders.items():
            if lib == "cyconv":
                good, e = check(cupy, torch, fn(), want, dtype)
                ok, err = ok and good, max(err, e)
        times = measure(timer, contenders, args.rounds, args.warmup, args.min_time)
        med = {name: statistics.median(t) for name, t in times.items()}
        main = f"cyconv_{algorithms[0]}"
        rows.append({
            "shape": s.name, "layer": s.describe(), "direction": direction, "ok": ok,
            "max_rel_error": err, "ms": med, "gflops": {
                name: p.flops / (ms * 1e6) for name, ms in med.items()},
            "ratio_vs_torch": median_ratio(times[main], times["torch"]),
            "ratio_vs_torch_tf32": median_ratio(times[main], times["torch_tf32"]),
            "ratios_by_algorithm": {name: median_ratio(times[name], times["torch"])
                                    for name in times if name.startswith("cyconv_")},
        })
        print(_row_text(rows[-1], algorithms), flush=True)
    return rows


def _row_text(r, algorithms):
    ms = r["ms"]
    cy = "  ".join(f"{ms[f'cyconv_{a}']:8.3f}" for a in algorithms)
    flag = "" if r["ok"] else f"  MISMATCH (max rel. error {r['max_rel_error']:.1e})"
    return (f"| {r['shape']:<20} | {DIRECTION_NAMES[r['direction']]:<6} | {cy} | "
            f"{ms['torch']:8.3f} | {r['ratio_vs_torch']:6.2f} | {ms['torch_tf32']:8.3f} | "
            f"{r['ratio_vs_torch_tf32']:6.2f} | "
            f"{r['gflops'][f'cyconv_{algorithms[0]}']:8.0f} |{flag}")


def header(algorithms):
    cols = "  ".join(f"{a:>8}" for a in algorithms)
    return (f"| {'shape':<20} | {'dir':<6} | {cols} | {'cuDNN':>8} | {'ratio':>6} | "
            f"{'cuDNN-TF32':>8} | {'ratio':>6} | {'GFLOP/s':>8} |\n"
            "(times in ms per call, medians; ratio = median of per-round cyconv/cuDNN, "
            "below 1 is faster; cuDNN = PyTorch with TF32 off)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="benchmarks/bench_gpu.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="default")
    ap.add_argument("--shapes", help="comma-separated shape names (default: the suite)")
    ap.add_argument("--batch", type=int, default=64, help="minimum batch (default 64)")
    ap.add_argument("--dtype", choices=["float16", "float32", "float64"], default="float32")
    ap.add_argument("--algorithms", action="store_true",
                    help="also time the forced 'im2col' and 'direct' algorithms")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0, help="ms per sample (default 2)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN autotune (torch.backends.cudnn.benchmark = True)")
    ap.add_argument("--list", action="store_true", help="print the shapes and exit")
    ap.add_argument("--out", help="also write the table (.md) or the rows (.json) here")
    args = ap.parse_args(argv)

    names = args.shapes.split(",") if args.shapes else None
    shapes = scaled(select_shapes(args.suite, names), args.batch)
    if args.list:
        for s in shapes:
            print(f"{s.name:<20} {s.describe()}")
        return 0

    from cyconv._gpu import require_cupy
    cupy = require_cupy()
    import torch
    if not torch.cuda.is_available():
        print("PyTorch has no CUDA device; nothing to compare against", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    algorithms = ["auto"] + (["im2col", "direct"] if args.algorithms else [])
    timer = Timer(cupy, torch)
    info = cyconv.info()
    print(f"# cyconv GPU benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"cyconv {info['version']}, CUDA: {info['cuda']}")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"device {torch.cuda.get_device_name()}, dtype {args.dtype}, "
          f"cudnn.benchmark={args.cudnn_benchmark}, CUPY_TF32={os.environ.get('CUPY_TF32')}")
    print(header(algorithms))
    rows = []
    for s in shapes:
        rows += bench_layer(cupy, torch, timer, s, args.dtype, algorithms, args)
    ratios = [r["ratio_vs_torch"] for r in rows]
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric mean of the ratios vs cuDNN (TF32 off): {geo:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            if args.out.endswith(".json"):
                json.dump({"info": info, "rows": rows}, f, indent=1, default=str)
            else:
                f.write(header(algorithms) + "\n")
                f.write("\n".join(_row_text(r, algorithms) for r in rows) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
