"""``cyconv.optim``: SGD and Adam against ``torch.optim`` over several steps.

Both optimizers see the same parameters and, at every step, the same gradients (a
fixed function of the current parameters plus a step-dependent term, so momentum and
the moment estimates are exercised); the parameters must agree after every step.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cyconv
from conftest import DTYPES, assert_close, torch_or_skip
from cyconv import nn, optim

SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


def gradient(p, step, k):
    """A deterministic gradient: that of ``sum((p - c)^2 + cos(step) * p)``-like terms."""
    return 2 * (p - 0.3 * k) + np.cos(step + k) * np.sign(p + 0.1)


def run_both(dtype, cy_factory, torch_factory, steps=6, none_grad_index=None):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    cparams = [nn.Parameter(v.copy()) for v in values]
    tparams = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    copt = cy_factory(cparams)
    topt = torch_factory(tparams)
    for step in range(steps):
        for k, (cp, tp) in enumerate(zip(cparams, tparams)):
            if k == none_grad_index:
                cp.grad, tp.grad = None, None
                continue
            g = gradient(cp.data.astype(np.float64), step, k).astype(dtype)
            cp.grad = g
            tp.grad = torch.tensor(g.copy())
        copt.step()
        topt.step()
        for k, (cp, tp) in enumerate(zip(cparams, tparams)):
            assert cp.data.dtype == np.dtype(dtype)
            assert_close(cp.data, tp.detach().numpy().astype(np.float64), dtype,
                         kind="parity", what=f"step {step}, parameter {k}")
    return cparams, values


SGD_CONFIGS = [dict(lr=0.1), dict(lr=0.05, momentum=0.9),
               dict(lr=0.05, momentum=0.9, nesterov=True),
               dict(lr=0.1, weight_decay=0.01),
               dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
               dict(lr=0.05, momentum=0.9, dampening=0.5)]

ADAM_CONFIGS = [dict(), dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
                dict(lr=0.01, weight_decay=0.05), dict(lr=0.01, betas=(0.3, 0.9)),
                dict(lr=0.01, amsgrad=True)]


def _id(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items()) or "defaults"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=[_id(c) for c in SGD_CONFIGS])
def test_sgd_matches_torch(cfg, dtype):
    torch = torch_or_skip()
    run_both(dtype, lambda ps: optim.SGD(ps, **cfg), lambda ps: torch.optim.SGD(ps, **cfg))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=[_id(c) for c in ADAM_CONFIGS])
def test_adam_matches_torch(cfg, dtype):
    torch = torch_or_skip()
    run_both(dtype, lambda ps: optim.Adam(ps, **cfg), lambda ps: torch.optim.Adam(ps, **cfg))


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_parameters_without_grad_are_skipped(name):
    torch = torch_or_skip()
    kw = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    cparams, values = run_both(np.float64, lambda ps: getattr(optim, name)(ps, **kw),
                               lambda ps: getattr(torch.optim, name)(ps, **kw),
                               none_grad_index=1)
    np.testing.assert_array_equal(cparams[1].data, values[1])


def test_param_groups_match_torch():
    torch = torch_or_skip()

    def groups(ps):
        return [{"params": ps[:1], "lr": 0.01}, {"params": ps[1:], "momentum": 0.5}]

    run_both(np.float64, lambda ps: optim.SGD(groups(ps), lr=0.1, momentum=0.9),
             lambda ps: torch.optim.SGD(groups(ps), lr=0.1, momentum=0.9))


def test_sgd_first_step_by_hand():
    """Plain float64 arithmetic for two steps of momentum SGD with weight decay."""
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([0.2, 0.4])
    opt.step()
    g1 = np.array([0.2, 0.4]) + 0.5 * np.array([1.0, -2.0])          # buf = g1
    p1 = np.array([1.0, -2.0]) - 0.1 * g1
    np.testing.assert_allclose(p.data, p1, rtol=1e-15)
    opt.step()                                                         # same grad again
    g2 = np.array([0.2, 0.4]) + 0.5 * p1
    buf = 0.9 * g1 + g2
    np.testing.assert_allclose(p.data, p1 - 0.1 * buf, rtol=1e-15)


def test_adam_first_step_is_lr_times_sign():
    """After bias correction, Adam's first step is lr * g / (|g| + eps) ~ lr * sign(g)."""
    p = nn.Parameter(np.array([0.5, -0.5, 2.0]))
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([3.0, -0.2, 1e-3])
    opt.step()
    expected = np.array([0.5, -0.5, 2.0]) - 0.01 * np.array([3.0, -0.2, 1e-3]) / (
        np.abs([3.0, -0.2, 1e-3]) + 1e-8)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12)


def test_updates_are_in_place_and_zero_grad():
    layer = nn.Linear(3, 2)
    w = layer.weight.data
    opt = optim.Adam(layer.parameters(), lr=0.1)
    layer(np.ones((4, 3), np.float32))
    layer.backward(np.ones((4, 2), np.float32))
    before = w.copy()
    opt.step()
    assert layer.weight.data is w and not np.array_equal(w, before)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(layer.weight.grad, 0)
    opt.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_training_reduces_loss():
    """A tiny regression: 30 SGD steps on a conv + linear model lower the MSE a lot."""
    cyconv.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    target = x.mean(axis=(1, 2, 3))[:, None].astype(np.float32)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.MSELoss()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), target)))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.2 * losses[0]


def test_optimizer_errors():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match=re.escape(
            "SGD: nesterov momentum requires momentum > 0 and dampening = 0, got momentum=0, "
            "dampening=0")):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="SGD: lr must be a non-negative number, got -1"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match=re.escape("Adam: betas must be two numbers in [0, 1)")):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Adam: a parameter appears more than once"):
        optim.Adam([p, p])
    with pytest.raises(TypeError, match="Adam: expected cyconv.nn.Parameter objects, got "
                                        "ndarray"):
        optim.Adam([np.zeros(2)])
    with pytest.raises(ValueError, match=re.escape("SGD: unknown hyper-parameters ['betas']")):
        optim.SGD([{"params": [p], "betas": (0.9, 0.99)}], lr=0.1)
