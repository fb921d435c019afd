"""A/B of two builds, bit for bit: every op's output over the test suite's grids.

A refactor that must not change results (the plans, a build-system move) is checked by
running this once with each build, then comparing::

    /path/to/old/venv/bin/python benchmarks/ab_outputs.py save old.npz
    /path/to/new/venv/bin/python benchmarks/ab_outputs.py save new.npz
    python benchmarks/ab_outputs.py compare old.npz new.npz

``save`` runs the convolution grid of ``tests/conftest.py`` (plus its special cases and
the blocked-kernel and output-phase cases of ``tests/test_blocked.py``) forward and both
gradients with 'auto', 'im2col' and 'direct', float32 and float64, at 1 and 2 threads,
and ReLU and max pooling.  Only the public API is used, so any two builds compare.
"""
from __future__ import annotations

import os
import sys

import numpy as np

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def _cases():
    sys.path.insert(0, TESTS)
    import test_blocked
    from conftest import SPECIAL_CONV_CASES, conv_grid
    return (conv_grid() + SPECIAL_CONV_CASES + list(test_blocked.BLOCKED_CASES),
            list(test_blocked.PHASE_CASES))


def save(path):
    import cyconv
    cases, phases = _cases()
    out = {}
    for threads in (1, 2):
        cyconv.set_num_threads(threads)
        for ci, case in enumerate(cases):
            for dt in (np.float32, np.float64):
                x, w, b = case.numpy_arrays(dt)
                gy = case.grad_output(dt)
                for alg in ("auto", "im2col", "direct"):
                    key = f"{threads}/{case.id}/{dt.__name__}/{alg}"
                    kw = dict(case.kwargs, algorithm=alg)
                    out[key + "/y"] = getattr(cyconv, case.op)(x, w, b, **kw)
                    out[key + "/gx"] = getattr(cyconv.grad, case.op + "_input")(
                        x.shape, w, gy, **kw)
                    out[key + "/gw"] = getattr(cyconv.grad, case.op + "_weight")(
                        x, w.shape, gy, **kw)
        for pi, (nd, N, C, K, G, size, k, s, pad, op) in enumerate(phases):
            tup = lambda v: v if isinstance(v, tuple) else (v,) * nd  # noqa: E731
            rng = np.random.default_rng(7)
            for dt in (np.float32, np.float64):
                x = rng.standard_normal((N, C) + size).astype(dt)
                w = rng.standard_normal((C, K // G) + tup(k)).astype(dt)
                b = rng.standard_normal(K).astype(dt)
                for alg in ("auto", "im2col", "direct"):
                    out[f"{threads}/phase{pi}/{dt.__name__}/{alg}"] = getattr(
                        cyconv, f"conv_transpose{nd}d")(x, w, b, stride=s, padding=pad,
                                                        output_padding=op, groups=G,
                                                        algorithm=alg)
        x = np.random.default_rng(1).standard_normal((3, 16, 12, 12)).astype(np.float32)
        out[f"{threads}/relu"] = cyconv.relu(x)
        out[f"{threads}/max_pool2d"], out[f"{threads}/max_pool2d/indices"] = \
            cyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    np.savez(path, **out)
    print(f"{len(out)} arrays written to {path}")


def compare(a_path, b_path) -> int:
    a, b = np.load(a_path), np.load(b_path)
    if set(a.files) != set(b.files):
        print(f"different sets of arrays: {sorted(set(a.files) ^ set(b.files))[:10]}")
        return 1
    diff = [k for k in a.files
            if a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()]
    print(f"{len(a.files)} arrays compared, {len(diff)} differ" +
          (f": {diff[:20]}" if diff else " (bit-identical)"))
    return 1 if diff else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
