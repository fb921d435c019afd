"""Runtime: threads, ``CYCONV_NUM_THREADS``, ``cyconv.info()``, OpenMP really running,
coexistence with PyTorch, fork safety and the baseline-ISA kernels.

Anything that could abort or hang the process (another OpenMP runtime, ``fork`` after a
threaded region, environment variables read at import) runs in a child process with a
timeout, so a failure is reported instead of taking the session down.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import cyconv
from conftest import assert_close, run_python


# -- threads --------------------------------------------------------------------------------

def test_set_and_get_num_threads(num_threads):
    for n in (1, 3, 2, np.int64(4)):
        num_threads(n)
        assert cyconv.get_num_threads() == int(n)
        assert type(cyconv.get_num_threads()) is int
        assert cyconv.info()["num_threads"] == int(n)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, False, "2", None, (2,), np.float64(2)])
def test_set_num_threads_rejects_bad_values(bad, num_threads):
    before = cyconv.get_num_threads()
    with pytest.raises(ValueError, match=r"set_num_threads: n must be a positive int"):
        cyconv.set_num_threads(bad)
    assert cyconv.get_num_threads() == before


def test_absurd_thread_count_does_not_crash():
    """A huge request is capped or refused (ValueError), never a crash."""
    proc = run_python(["-c", _ABSURD_THREADS], timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"set_num_threads(100_000) then a conv: return code {proc.returncode}\n"
        + _stderr(proc))


_ABSURD_THREADS = r"""
import numpy as np, cyconv
x = np.ones((8, 16, 32, 32), np.float32); w = np.ones((16, 16, 3, 3), np.float32)
expected = cyconv.conv2d(x, w, padding=1)
try:
    cyconv.set_num_threads(100_000)
except ValueError:
    print("refused ok")
else:
    for algorithm in ("im2col", "direct"):
        assert np.array_equal(cyconv.conv2d(x, w, padding=1, algorithm=algorithm), expected)
    print("capped ok")
"""


def _stderr(proc):
    return "\n".join(line for line in proc.stderr.splitlines()
                     if not line.startswith("Extension modules"))[-3000:]


def _child_json(code, env=None, timeout=120):
    proc = run_python(["-c", code], timeout=timeout, env=env)
    assert proc.returncode == 0, f"return code {proc.returncode}\n{_stderr(proc)}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_env_num_threads_is_honoured():
    out = _child_json("import json, cyconv; print(json.dumps([cyconv.get_num_threads(), "
                      "cyconv.info()['num_threads']]))", env={"CYCONV_NUM_THREADS": "3"})
    assert out == [3, 3]


def test_set_num_threads_overrides_env():
    out = _child_json("import json, cyconv; cyconv.set_num_threads(1); "
                      "print(json.dumps(cyconv.get_num_threads()))",
                      env={"CYCONV_NUM_THREADS": "3"})
    assert out == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_env_num_threads_raises_value_error(value):
    code = ("import json, cyconv\n"
            "try:\n"
            "    cyconv.get_num_threads(); print(json.dumps('no error'))\n"
            "except ValueError as exc:\n"
            "    print(json.dumps(str(exc)))\n")
    out = _child_json(code, env={"CYCONV_NUM_THREADS": value})
    assert out == f"CYCONV_NUM_THREADS must be a positive integer, got {value!r}"


# -- info() and OpenMP ------------------------------------------------------------------------

def test_info_keys_and_types():
    info = cyconv.info()
    for key in ("version", "openmp", "num_threads", "blas", "simd", "cuda"):
        assert key in info, key
    assert info["version"] == cyconv.__version__
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] == cyconv.get_num_threads()
    assert isinstance(info["blas"], list) and info["blas"]
    assert info["simd"] in ("base", "avx2")
    assert isinstance(info["cuda"], dict) and "available" in info["cuda"]
    json.dumps(info)     # pasteable into a bug report


@pytest.mark.parametrize("n", [2, 3])
def test_openmp_really_runs_threads(n, num_threads):
    """Fails when OpenMP is reported on but a parallel region runs one thread."""
    num_threads(n)
    info = cyconv.info()
    if info["openmp"]:
        assert info["openmp_threads_seen"] == n, (
            f"OpenMP is on, but a parallel region of {n} threads ran "
            f"{info['openmp_threads_seen']}")
    else:
        assert info["openmp_threads_seen"] == 1


def test_openmp_was_built():
    """This build machine has a working OpenMP: the build must have found it."""
    info = cyconv.info()
    assert info.get("openmp_built", info["openmp"]) == info["openmp"]
    assert info["openmp"], "cyconv was built without OpenMP"


def test_workspace_limit_rejects_bad_values(workspace_limit):
    for bad in (0, -1, 1.5, True, "1024", None):
        with pytest.raises(ValueError, match=r"set_workspace_limit: nbytes must be a positive int"):
            cyconv.set_workspace_limit(bad)
    workspace_limit(4096)
    assert cyconv.get_workspace_limit() == 4096


# -- PyTorch in the same process --------------------------------------------------------------

_WITH_TORCH = r"""
import sys
order = sys.argv[1]
if order == "torch-first":
    import torch
import numpy as np, cyconv
cyconv.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
y0 = {a: cyconv.conv2d(x, w, padding=1, algorithm=a) for a in ("im2col", "direct")}
if order == "cyconv-first":
    import torch
