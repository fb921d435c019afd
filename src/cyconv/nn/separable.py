"""Separable 2-D convolutions built from two ``Conv2d`` layers.

* ``DepthwiseSeparableConv2d``: a depthwise convolution (one filter per input channel,
  ``groups=in_channels``) then a 1x1 ``pointwise`` convolution mixing the channels
  (MobileNet, Xception).
* ``SpatialSeparableConv2d``: a ``k x 1`` convolution then a ``1 x k`` one, a rank-1
  factorisation of a ``k x k`` kernel (Inception v3).

Both are ``Sequential`` containers, so their parameter keys are
``depthwise.weight`` / ``pointwise.weight`` and ``vertical.weight`` /
``horizontal.weight``, and a PyTorch module with the same two named children loads
into them unchanged.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._params import is_int
from .container import Sequential
from .conv import Conv2d

__all__ = ["DepthwiseSeparableConv2d", "SpatialSeparableConv2d"]


def _check_channels(name, in_channels, out_channels):
    for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not is_int(v) or v < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")


class DepthwiseSeparableConv2d(Sequential):
    """Depthwise ``k x k`` convolution, then a pointwise ``1 x 1`` convolution.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of 2 ints
        Of the depthwise convolution.
    padding : int, tuple, (before, after) pairs, 'valid' or 'same'
        Of the depthwise convolution.
    bias : bool
        Gives both convolutions a bias.
    dtype : float32 (default) or float64
    device : {'cpu', 'cuda'}

    Attributes
    ----------
    depthwise : Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
        groups=in_channels)
    pointwise : Conv2d(in_channels, out_channels, 1)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, dtype=np.float32, device="cpu"):
        _check_channels(type(self).__name__, in_channels, out_channels)
        super().__init__(OrderedDict(
            depthwise=Conv2d(in_channels, in_channels, kernel_size, stride=stride,
                             padding=padding, dilation=dilation, groups=in_channels,
                             bias=bias, device=device, dtype=dtype),
            pointwise=Conv2d(in_channels, out_channels, 1, bias=bias, device=device,
                             dtype=dtype)))


class SpatialSeparableConv2d(Sequential):
    """A ``k x 1`` convolution (in -> out) then a ``1 x k`` convolution (out -> out).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        ``k``.
    stride : int
        ``s``: the vertical convolution has stride ``(s, 1)``, the horizontal ``(1, s)``.
    padding : int, 'valid' or 'same'
        ``p``: the vertical convolution has padding ``(p, 0)``, the horizontal ``(0, p)``.
        A string is passed to both (it pads only along the kernel's long side).
    bias : bool
        Gives both convolutions a bias.
    dtype : float32 (default) or float64
    device : {'cpu', 'cuda'}

    Attributes
    ----------
    vertical : Conv2d(in_channels, out_channels, (k, 1), stride=(s, 1), padding=(p, 0))
    horizontal : Conv2d(out_channels, out_channels, (1, k), stride=(1, s), padding=(0, p))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, dtype=np.float32, device="cpu"):
        name = type(self).__name__
        _check_channels(name, in_channels, out_channels)
        for arg, v in (("kernel_size", kernel_size), ("stride", stride)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")
        if isinstance(padding, str):
            pad_v = pad_h = padding
        elif is_int(padding):
            pad_v, pad_h = (padding, 0), (0, padding)
        else:
            raise ValueError(f"{name}: padding must be an int, 'valid' or 'same', got "
                             f"{padding!r}")
        k, s = int(kernel_size), int(stride)
        super().__init__(OrderedDict(
            vertical=Conv2d(in_channels, out_channels, (k, 1), stride=(s, 1), padding=pad_v,
                            bias=bias, device=device, dtype=dtype),
            horizontal=Conv2d(out_channels, out_channels, (1, k), stride=(1, s),
                              padding=pad_h, bias=bias, device=device, dtype=dtype)))
