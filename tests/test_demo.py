"""``python -m cyconv demo``: one epoch end to end, its PNG, and its helpers."""
from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest

import cyconv
from cyconv import _demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _needs_demo_extra():
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")


def test_demo_one_epoch_writes_png(tmp_path, capsys):
    _needs_demo_extra()
    out = tmp_path / "demo.png"
    assert _demo.main(["--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert "\r" not in text                             # not a terminal: no redraws
    assert len(re.findall(r"^epoch 1/1 \[#+\] 45/45  loss \d+\.\d{4}  acc +\d+\.\d%  \| "
                          r"held-out +\d+\.\d%", text, re.M)) == 1
    assert "wall time:" in text
    acc = float(re.search(r"held-out accuracy: (\d+\.\d+)%", text).group(1))
    assert acc > 30.0                                    # chance is 10 %


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_redraws_per_batch_on_a_terminal():
    _needs_demo_extra()
    x_tr, y_tr, x_te, y_te = _demo.load_digits_split()
    assert _demo.BATCH_SIZE == 32
    term, log = _Terminal(), io.StringIO()
    for out in (term, log):
        cyconv.manual_seed(0)
        model = _demo.build_model()
        _demo.train(model, (x_tr[:96], y_tr[:96], x_te[:32], y_te[:32]), epochs=2, seed=0,
                    out=out)
    # 96 images in batches of _demo.BATCH_SIZE = 32: three redraws per epoch on the terminal ...
    assert term.getvalue().count("\repoch 1/2 [") == 3
    assert term.getvalue().count("\repoch 2/2 [") == 3
    # ... and one line per epoch, the same numbers, in a log.
    lines = log.getvalue().split("\n")[:-1]
    assert [line[:12] for line in lines] == ["epoch 1/2 [#", "epoch 2/2 [#"]
    last = [part.rsplit("\r", 1)[-1] for part in term.getvalue().split("\n")[:-1]]
    assert [line.rsplit("(", 1)[0] for line in last] == \
        [line.rsplit("(", 1)[0] for line in lines]


def test_demo_runs_as_a_module(tmp_path):
    """The command line a user types, in a fresh process."""
    _needs_demo_extra()
    out = tmp_path / "cli.png"
    proc = subprocess.run([sys.executable, "-m", "cyconv", "demo", "--epochs", "1", "--seed",
                           "3", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "held-out accuracy:" in proc.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_demo_reports_missing_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_demo, "_importable", lambda name: name != "sklearn")
    assert _demo.main(["--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "needs sklearn" in err and "pip install 'cyconv[demo]'" in err
    assert not (tmp_path / "x.png").exists()


def test_demo_rejects_bad_options(capsys):
    assert _demo.main(["--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _demo.main(["--device", "tpu"])


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1, (64, 1, 8, 8)).astype(np.float32)
    y = _demo.random_shift(x, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    offsets = []
    for xi, yi in zip(x[:, 0], y[:, 0]):
        padded = np.pad(xi, 1)
        matches = [(dy, dx) for dy in range(3) for dx in range(3)
                   if np.array_equal(yi, padded[dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1
        offsets += matches
    assert len(set(offsets)) == 9        # every offset occurs among 64 images


def test_demo_model_shapes():
    cyconv.manual_seed(0)
    model = _demo.build_model()
    y = model(np.zeros((3, 1, 8, 8), np.float32))
    assert y.shape == (3, 10)
    assert model.backward(np.ones_like(y)).shape == (3, 1, 8, 8)