torch.set_num_threads(2)
expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                      padding=1).numpy()
scale = np.abs(expected).max()
for a in ("im2col", "direct"):
    for y in (y0[a], cyconv.conv2d(x, w, padding=1, algorithm=a)):
        err = np.abs(y - expected).max() / scale
        assert err < 1e-5, (a, err)
    gw = cyconv.grad.conv2d_weight(x, w.shape, np.ones((4, 16, 24, 24), np.float32), padding=1,
                                   algorithm=a)
    assert np.isfinite(gw).all()
# torch still works after cyconv ran its threads
assert torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2)).sum() == 36
info = cyconv.info()
assert info["openmp_threads_seen"] == 2 or not info["openmp"], info["openmp_threads_seen"]
print("ok")
"""


@pytest.mark.parametrize("order", ["torch-first", "cyconv-first"])
def test_works_with_torch_imported(order):
    pytest.importorskip("torch")
    proc = run_python(["-c", _WITH_TORCH, order], timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"{order}: return code {proc.returncode}\n{_stderr(proc)}")


# -- fork ----------------------------------------------------------------------------------------

_FORK = r"""
import multiprocessing as mp
import numpy as np, cyconv

def work(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    return [cyconv.conv2d(x, w, padding=1, algorithm=a) for a in ("im2col", "direct")] + [
        cyconv.grad.conv2d_weight(x, w.shape, np.ones((4, 16, 24, 24), np.float32), padding=1)]

def child(q):
    q.put((cyconv.get_num_threads(), work(1)))

def same(a, b):
    # a forked child runs serially (libgomp's pool does not survive fork), so compare
    # with the two-thread parent to rounding, not bit for bit
    return np.allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))

if __name__ == "__main__":
    cyconv.set_num_threads(2)
    expected = work(1)          # the parent used its thread pool before forking
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    try:
        threads, got = q.get(timeout=60)
    except Exception:
        p.kill()
        raise SystemExit("HANG: the forked child produced nothing within 60 s")
    p.join(30)
    assert p.exitcode == 0, p.exitcode
    assert threads == 1, threads
    for a, b in zip(got, expected):
        assert same(a, b)
    # DataLoader-style: a pool of forked workers
    with ctx.Pool(2) as pool:
        res = pool.map_async(work, [1, 1, 1])
        for got in res.get(timeout=90):
            for a, b in zip(got, expected):
                assert same(a, b)
    print("ok")
"""


def test_conv_in_forked_child_after_threaded_parent(tmp_path):
    script = tmp_path / "fork_check.py"
    script.write_text(_FORK)
    proc = run_python([str(script)], timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"return code {proc.returncode}\n{proc.stdout[-1000:]}\n{_stderr(proc)}")


# -- ISA variants ---------------------------------------------------------------------------------

_ISA_OUTPUTS = r"""
import sys
import numpy as np, cyconv
rng = np.random.default_rng(0)
out = {"simd": np.array(cyconv.info()["simd"])}
for dtype in (np.float32, np.float64):
    x = rng.standard_normal((3, 6, 13, 11)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    gy = rng.standard_normal((3, 8, 7, 11)).astype(dtype)
    kw = dict(stride=(2, 1), padding="same", dilation=(1, 2), groups=2)
    for a in ("im2col", "direct"):
        key = f"{np.dtype(dtype).name}-{a}"
        out["forward-" + key] = cyconv.conv2d(x, w, b, **kw, algorithm=a)
        out["input-" + key] = cyconv.grad.conv2d_input(x.shape, w, gy, **kw, algorithm=a)
        out["weight-" + key] = cyconv.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm=a)
        xt = rng.standard_normal((2, 8, 5, 6)).astype(dtype)
        out["transpose-" + key] = cyconv.conv_transpose2d(xt, w, None, stride=2, padding=1,
                                                          output_padding=1, groups=2,
                                                          algorithm=a)
        x1 = rng.standard_normal((2, 4, 50)).astype(dtype)
        w1 = rng.standard_normal((6, 4, 5)).astype(dtype)
        out["conv1d-" + key] = cyconv.conv1d(x1, w1, stride=3, padding=2, algorithm=a)
        x3 = rng.standard_normal((1, 3, 5, 6, 7)).astype(dtype)
        w3 = rng.standard_normal((4, 3, 3, 3, 3)).astype(dtype)
        out["conv3d-" + key] = cyconv.conv3d(x3, w3, padding=1, algorithm=a)
np.savez(sys.argv[1], **out)
print("ok")
"""


def test_baseline_isa_matches_default(tmp_path):
    results = {}
    for isa in ("base", None):
        path = tmp_path / f"{isa}.npz"
        proc = run_python(["-c", _ISA_OUTPUTS, str(path)], timeout=180,
                          env={"CYCONV_ISA": isa})
        assert proc.returncode == 0, f"CYCONV_ISA={isa}: {proc.returncode}\n{_stderr(proc)}"
        results[isa] = dict(np.load(path))
    base, default = results["base"], results[None]
    assert str(base.pop("simd")) == "base"
    assert str(default.pop("simd")) == cyconv.info()["simd"]
    assert base.keys() == default.keys()
    for key in base:
        dtype = base[key].dtype
        assert_close(base[key], default[key].astype(np.float64), dtype, kind="parity",
                     what=f"{key}: CYCONV_ISA=base vs default")


def test_unknown_isa_is_a_clear_error():
    proc = run_python(["-c", "import cyconv"], timeout=60, env={"CYCONV_ISA": "avx9000"})
    assert proc.returncode != 0
    assert "CYCONV_ISA must be 'auto', 'base' or 'avx2', got 'avx9000'" in proc.stderr
