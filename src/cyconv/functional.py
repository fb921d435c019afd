"""Functional ops on NumPy (CPU) and CuPy (GPU) arrays, with ``torch.nn.functional``'s
names, argument order and semantics.

Convolutions here are cross-correlations (no kernel flip), as in PyTorch.  Weights are
``(C_out, C_in/groups, *kernel)``; transposed weights ``(C_in, C_out/groups, *kernel)``.
"""
from __future__ import annotations

from . import _dispatch
from ._dispatch import backend, batched, planned, unbatch
from ._params import conv_params

__all__ = ["conv1d", "conv2d", "conv3d",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def _conv(op, nd, input, weight, bias, stride, padding, dilation, groups, algorithm):
    plan = planned(_plan_conv, op, (input, weight, bias),
                   (nd, stride, padding, dilation, groups, algorithm))
    p = plan.params
    return unbatch(backend(plan.device).conv_forward(plan, batched(input, p), weight, bias), p)


def _plan_conv(op, input, weight, bias, nd, stride, padding, dilation, groups, algorithm):
    device, dtype = _dispatch.prepare(op, input=input, weight=weight, bias=bias)
    p = conv_params(op, nd, input.shape, weight.shape, stride=stride, padding=padding,
                    dilation=dilation, groups=groups,
                    b_shape=None if bias is None else bias.shape)
    return _dispatch.plan_for(op, p, "forward", "forward", dtype, algorithm, device)


def _conv_transpose(op, nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation, algorithm, output_size=None):
    plan = planned(_plan_conv_transpose, op, (input, weight, bias),
                   (nd, stride, padding, output_padding, groups, dilation, algorithm,
                    output_size))
    p = plan.params
    y = backend(plan.device).conv_backward_input(plan, batched(input, p), weight, bias)
    return unbatch(y, p)


def _plan_conv_transpose(op, input, weight, bias, nd, stride, padding, output_padding,
                         groups, dilation, algorithm, output_size):
    device, dtype = _dispatch.prepare(op, input=input, weight=weight, bias=bias)
    p = conv_params(op, nd, input.shape, weight.shape, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, output_padding=output_padding,
                    transposed=True, b_shape=None if bias is None else bias.shape,
                    out_size=output_size)
    return _dispatch.plan_for(op, p, "backward_input", "forward", dtype, algorithm, device)


_CONV_DOC = """{nd}-D convolution (cross-correlation) over an input of shape {shape}.

Parameters
----------
input : array, shape {shape} or unbatched {ushape}
weight : array, shape (C_out, C_in/groups, {kernel})
bias : array of shape (C_out,), optional
stride, dilation : int or tuple of {nd} ints
padding : int, tuple of {nd} ints, tuple of {nd} (before, after) pairs, 'valid' or 'same'
    'same' works for every stride: the output size is ceil(in / stride), with any odd
    unit of padding on the after side (TensorFlow's rule).
groups : int
    Splits the channels into groups; groups == C_in is a depthwise convolution.
algorithm : {{'auto', 'im2col', 'direct'}}
    'auto' picks per layer (a pure function of shapes, dtype and thread count).

Returns
-------
array of shape (N, C_out, {out}) where, per spatial dim,
out = floor((in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1.
"""

_CONVT_DOC = """{nd}-D transposed convolution (the adjoint of conv{nd}d) over {shape}.

Parameters
----------
input : array, shape {shape} or unbatched {ushape}
weight : array, shape (C_in, C_out/groups, {kernel})
bias : array of shape (C_out,), optional
stride, padding, output_padding, dilation : int or tuple of {nd} ints
    output_padding must be smaller than max(stride, dilation) in each dim.
groups : int
algorithm : {{'auto', 'im2col', 'direct'}}

Returns
-------
array of shape (N, C_out, {out}) where, per spatial dim,
out = (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1.
"""

_SHAPES = {1: ("(N, C_in, L)", "(C_in, L)", "k", "L_out"),
           2: ("(N, C_in, H, W)", "(C_in, H, W)", "kH, kW", "H_out, W_out"),
           3: ("(N, C_in, D, H, W)", "(C_in, D, H, W)", "kD, kH, kW", "D_out, H_out, W_out")}


def _make(nd):
    shape, ushape, kernel, out = _SHAPES[nd]
    fmt = dict(nd=nd, shape=shape, ushape=ushape, kernel=kernel, out=out)

    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             algorithm="auto"):
        return _conv(f"conv{nd}d", nd, input, weight, bias, stride, padding, dilation,
                     groups, algorithm)

    def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1, *, algorithm="auto"):
        return _conv_transpose(f"conv_transpose{nd}d", nd, input, weight, bias, stride,
                               padding, output_padding, groups, dilation, algorithm)

    conv.__name__ = conv.__qualname__ = f"conv{nd}d"
    conv_transpose.__name__ = conv_transpose.__qualname__ = f"conv_transpose{nd}d"
    conv.__doc__ = _CONV_DOC.format(**fmt)
    conv_transpose.__doc__ = _CONVT_DOC.format(**fmt)
    return conv, conv_transpose


conv1d, conv_transpose1d = _make(1)
conv2d, conv_transpose2d = _make(2)
conv3d, conv_transpose3d = _make(3)

# ---- pooling, padding, ReLU, linear (cyconv/_pool.py) ----
from ._pool import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d,  # noqa: E402
                    avg_pool1d, avg_pool2d, avg_pool3d, linear, max_pool1d, max_pool2d,
                    max_pool3d, pad, relu)

__all__ += ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
            "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "relu",
            "linear", "pad"]

# ---- batch norm, activations, softmax, dropout, resampling ----
from ._activation import (dropout, gelu, leaky_relu, log_softmax, sigmoid, silu,  # noqa: E402
                          softmax, tanh)
from ._norm import batch_norm  # noqa: E402
from ._resample import (adaptive_max_pool1d, adaptive_max_pool2d,  # noqa: E402
                        adaptive_max_pool3d, interpolate)

__all__ += ["batch_norm", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softmax",
            "log_softmax", "dropout", "interpolate", "adaptive_max_pool1d",
            "adaptive_max_pool2d", "adaptive_max_pool3d"]
