"""Optimizers with PyTorch's update rules: ``SGD`` and ``Adam`` (``cyconv.optim``).

They update ``Parameter.data`` in place from ``Parameter.grad`` (NumPy or CuPy arrays;
the arithmetic runs wherever the parameter lives), so arrays shared with the model stay
shared.  Parameters whose ``grad`` is ``None`` are skipped, as in PyTorch.

Parameters can be given as an iterable of :class:`cyconv.nn.Parameter` or as a list of
*parameter groups*, dicts with a ``"params"`` entry and per-group overrides::

    opt = SGD([{"params": model[0].parameters(), "lr": 1e-3},
               {"params": model[2].parameters()}], lr=1e-2, momentum=0.9)
    opt.param_groups[1]["lr"] *= 0.1     # e.g. a learning-rate schedule
"""
from __future__ import annotations

import math

from .nn._device import array_module
from .nn.module import Parameter

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Base class: parameter groups, per-parameter state and ``zero_grad``.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dicts
        The parameters to optimise, or parameter groups (see the module docstring).
    defaults : dict
        Default hyper-parameters, copied into every group that does not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        if isinstance(params, (Parameter, dict)):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters "
                            f"or of parameter-group dicts, got a single "
                            f"{type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        """Add a dict with ``"params"`` and optional hyper-parameter overrides."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry, "
                            f"got {group!r}")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected cyconv.nn.Parameter objects, got "
                                f"{type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears more than once")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{name}: unknown hyper-parameters {sorted(unknown)} in a "
                             f"parameter group; expected some of {sorted(self.defaults)}")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        pass

    def zero_grad(self, set_to_none: bool = True):
        """Reset the gradients of every managed parameter (to None, or zeros in place)."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self):
        raise NotImplementedError

    def _state(self, p) -> dict:
        return self.state.setdefault(p, {})


def _non_negative(name, arg, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name}: {arg} must be a non-negative number, got {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (``torch.optim.SGD``'s rule).

    Parameters
    ----------
    params : iterable of Parameter or of parameter-group dicts
    lr : float
    momentum : float
    weight_decay : float
        L2 penalty added to the gradient.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    dampening : float, keyword-only

    Notes
    -----
    For each parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        if momentum:
            buf = g                                   (first step)
            buf = momentum * buf + (1 - dampening) * g   (later steps)
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
    """

    def __init__(self, params, lr, momentum=0, weight_decay=0, nesterov=False, *,
                 dampening=0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov, dampening=dampening))

    def _check_group(self, g):
        for arg in ("lr", "momentum", "weight_decay", "dampening"):
            _non_negative("SGD", arg, g[arg])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0, "
                             f"got momentum={g['momentum']}, dampening={g['dampening']}")

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            wd, dampening = group["weight_decay"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g + wd * p.data
                if momentum != 0:
                    state = self._state(p)
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * g
                    g = g + momentum * buf if group["nesterov"] else buf
                p.data -= lr * g


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``'s rule, including its bias corrections).

    Parameters
    ----------
    params : iterable of Parameter or of parameter-group dicts
    lr : float
    betas : (float, float)
        Decay rates of the first and second moment estimates, in ``[0, 1)``.
    eps : float
        Added to the denominator.
    weight_decay : float
        L2 penalty added to the gradient (not AdamW's decoupled decay).
    amsgrad : bool, keyword-only
        Use the running maximum of the second moment (AMSGrad).

    Notes
    -----
    At step ``t`` for each parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1)              # m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p -= lr / (1 - beta1**t) * m / denom
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *,
                 amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _check_group(self, g):
        for arg in ("lr", "eps", "weight_decay"):
            _non_negative("Adam", arg, g[arg])
        betas = g["betas"]
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas!r}")

    @staticmethod
    def _lerp_(m, g, weight):
        """``m = m + weight * (g - m)`` in place, computed as PyTorch's ``lerp_`` does."""
        if weight < 0.5:
            m += weight * (g - m)
        else:
            m[...] = g - (g - m) * (1 - weight)

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g + wd * p.data
                state = self._state(p)
                if not state:
                    xp = array_module(p.data)
                    state["step"] = 0
                    state["exp_avg"] = xp.zeros_like(p.data)
                    state["exp_avg_sq"] = xp.zeros_like(p.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                self._lerp_(m, g, 1 - beta1)
                v *= beta2
                v += (1 - beta2) * (g * g)
                if group["amsgrad"]:
                    v = array_module(v).maximum(state["max_exp_avg_sq"], v,
                                                out=state["max_exp_avg_sq"])
                step_size = lr / (1 - beta1 ** t)
                denom = (v ** 0.5) / math.sqrt(1 - beta2 ** t) + eps
                p.data -= step_size * (m / denom)
