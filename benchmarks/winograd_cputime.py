"""CPU time (not wall time) of the winograd-suite layers at 1 thread: cyconv with each
algorithm forced and PyTorch, interleaved, the minimum of 5 rounds each.  CPU time is
what a busy shared machine disturbs least (wall-clock ratios at 2 threads swing by 2x
there, see winograd.md).  ``python benchmarks/winograd_cputime.py`` (needs PyTorch)."""
import math
import time

import numpy as np
import torch

import cyconv
from cyconv._bench import WINOGRAD_SHAPES


def cpu_min(fn, rounds):
    best = math.inf
    for _ in range(rounds):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main(rounds=5):
    cyconv.set_num_threads(1)
    torch.set_num_threads(1)
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    peak = 2 * 2048**3 / min(cpu_min(lambda: torch.from_numpy(a) @ torch.from_numpy(a), 3)
                             for _ in range(2)) / 1e9
    print(f"float32 matmul peak, 1 thread (torch 2048^2, CPU time): {peak:.1f} GFLOP/s\n")
    print("| layer | direction | auto kernel | winograd ms | GFLOP/s (eff.) | winograd/torch | "
          "direct/torch | im2col/torch |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for s in WINOGRAD_SHAPES:
        p = s.params()
        x = rng.standard_normal(p.x_shape).astype(np.float32)
        w = (rng.standard_normal(p.w_shape) / math.sqrt(9 * p.w_shape[1])).astype(np.float32)
        gy = rng.standard_normal(p.y_shape).astype(np.float32)
        tx, tw, tgy = (torch.from_numpy(v) for v in (x, w, gy))
        for direction in ("forward", "input"):
            if direction == "forward":
                cy = {a: (lambda a=a: cyconv.conv2d(x, w, padding=1, algorithm=a))
                      for a in ("winograd", "direct", "im2col")}
                tfn = lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
            else:
                cy = {a: (lambda a=a: cyconv.grad.conv2d_input(x.shape, w, gy, padding=1,
                                                               algorithm=a))
                      for a in ("winograd", "direct", "im2col")}
                tfn = lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tgy, padding=1)
            fns = dict(cy, torch=tfn)
            for f in fns.values():
                f()
            best = {k: math.inf for k in fns}
            with torch.no_grad():
                for _ in range(rounds):
                    for k, f in fns.items():
                        best[k] = min(best[k], cpu_min(f, 1))
            kernel = cyconv.plan("conv2d", x.shape, w.shape, padding=1,
                                 direction=direction).kernel
            r = {k: best[k] / best["torch"] for k in cy}
            print(f"| {s.name} | {direction} | {kernel} | {best['winograd'] * 1e3:.2f} | "
                  f"{p.flops / best['winograd'] / 1e9:.0f} | {r['winograd']:.2f} | "
                  f"{r['direct']:.2f} | {r['im2col']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
