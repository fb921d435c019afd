"""Relative L2 error of algorithm='winograd' (and, for scale, of cyconv's direct kernel and
PyTorch's float32 convolution) against a float64 convolution of the same rounded inputs,
on N(0, 1) data: ``python benchmarks/winograd_accuracy.py`` (needs PyTorch)."""
import numpy as np
import torch

import cyconv

LAYERS = [  # (input, weight, algorithm='winograd' kernel expected)
    ((8, 64, 56, 56), (64, 64, 3, 3)),
    ((8, 256, 14, 14), (256, 256, 3, 3)),
    ((2, 512, 28, 28), (512, 512, 3, 3)),
    ((8, 512, 7, 7), (512, 512, 3, 3)),
    ((32, 16, 32, 32), (16, 16, 3, 3)),
    ((2, 32, 16, 32, 32), (32, 32, 3, 3, 3)),
    ((16, 64, 4096), (64, 64, 3)),
]


def rel(a, ref):
    return float(np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref))


def main():
    rng = np.random.default_rng(0)
    print("| layer | kernel | dtype | winograd fwd | winograd input grad | direct fwd | "
          "torch fwd |")
    print("|---|---|---|---:|---:|---:|---:|")
    for xs, ws in LAYERS:
        nd = len(xs) - 2
        conv, tconv = getattr(cyconv, f"conv{nd}d"), getattr(torch.nn.functional, f"conv{nd}d")
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            gy = rng.standard_normal(xs[:1] + ws[:1] + xs[2:]).astype(dtype)
            t64 = [torch.from_numpy(a.astype(np.float64)) for a in (x, w, gy)]
            ref = tconv(t64[0], t64[1], padding=1).numpy()
            ref_gx = torch.nn.grad.__dict__[f"conv{nd}d_input"](xs, t64[1], t64[2],
                                                                 padding=1).numpy()
            y = conv(x, w, padding=1, algorithm="winograd")
            gx = getattr(cyconv.grad, f"conv{nd}d_input")(xs, w, gy, padding=1,
                                                          algorithm="winograd")
            kernel = cyconv.plan(f"conv{nd}d", xs, ws, dtype=np.dtype(dtype).name, padding=1,
                                 algorithm="winograd").kernel
            d = conv(x, w, padding=1, algorithm="direct")
            t = tconv(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
            print(f"| {xs} x {ws[0]} | {kernel} | {np.dtype(dtype).name} | {rel(y, ref):.2e} | "
                  f"{rel(gx, ref_gx):.2e} | {rel(d, ref):.2e} | {rel(t, ref):.2e} |",
                  flush=True)


if __name__ == "__main__":
    main()
