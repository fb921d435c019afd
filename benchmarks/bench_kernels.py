#!/usr/bin/env python
"""Time candidate kernels of chosen layers side by side: the evidence behind a plan rule.

``python -m cyconv bench`` times what the planner picks; this script times what it
could pick.  Each candidate is an algorithm (``auto``, ``im2col``, ``direct``: the
plan of that request) or a kernel name (``depthwise``, ``outer``, ``blocked``,
``direct_flipped``, ``kernel:direct`` for the per-channel kernel itself, ...: the plan
with its kernel replaced), run through the CPU
backend, checked against PyTorch, then timed interleaved with it (median of per-round
ratios, as the main benchmark).  Layers are named as in ``python -m cyconv bench
--list`` (any suite, the networks suite's ``<network>.<layer>@b<batch>`` included)::

    python benchmarks/bench_kernels.py --layers mobilenetv2.b6_dw3x3_s2@b16 \\
        --kernels auto,direct,depthwise --threads 2
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import numpy as np


def _layers(names):
    from cyconv import _bench, _networks
    table = {s.name: s for s in _bench._unique(sum(_bench.SUITES.values(), ()))}
    for net in _networks.NETWORKS:
        for _, s in net.train_shapes() + net.infer_shapes():
            table[s.name] = s
    missing = [n for n in names if n not in table]
    if missing:
        raise SystemExit(f"unknown layer(s): {', '.join(missing)}")
    return [table[n] for n in names]


def _call(s, direction, candidate, x, w, gy):
    """A zero-argument callable running ``candidate`` for ``direction`` of layer ``s``."""
    import cyconv
    from cyconv import _cpu, _plan
    op = f"conv_transpose{s.nd}d" if s.transposed else f"conv{s.nd}d"
    kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)
    if s.transposed:
        kw["output_padding"] = s.output_padding
    public = {"forward": "forward", "backward_input": "input",
              "backward_weight": "weight"}[direction]
    alg = candidate if candidate in ("auto", "im2col", "direct") else "auto"
    plan = cyconv.plan(op, x.shape, w.shape, dtype=x.dtype.name, direction=public,
                       algorithm=alg, **kw)
    if candidate not in ("auto", "im2col", "direct"):
        candidate = candidate.removeprefix("kernel:")
        p = plan.params
        geom = (_plan.input_grad_as_forward(p) if candidate.endswith("_flipped")
                else p.geometry())
        plan = dataclasses.replace(plan, kernel=candidate, nonfinite=None, geometry=geom,
                                   phases=_plan.input_grad_phases(p)
                                   if candidate == "blocked_phases" else None)
    cv = plan.conv_direction
    if cv == "forward":
        return lambda: _cpu.conv_forward(plan, x, w, None)
    if cv == "backward_input":
        src = x if s.transposed else gy
        return lambda: _cpu.conv_backward_input(plan, src, w, None)
    img, col = (gy, x) if s.transposed else (x, gy)
    return lambda: _cpu.conv_backward_weight(plan, img, col)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", required=True, help="comma-separated layer names")
    ap.add_argument("--kernels", default="auto,im2col,direct",
                    help="comma-separated candidates (algorithms or kernel names)")
    ap.add_argument("--directions", default="forward,backward_input,backward_weight")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05)
    args = ap.parse_args(argv)

    import torch
    import cyconv
    from cyconv import _bench
    cyconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cands = [c.strip() for c in args.kernels.split(",") if c.strip()]
    print(f"threads {args.threads}, rounds {args.repeats}; ratio = time / PyTorch's time "
          f"(median of per-round ratios)")
    print("| layer | direction | " + " | ".join(cands) + " | torch ms |")
    print("|---|---|" + "---:|" * (len(cands) + 1))
    status = 0
    for s in _layers([n.strip() for n in args.layers.split(",") if n.strip()]):
        for direction in args.directions.split(","):
            if direction == "forward" and s.transposed:
                direction = "backward_input"
            case = _bench.build_case(s, "transposed" if s.transposed and
                                     direction == "backward_input" else direction,
                                     np.float32, (), torch, rng)
            x, w, gy = (case.arrays[k] for k in ("x", "w", "gy"))
            contenders = {"torch": case.contenders["torch"]}
            ref = np.asarray(contenders["torch"]())
            cells = {}
            for c in cands:
                try:
                    fn = _call(s, direction, c, x, w, gy)
                    ok, _ = _bench._close(fn(), ref, 2e-4)
                except Exception as exc:           # a kernel that does not apply
                    cells[c] = f"n/a ({type(exc).__name__})"
                    continue
                if not ok:
                    cells[c] = "MISMATCH"
                    status = 1
                    continue
                contenders[c] = fn
            with torch.no_grad():
                times, _ = _bench.measure(contenders, repeats=args.repeats,
                                          min_time=args.min_time, warmup=1)
            for c in contenders:
                if c != "torch":
                    cells[c] = f"{_bench.median_ratio(times[c], times['torch']):.2f}"
            print(f"| {s.name} | {direction} | " + " | ".join(cells[c] for c in cands)
                  + f" | {statistics.median(times['torch']) * 1e3:.3g} |", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
