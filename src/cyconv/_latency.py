"""Small-op latency: the per-call cost of tiny ops, where Python overhead, not arithmetic,
decides (the digits demo, LeNet-size models, batch-1 streaming).

``python -m cyconv bench --latency`` times, at one thread by default, a tiny conv2d
(input (1, 16, 8, 8), 16 filters 3x3, padding 1) forward and both gradients, ReLU and
``max_pool2d(2)`` on the same input, each against PyTorch in the same process,
interleaved (:func:`cyconv._bench.measure`), and reports microseconds per call and the
median of the per-round ratios cyconv / PyTorch against the targets: 1.2 for the forward,
1.5 for each gradient, 2.0 for ReLU and pooling.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np

from ._bench import NumpyBlasThreads, _import_torch, measure, median_ratio

#: (name, target ratio) of each op, in the order they are reported.
OPS = (("conv2d forward", 1.2), ("conv2d input grad", 1.5), ("conv2d weight grad", 1.5),
       ("relu", 2.0), ("max_pool2d(2)", 2.0))
INPUT_SHAPE = (1, 16, 8, 8)
WEIGHT_SHAPE = (16, 16, 3, 3)


def contenders(torch, rng):
    """op name -> {'cyconv': fn, 'torch': fn}, and a check of each pair's results."""
    import cyconv

    x = rng.standard_normal(INPUT_SHAPE).astype(np.float32)
    w = (rng.standard_normal(WEIGHT_SHAPE) / 12).astype(np.float32)
    gy = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    cy = {"conv2d forward": lambda: cyconv.conv2d(x, w, padding=1),
          "conv2d input grad": lambda: cyconv.grad.conv2d_input(x.shape, w, gy, padding=1),
          "conv2d weight grad": lambda: cyconv.grad.conv2d_weight(x, w.shape, gy, padding=1),
          "relu": lambda: cyconv.relu(x),
          "max_pool2d(2)": lambda: cyconv.max_pool2d(x, 2)}
    F, tgrad = torch.nn.functional, torch.nn.grad
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    th = {"conv2d forward": lambda: F.conv2d(tx, tw, padding=1),
          "conv2d input grad": lambda: tgrad.conv2d_input(tx.shape, tw, tgy, padding=1),
          "conv2d weight grad": lambda: tgrad.conv2d_weight(tx, tw.shape, tgy, padding=1),
          "relu": lambda: F.relu(tx),
          "max_pool2d(2)": lambda: F.max_pool2d(tx, 2)}
    return {name: {"cyconv": cy[name], "torch": th[name]} for name, _ in OPS}


def run(threads=1, repeats=21, min_time=0.05, warmup=50, seed=0, progress=True) -> dict:
    """Time every op of :data:`OPS`; returns ``settings``, ``torch`` and ``rows``."""
    import cyconv

    torch, note = _import_torch(False)
    if torch is None:
        raise RuntimeError(f"the latency run compares with PyTorch: {note}")
    saved = cyconv.get_num_threads(), torch.get_num_threads()
    cyconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows = []
    try:
        with NumpyBlasThreads(threads), torch.no_grad():
            for name, target in OPS:
                fns = contenders(torch, np.random.default_rng(seed))[name]
                got, want = fns["cyconv"](), fns["torch"]().numpy()
                ok = bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
                times, number = measure(fns, repeats=repeats, min_time=min_time,
                                        warmup=warmup)
                ratio = median_ratio(times["cyconv"], times["torch"])
                row = {"op": name, "target": target, "check": "ok" if ok else "MISMATCH",
                       "us": {k: statistics.median(v) * 1e6 for k, v in times.items()},
                       "ratio": ratio, "met": ratio <= target and ok, "number": number}
                rows.append(row)
                if progress:
                    print(f"{name:<20} cyconv {row['us']['cyconv']:8.1f} us  torch "
                          f"{row['us']['torch']:8.1f} us  cyconv/torch {ratio:.2f} "
                          f"(target {target})", file=sys.stderr, flush=True)
    finally:
        cyconv.set_num_threads(saved[0])
        torch.set_num_threads(saved[1])
    return {"settings": {"threads": threads, "repeats": repeats, "min_time": min_time,
                         "warmup": warmup, "input": INPUT_SHAPE, "weight": WEIGHT_SHAPE},
            "torch": {"version": torch.__version__}, "rows": rows}


def table(result) -> str:
    head = "| op | cyconv us | torch us | cyconv/torch | target | met | check |"
    lines = [head, "|---|---:|---:|---:|---:|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['us']['cyconv']:.1f} | {r['us']['torch']:.1f} | "
                     f"{r['ratio']:.2f} | {r['target']} | {'yes' if r['met'] else 'NO'} | "
                     f"{r['check']} |")
    return "\n".join(lines)


def write_report(result, path, command) -> tuple:
    """Markdown at ``path`` and the JSON beside it."""
    md = Path(path)
    md.parent.mkdir(parents=True, exist_ok=True)
    st = result["settings"]
    text = (f"# Small-op latency, {st['threads']} thread(s)\n\n`{command}`\n\n"
            f"Input {st['input']}, weight {st['weight']} (padding 1), float32; PyTorch "
            f"{result['torch']['version']}; {st['repeats']} interleaved rounds, medians; "
            f"the ratio is the median of per-round ratios.\n\n{table(result)}\n")
    md.write_text(text)
    js = md.with_suffix(".json")
    js.write_text(json.dumps(result, indent=1, default=str))
    return str(md), str(js)
