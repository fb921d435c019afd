"""``Linear`` and ``Flatten``: the bridge from convolutional features to a classifier."""
from __future__ import annotations

import math

import numpy as np

import cyconv

from .._params import is_int
from . import _init
from ._device import layer_dtype, parse_device, to_device
from .module import Module, Parameter

__all__ = ["Linear", "Flatten"]


class Linear(Module):
    """``y = x @ weight.T + bias`` (semantics of ``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    device : {'cpu', 'cuda'}
    dtype : float32 (default) or float64 (float16 on 'cuda')

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
        ``U(-1/sqrt(in_features), 1/sqrt(in_features))``, PyTorch's default.
    bias : Parameter of shape (out_features,), or None
        Same distribution.

    Notes
    -----
    Input ``(*, in_features)``, output ``(*, out_features)``.  The backward pass is
    ``gx = gy @ weight``, ``gw = gy.T @ x`` over the flattened leading dims and
    ``gb = cyconv.grad.bias(gy, channel_axis=-1)``.
    """

    def __init__(self, in_features, out_features, bias=True, device="cpu", dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        for arg, v in (("in_features", in_features), ("out_features", out_features)):
            if not is_int(v) or v < 0:
                raise ValueError(f"{name}: {arg} must be a non-negative int, got {v!r}")
        dev, index = parse_device(name, device)
        dt = layer_dtype(name, dtype, dev)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        w_shape = (self.out_features, self.in_features)
        self.weight = Parameter(to_device(_init.kaiming_uniform(w_shape, dt), dev, index, name))
        if bias:
            bound = _init.bias_bound(w_shape)
            self.bias = Parameter(to_device(_init.uniform((self.out_features,), bound, dt),
                                            dev, index, name))
        else:
            self.bias = None

    def forward(self, x):
        w = self.weight.data
        self._check_input(x, w)
        y = cyconv.linear(x, w, None if self.bias is None else self.bias.data)
        self._ctx = x
        return y

    def backward(self, grad_output):
        x = self._saved()
        gy = grad_output
        expected = tuple(x.shape[:-1]) + (self.out_features,)
        if tuple(gy.shape) != expected:
            raise ValueError(f"Linear.backward: grad_output has shape {tuple(gy.shape)}, "
                             f"expected {expected} for input {tuple(x.shape)}")
        if gy.dtype != x.dtype:
            raise TypeError(f"Linear.backward: grad_output is {gy.dtype.name} but the input "
                            f"was {x.dtype.name}; convert with "
                            f"grad_output.astype(np.{x.dtype.name})")
        w = self.weight.data
        gx = gy @ w
        gw = gy.reshape(-1, self.out_features).T @ x.reshape(-1, self.in_features)
        self._accumulate(self.weight, gw)
        if self.bias is not None:
            self._accumulate(self.bias, cyconv.grad.bias(gy, channel_axis=-1))
        return gx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one (semantics of ``torch.nn.Flatten``).

    Parameters
    ----------
    start_dim : int
        First dim to flatten (default 1, keeping the batch dim).
    end_dim : int
        Last dim to flatten (default -1).

    Notes
    -----
    As in PyTorch, the dims are taken literally: an unbatched ``(C, H, W)`` input with
    the default ``start_dim=1`` gives ``(C, H * W)``; use ``Flatten(0)`` for unbatched
    data.  The output is a view when the input layout allows.
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for arg, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not is_int(v):
                raise ValueError(f"Flatten: {arg} must be an int, got {v!r}")
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x):
        self._check_input(x)
        shape = tuple(x.shape)
        nd = max(len(shape), 1)
        start, end = self.start_dim, self.end_dim
        if not (-nd <= start < nd and -nd <= end < nd):
            raise ValueError(f"Flatten: start_dim={start}, end_dim={end} out of range for an "
                             f"input of shape {shape}")
        start, end = start % nd, end % nd
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for an input of shape {shape}")
        if len(shape) == 0:
            y = x.reshape(1)
        else:
            y = x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])
        self._ctx = shape
        return y

    def backward(self, grad_output):
        shape = self._saved()
        return grad_output.reshape(shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
