"""PyTorch's default initialisation, drawn from cyconv's seedable generator.

``torch.nn.ConvNd``/``Linear.reset_parameters`` use::

    init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(fan_in)
    init.uniform_(bias, -bound, bound)

Notes
-----
``kaiming_uniform_`` with ``a`` and leaky-ReLU gain ``sqrt(2 / (1 + a**2))`` samples
``U(-b, b)`` with ``b = gain * sqrt(3 / fan_in)``; for ``a = sqrt(5)`` the gain is
``sqrt(1/3)``, so the weight bound is ``1 / sqrt(fan_in)``, the same as the bias bound.
``fan_in = weight.shape[1] * prod(weight.shape[2:])``: ``in_channels / groups * prod(k)``
for a convolution, ``out_channels / groups * prod(k)`` for a transposed one (PyTorch
reads dimension 1 of the weight either way), ``in_features`` for ``Linear``.
Values are drawn in float64 and rounded to the layer's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from .._random import get_generator

__all__ = ["fan_in", "kaiming_uniform", "uniform", "bias_bound"]


def fan_in(shape) -> int:
    """PyTorch's ``_calculate_fan_in_and_fan_out(weight)[0]`` for a weight shape."""
    if len(shape) < 2:
        raise ValueError(f"fan_in: a weight needs at least 2 dims, got shape {tuple(shape)}")
    return int(shape[1]) * math.prod(int(s) for s in shape[2:])


def uniform(shape, bound: float, dtype) -> np.ndarray:
    """``U(-bound, bound)`` samples of ``shape`` in ``dtype`` (NumPy, CPU)."""
    return get_generator().uniform(-bound, bound, size=tuple(shape)).astype(dtype)


def kaiming_uniform(shape, dtype, a: float = math.sqrt(5)) -> np.ndarray:
    """``torch.nn.init.kaiming_uniform_(w, a)`` (fan_in mode, leaky_relu gain)."""
    n = fan_in(shape)
    if n == 0:
        return np.zeros(shape, dtype)
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, gain * math.sqrt(3.0 / n), dtype)


def bias_bound(weight_shape) -> float:
    """PyTorch's default bias bound ``1 / sqrt(fan_in)`` (0 for an empty fan-in)."""
    n = fan_in(weight_shape)
    return 1.0 / math.sqrt(n) if n > 0 else 0.0
