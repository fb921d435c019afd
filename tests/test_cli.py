"""The command line (``python -m cyconv info | bench | demo``) and the benchmark harness.

The benchmark runs here on tiny shapes with few, short rounds: these tests check that
it runs, checks results and reports them, never how fast anything is.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import reference

import cyconv
from cyconv import __main__ as cli
from cyconv import _bench

# a bench run that takes a second or two: few rounds, short samples, a small matmul peak
FAST = ["--quick", "--repeats", "2", "--min-time", "0.001", "--warmup", "1",
        "--peak-size", "128"]


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "cyconv", *args], capture_output=True,
                          text=True, timeout=timeout)


# -- info, usage, demo ------------------------------------------------------------------

def test_info_runs_as_a_module():
    r = _run("info")
    assert r.returncode == 0, r.stderr
    top = dict((k.strip(), v.strip()) for k, v in (
        line.split(" :", 1) for line in r.stdout.splitlines()
        if " :" in line and not line.startswith(" ")))
    assert top["version"] == cyconv.__version__
    assert top["num_threads"] == str(cyconv.get_num_threads())
    for key in ("openmp", "blas", "simd", "cuda"):
        assert key in top, key


def test_info_json_is_cyconv_info(capsys):
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = cyconv.info()
    for key in ("version", "openmp", "num_threads", "simd"):
        assert data[key] == expected[key]


def test_format_info_nests_dicts_and_lists():
    text = cli.format_info({"version": "1.2", "blas": [{"library": "openblas"}],
                            "cuda": {"available": False}})
    assert text.splitlines() == ["version : 1.2", "blas    :", "  [0]",
                                 "    library : openblas", "cuda    :",
                                 "  available : False"]


def test_usage_version_and_unknown_command(capsys):
    assert cli.main([], prog="cyconv") == 2
    assert "usage: cyconv {info,bench,demo}" in capsys.readouterr().err
    assert cli.main(["--help"], prog="cyconv") == 0
    assert "commands:" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cyconv {cyconv.__version__}"
    assert cli.main(["launch"], prog="cyconv") == 2
    assert "cyconv: error: unknown command 'launch'" in capsys.readouterr().err


def test_demo_is_imported_lazily_and_gets_the_arguments(monkeypatch):
    r = subprocess.run([sys.executable, "-c", "import sys, cyconv.__main__; "
                        "print(sorted(m for m in ('cyconv._demo', 'cyconv._bench', 'torch') "
                        "if m in sys.modules))"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    seen = []
    fake = types.ModuleType("cyconv._demo")
    fake.main = lambda argv: seen.append(argv)
    monkeypatch.setitem(sys.modules, "cyconv._demo", fake)
    assert cli.main(["demo", "--epochs", "1"]) == 0
    assert seen == [["--epochs", "1"]]
    fake.main = lambda argv: 3
    assert cli.main(["demo"]) == 3


def test_demo_missing_dependency_is_named(monkeypatch, capsys):
    def fail(name):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    monkeypatch.delitem(sys.modules, "cyconv._demo", raising=False)
    monkeypatch.setattr(cli.importlib, "import_module", fail)
    assert cli.main(["demo"], prog="cyconv") == 1
    assert "module 'sklearn' is missing" in capsys.readouterr().err


# -- the shape table --------------------------------------------------------------------

def test_suites_hold_the_issue_shapes():
    by_name = {s.name: s for s in _bench.SUITES["full"]}
    assert set(s.name for s in _bench.SUITES["default"]) <= set(by_name)
    s = by_name["resnet3x3_56"]
    assert (s.x_shape, s.w_shape, s.padding) == ((8, 64, 56, 56), (64, 64, 3, 3), (1, 1))
    s = by_name["depthwise3x3_28"]
    assert (s.w_shape, s.groups, s.kind) == ((256, 1, 3, 3), 256, "depthwise")
    s = by_name["grouped3x3_g32"]
    assert (s.w_shape, s.kind) == ((128, 4, 3, 3), "grouped")
    s = by_name["stem7x7_s2"]
    assert s.params().y_shape == (8, 64, 112, 112)
    s = by_name["wavenet_k2_d8"]
    assert s.params().y_shape == (8, 64, 8192 - 8)
    s = by_name["convT_dcgan"]
    assert s.transposed and s.w_shape == (256, 128, 4, 4)
    assert s.params().y_shape == (16, 128, 16, 16)
    assert s.directions == ("transposed", "backward_input", "backward_weight")
    assert by_name["vocoder_convT1d"].params().y_shape == (4, 256, 8192)
    sweep = [s for s in _bench.SUITES["full"] if s.note == "dilation sweep"]
    assert sorted(s.dilation[0] for s in sweep) == [1, 4, 8, 16, 32]   # d2 is in default
    for s in sweep + [by_name["dilated3x3_d2"]]:
        assert s.padding == s.dilation and s.params().y_shape == (8, 64, 56, 56)
    for suite in _bench.SUITES.values():         # every entry is a valid layer
        for s in suite:
            assert s.params().flops > 0


def test_select_shapes_and_directions():
    assert [s.name for s in _bench.select_shapes("default", ["tiny_k3", "stem7x7_s2"])] == [
        "tiny_k3", "stem7x7_s2"]
    with pytest.raises(ValueError, match="unknown shape name.*resnet_99.*known: resnet3x3_56"):
        _bench.select_shapes("default", ["resnet_99"])
    with pytest.raises(ValueError, match="unknown suite 'huge'"):
        _bench.select_shapes("huge")
    assert _bench.parse_directions("forward, backward-weight") == ("forward",
                                                                   "backward_weight")
    assert _bench.parse_directions("all") == _bench.DIRECTIONS
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        _bench.parse_directions("forward,sideways")


def test_bench_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--shapes", "nope"], prog="cyconv")
    assert e.value.code == 2
    assert "unknown shape name(s) nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--threads", "0"], prog="cyconv")
    assert e.value.code == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_list_prints_every_suite(capsys):
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "suite full:" in out
    assert "convT_dcgan        16x256x8x8 -T-> 128, k4x4 s2 p1" in out


# -- the NumPy baseline and the checks ----------------------------------------------------

@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", [
    ((2, 4, 9), (6, 2, 3), (2,), ((1, 2),), (2,), 2),
    ((1, 3, 7, 6), (4, 3, 3, 2), (1, 2), ((1, 1), (0, 1)), (2, 1), 1),
    ((2, 4, 5, 5), (4, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    ((1, 2, 4, 5, 3), (2, 2, 2, 3, 1), (1, 2, 1), ((0, 0), (1, 1), (0, 0)), (1, 1, 2), 1),
])
def test_numpy_baseline_matches_the_naive_loops(x_shape, w_shape, stride, padding, dilation,
                                                groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y = _bench.numpy_conv(x, w, stride, padding, dilation, groups)
    expected = reference.conv_naive(x, w, stride=stride, padding=padding, dilation=dilation,
                                    groups=groups)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["digits_k3", "tiny_depthwise", "tiny_conv1d", "tiny_convT"])
def test_checks_without_torch_accept_right_and_flag_wrong_results(name):
    """The NumPy/adjoint checks pass the float64 reference and flag a 1e-3 perturbation."""
    s = _bench.select_shapes(names=[name])[0]
    rng = np.random.default_rng(2)
    for direction in s.directions:
        case = _bench.build_case(s, direction, np.float64, (), None, rng)
        x, w, gy = (case.arrays[k] for k in ("x", "w", "gy"))
        kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)
        tkw = dict(kw, output_padding=s.output_padding)
        right = {
            (False, "forward"): lambda: reference.conv(x, w, **kw),
            (False, "backward_input"): lambda: reference.conv_input_grad(x.shape, w, gy, **kw),
            (False, "backward_weight"): lambda: reference.conv_weight_grad(x, w.shape, gy,
                                                                           **kw),
            (True, "transposed"): lambda: reference.conv_transpose(x, w, **tkw),
            (True, "backward_input"): lambda: reference.conv_transpose_input_grad(
                x.shape, w, gy, **tkw),
            (True, "backward_weight"): lambda: reference.conv_transpose_weight_grad(
                x, w.shape, gy, **tkw),
        }[s.transposed, direction]
        exact = right()
        bump = np.zeros_like(exact)
        bump.flat[exact.size // 2] = 1e-3 * np.abs(exact).max()
        case.contenders = {"good": lambda: exact.copy(), "bad": lambda: exact + bump,
                           "shape": lambda: exact.ravel(),
                           "raises": lambda: 1 / 0}
        status = _bench.check_case(case, rng)
        assert status["good"] == "ok", (direction, status)
        assert status["bad"].startswith("MISMATCH"), (direction, status)
        assert status["shape"].startswith("MISMATCH"), (direction, status)
        assert status["raises"] == "error: ZeroDivisionError: division by zero"
        assert "raises" not in case.contenders


# -- timing -------------------------------------------------------------------------------

def test_measure_interleaves_and_rotates():
    calls = []
    contenders = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                  "c": lambda: calls.append("c")}
    times, number = _bench.measure(contenders, repeats=4, min_time=0.0, warmup=1,
                                   settle=False)
    assert number == {"a": 1, "b": 1, "c": 1}
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert "".join(calls) == "aabbcc" + "abc" + "bca" + "cab" + "abc"
    assert _bench.median_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


# -- end-to-end runs ------------------------------------------------------------------------

def _rows_by_case(result):
    return {(r["shape"], r["direction"]): r for r in result["rows"]}


def test_bench_smoke_against_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "report" / "cpu.md"
    argv = ["bench", *FAST, "--shapes", "digits_k3,tiny_convT", "--algorithms",
            "--out", str(out)]
    assert cli.main(argv, prog="cyconv") == 0
    captured = capsys.readouterr()
    assert "| shape " in captured.out and "| cyconv/torch |" in captured.out
    assert "geomean cyconv/torch" in captured.out
    assert "[6/6] tiny_convT" in captured.err
    result = json.loads(out.with_suffix(".json").read_text())
    rows = _rows_by_case(result)
    assert set(rows) == {("digits_k3", d) for d in ("forward", "backward_input",
                                                     "backward_weight")} | {
        ("tiny_convT", d) for d in ("transposed", "backward_input", "backward_weight")}
    for row in rows.values():
        assert set(row["check"].values()) == {"ok"}, row["check"]
        # winograd is timed where it applies (the 3x3 unit-stride layer)
        forced = {"cyconv:im2col", "cyconv:direct"} | (
            {"cyconv:winograd"} if row["shape"] == "digits_k3" else set())
        assert set(row["ratio_vs_torch"]) == {"cyconv"} | forced
        assert all(len(v) == 2 for v in row["samples_ms"].values())
        assert row["gflops"] > 0
        rt = row["ratio_vs_torch"]
        assert row["auto_vs_best"] == pytest.approx(
            rt["cyconv"] / min(rt[name] for name in forced))
    assert "'auto' against the faster forced algorithm:" in captured.out
    assert "| auto/best |" in captured.out
    assert result["summary"]["auto_vs_best"]["n"] == 6
    assert rows["digits_k3", "forward"]["speedup_vs_numpy"] > 0
    assert rows["tiny_convT", "transposed"]["speedup_vs_numpy"] is None
    assert result["torch"]["num_threads"] == result["settings"]["threads"]
    assert result["info"]["version"] == cyconv.__version__
    md = out.read_text()
    assert "cyconv bench --quick" in md and "## cyconv.info()" in md
    assert "| digits_k3 " in md


def test_bench_without_torch_compares_with_numpy(tmp_path, capsys):
    threads = cyconv.get_num_threads()
    argv = ["bench", *FAST, "--no-torch", "--threads", "1", "--shapes",
            "tiny_depthwise,tiny_convT", "--directions", "forward,transposed"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "NOTE: PyTorch disabled with --no-torch: no PyTorch comparison" in out
    assert "speed-up over NumPy" not in out        # depthwise is not a dense shape
    lines = [line for line in out.splitlines() if line.startswith("| tiny_")]
    assert len(lines) == 2 and all(re.search(r"\| ok +\|$", line) for line in lines)
    assert cyconv.get_num_threads() == threads    # the setting is restored


def test_bench_reports_a_mismatch_loudly(monkeypatch, capsys):
    right = cyconv.conv2d
    monkeypatch.setattr(cyconv, "conv2d", lambda *a, **k: right(*a, **k) * 1.01)
    argv = ["bench", *FAST, "--no-torch", "--shapes", "digits_k3", "--directions", "forward"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "!!! MISMATCH: cyconv on digits_k3 forward" in captured.err
    assert "!!! 1 MISMATCH(ES)" in captured.out


def test_plot_writes_a_png_or_says_why_not(tmp_path, monkeypatch):
    result = {"settings": {"algorithms": ["im2col"], "dtype": "float32", "threads": 2},
              "rows": [{"shape": "a", "direction": "forward",
                        "ratio_vs_torch": {"cyconv": 0.5, "cyconv:im2col": 1.5}}]}
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    assert _bench.plot(result, path) == f"plot written to {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert "matplotlib is not installed" in _bench.plot(result, tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


# -- the networks suite ---------------------------------------------------------------------

def test_networks_are_valid_layers_with_counts():
    from cyconv import _networks
    assert len(_networks.NETWORKS) >= 16
    for net in _networks.NETWORKS:
        names = [s.name for _, s in net.layers]
        assert len(names) == len(set(names)), net.name
        assert net.batch >= 1
        for count, s in net.layers:
            assert count >= 1 and s.batch == 1 and s.name.startswith(net.name + ".")
            s.params()                                  # a valid layer
    by = {n.name: n for n in _networks.NETWORKS}
    # the counts follow the reference networks: ResNet-50 has 53 convolutions (with its
    # 4 projection shortcuts), MobileNetV2 52, VGG-16 13, ResNet-20 (1x1 shortcuts) 21
    assert sum(c for c, _ in by["resnet50"].layers) == 53
    assert sum(c for c, _ in by["mobilenetv2"].layers) == 52
    assert sum(c for c, _ in by["vgg16"].layers) == 13
    assert sum(c for c, _ in by["resnet20_cifar"].layers) == 21
    # identical layers of one network are merged, their counts summed
    for net in _networks.NETWORKS:
        keys = [_networks._key(s) for _, s in net.layers]
        assert len(keys) == len(set(keys)), net.name


def test_networks_suite_times_shared_layers_once_and_sums_totals():
    from cyconv import _networks
    nets = _networks.select(["resnet50", "resnext50"])
    shapes, uses = _networks.suite(nets)
    assert len({_networks._key(s) for s in shapes}) == len(shapes)
    stem = [name for _, name, mode in uses["resnext50"] if "stem" in name]
    assert stem == ["resnet50.stem7x7_s2@b8", "resnet50.stem7x7_s2@b1"]   # shared
    assert all(s.inference == s.name.endswith("@b1") for s in shapes)
    # totals: count x time, summed per mode, and the ratio of the sums
    rows = []
    for s in shapes:
        for d in s.directions:
            rows.append({"shape": s.name, "direction": d, "ms": {"cyconv": 1.0, "torch": 2.0},
                         "ratio_vs_torch": {"cyconv": 0.5}, "kernel": "k"})
    rows[0]["ratio_vs_torch"]["cyconv"] = 1.5
    tot = {e["network"]: e for e in _networks.totals({"rows": rows}, nets, uses)}
    r50 = tot["resnet50"]
    convs = sum(c for c, _ in nets[0].layers)
    assert r50["train"]["cyconv_ms"] == pytest.approx(3 * convs)
    assert r50["infer"]["torch_ms"] == pytest.approx(2 * convs)
    assert r50["train"]["ratio"] == pytest.approx(0.5)
    assert r50["worst_ratio"] == 1.5 and r50["worst_case"].startswith(shapes[0].name)
    passes = _networks.pass_summary({"rows": rows})
    assert passes["over_limit"] == [(1.5, f"{shapes[0].name} forward", "k")]
    assert passes["cases"]["forward"] == len(shapes)


def test_networks_suite_runs_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "nets.md"
    argv = ["bench", *FAST, "--suite", "networks", "--networks", "lenet5", "--threads", "1",
            "--out", str(out)]
    assert cli.main(argv, prog="cyconv") == 0
    captured = capsys.readouterr()
    assert "| lenet5 " in captured.out and "train ratio" in captured.out
    assert "[12/12] lenet5.c5@b1" in captured.err
    md = out.read_text()
    assert md.index("## Networks") < md.index("## Results")
    result = json.loads(out.with_suffix(".json").read_text())
    (net,) = result["networks"]
    assert net["network"] == "lenet5" and net["train"]["ratio"] > 0
    for argv, message in ((["bench", "--suite", "networks", "--networks", "alexnet"],
                           "unknown network(s) alexnet"),
                          (["bench", "--networks", "lenet5"], "--networks needs --suite")):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err
