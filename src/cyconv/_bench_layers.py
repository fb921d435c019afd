"""The CNN layers benchmark: batch norm and the activations against PyTorch.

``python -m cyconv bench --layers`` times, at 2 threads by default, one training step
(forward and backward) of ``BatchNorm2d`` and of each activation layer on an
``(8, 64, 56, 56)`` float32 tensor (a ResNet stage's activations), each against the
same PyTorch layer in the same process, interleaved (:func:`cyconv._bench.measure`).
PyTorch's backward is ``torch.autograd.grad`` (no accumulation into ``.grad``); cyconv's
is the layer's ``backward``.  It reports milliseconds per step and the median of the
per-round ratios cyconv / PyTorch against the target, 1.0.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from ._bench import NumpyBlasThreads, _import_torch, measure, median_ratio

SHAPE = (8, 64, 56, 56)
TARGET = 1.0
#: (row name, cyconv layer factory, torch layer factory): filled in by :func:`_layers`.
ROWS = ("BatchNorm2d", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "GELU(tanh)", "SiLU",
        "Softmax(dim=1)", "LogSoftmax(dim=1)")


def _layers(torch, name):
    """(cyconv layer, torch layer) of a row."""
    from . import nn
    tnn = torch.nn
    pairs = {
        "BatchNorm2d": lambda: (nn.BatchNorm2d(SHAPE[1]), tnn.BatchNorm2d(SHAPE[1])),
        "LeakyReLU": lambda: (nn.LeakyReLU(0.1), tnn.LeakyReLU(0.1)),
        "Sigmoid": lambda: (nn.Sigmoid(), tnn.Sigmoid()),
        "Tanh": lambda: (nn.Tanh(), tnn.Tanh()),
        "GELU": lambda: (nn.GELU(), tnn.GELU()),
        "GELU(tanh)": lambda: (nn.GELU("tanh"), tnn.GELU("tanh")),
        "SiLU": lambda: (nn.SiLU(), tnn.SiLU()),
        "Softmax(dim=1)": lambda: (nn.Softmax(1), tnn.Softmax(1)),
        "LogSoftmax(dim=1)": lambda: (nn.LogSoftmax(1), tnn.LogSoftmax(1)),
    }
    return pairs[name]()


def contenders(torch, name, rng):
    """{'cyconv': step, 'torch': step} of one row, and a check that they agree."""
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    gy = rng.standard_normal(SHAPE).astype(np.float32)
    ours, theirs = _layers(torch, name)
    tx = torch.from_numpy(x).requires_grad_()
    tgy = torch.from_numpy(gy)
    inputs = [tx] + list(theirs.parameters())

    def cy_step():
        y = ours(x)
        return y, ours.backward(gy)

    def torch_step():
        y = theirs(tx)
        return y, torch.autograd.grad(y, inputs, tgy)[0]

    (y, gx), (ty, tgx) = cy_step(), torch_step()
    ok = (np.allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
          and np.allclose(gx, tgx.numpy(), rtol=1e-3, atol=1e-4))
    return {"cyconv": cy_step, "torch": torch_step}, ok


def run(threads=2, repeats=7, min_time=0.05, warmup=2, seed=0, progress=True) -> dict:
    """Time every row of :data:`ROWS`; returns ``settings``, ``torch`` and ``rows``."""
    import cyconv

    torch, note = _import_torch(False)
    if torch is None:
        raise RuntimeError(f"the layers benchmark compares with PyTorch: {note}")
    saved = cyconv.get_num_threads(), torch.get_num_threads()
    cyconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows = []
    load = [os.getloadavg()[0]]
    try:
        with NumpyBlasThreads(threads):
            for name in ROWS:
                fns, ok = contenders(torch, name, np.random.default_rng(seed))
                times, number = measure(fns, repeats=repeats, min_time=min_time,
                                        warmup=warmup)
                ratio = median_ratio(times["cyconv"], times["torch"])
                row = {"layer": name, "target": TARGET, "check": "ok" if ok else "MISMATCH",
                       "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
                       "ratio": ratio, "met": ratio <= TARGET and ok, "number": number}
                rows.append(row)
                if progress:
                    print(f"{name:<18} cyconv {row['ms']['cyconv']:7.2f} ms  torch "
                          f"{row['ms']['torch']:7.2f} ms  cyconv/torch {ratio:.2f}",
                          file=sys.stderr, flush=True)
    finally:
        cyconv.set_num_threads(saved[0])
        torch.set_num_threads(saved[1])
    load.append(os.getloadavg()[0])
    return {"settings": {"threads": threads, "repeats": repeats, "min_time": min_time,
                         "warmup": warmup, "shape": SHAPE, "dtype": "float32",
                         "load_average": load},
            "torch": {"version": torch.__version__}, "info": cyconv.info(), "rows": rows}


def table(result) -> str:
    head = ("| layer (forward + backward) | cyconv ms | torch ms | cyconv/torch | target | met "
            "| check |")
    lines = [head, "|---|---:|---:|---:|---:|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['layer']} | {r['ms']['cyconv']:.2f} | {r['ms']['torch']:.2f} | "
                     f"{r['ratio']:.2f} | {r['target']} | {'yes' if r['met'] else 'NO'} | "
                     f"{r['check']} |")
    return "\n".join(lines)


def write_report(result, path, command) -> tuple:
    """Markdown at ``path`` and the JSON beside it."""
    md = Path(path)
    md.parent.mkdir(parents=True, exist_ok=True)
    st, info = result["settings"], result["info"]
    text = (f"# CNN layers, {st['threads']} thread(s)\n\n`{command}`\n\n"
            f"One training step (layer forward + backward) on a {st['shape']} {st['dtype']} "
            f"tensor; PyTorch {result['torch']['version']} (backward by "
            f"`torch.autograd.grad`); {st['repeats']} interleaved rounds, medians; the ratio "
            f"is the median of per-round ratios.  cyconv {info.get('version')}, kernels "
            f"{info.get('simd')}, OpenMP {info.get('openmp')}; {os.cpu_count()} CPUs, load "
            f"average {st['load_average'][0]:.1f} at the start and "
            f"{st['load_average'][1]:.1f} at the end (a shared machine: only the ratios, "
            f"taken side by side, hold).\n\n{table(result)}\n")
    md.write_text(text)
    js = md.with_suffix(".json")
    js.write_text(json.dumps(result, indent=1, default=str))
    return str(md), str(js)


def cli(args, argv, prog, repeats, min_time) -> int:
    """``python -m cyconv bench --layers`` (called by :func:`cyconv._bench.main`)."""
    result = run(threads=args.threads or 2, repeats=repeats, min_time=min_time,
                 seed=args.seed)
    print(table(result))
    if args.out:
        md, js = write_report(result, args.out, " ".join([prog] + argv))
        print(f"report written to {md} and {js}", file=sys.stderr)
    return 1 if any(r["check"] != "ok" for r in result["rows"]) else 0
