"""Convolution layers: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``.

They hold PyTorch-shaped parameters and compute through the functional ops
``cyconv.conv*d`` / ``cyconv.conv_transpose*d`` and their gradients in
``cyconv.grad``.  A non-zero ``padding_mode`` pads with ``cyconv.pad`` and then runs a
'valid' convolution; its backward pass folds the padding back with ``cyconv.grad.pad``.
"""
from __future__ import annotations

import numpy as np

import cyconv

from .._params import conv_params, conv_transpose_out_size, int_tuple, is_int
from . import _init
from ._device import layer_dtype, parse_device, to_device
from .module import Module, Parameter

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _positive_int(name, arg, value):
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
    return int(value)


def _stored_padding(padding, nd):
    """Padding as PyTorch stores it: a string stays, an int becomes an nd-tuple."""
    if isinstance(padding, str):
        return padding
    if is_int(padding):
        return (int(padding),) * nd
    return tuple(tuple(int(v) for v in p) if isinstance(p, (tuple, list)) else int(p)
                 for p in padding)


class _ConvNd(Module):
    """Shared construction, checking and bookkeeping of the six convolution layers."""

    _nd = 0
    _op = ""
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, padding_mode, output_padding, device, dtype):
        super().__init__()
        name = type(self).__name__
        nd = self._nd
        in_channels = _positive_int(name, "in_channels", in_channels)
        out_channels = _positive_int(name, "out_channels", out_channels)
        groups = _positive_int(name, "groups", groups)
        for arg, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c % groups:
                raise ValueError(f"{name}: groups={groups} does not divide {arg}={c}")
        kernel_size = int_tuple(name, "kernel_size", kernel_size, nd)
        if any(k < 1 for k in kernel_size):
            raise ValueError(f"{name}: kernel_size must be positive, got {kernel_size}")
        stride = int_tuple(name, "stride", stride, nd)
        dilation = int_tuple(name, "dilation", dilation, nd)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of "
                             f"{', '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}")
        if self._transposed:
            if padding_mode != "zeros":
                raise ValueError(f'{name}: only "zeros" padding_mode is supported for '
                                 f'{name}, got {padding_mode!r}')
            padding = int_tuple(name, "padding", padding, nd)
            output_padding = int_tuple(name, "output_padding", output_padding, nd)
            w_shape = (in_channels, out_channels // groups) + kernel_size
            # a nominal input long enough for any padding: its output size is positive
            nominal = tuple(1 + 2 * max(p, 0) for p in padding)
        else:
            output_padding = (0,) * nd
            w_shape = (out_channels, in_channels // groups) + kernel_size
            nominal = tuple(max(1, d * (k - 1) + 1) for d, k in zip(dilation, kernel_size))
        # Every remaining argument rule (stride and dilation positive, the padding forms,
        # output_padding < max(stride, dilation)) is checked once, here, by the same code
        # that checks each call, against a nominal input.
        conv_params(name, nd, (1, in_channels) + nominal, w_shape, stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    output_padding=output_padding, transposed=self._transposed)
        dev, index = parse_device(name, device)
        dt = layer_dtype(name, dtype, dev)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = _stored_padding(padding, nd)
        self.dilation = dilation
        self.groups = groups
        self.padding_mode = padding_mode
        self.output_padding = output_padding
        self.transposed = self._transposed
        self.weight = Parameter(to_device(_init.kaiming_uniform(w_shape, dt), dev, index,
                                          name))
        if bias:
            bound = _init.bias_bound(w_shape)
            self.bias = Parameter(to_device(_init.uniform((out_channels,), bound, dt), dev,
                                            index, name))
        else:
            self.bias = None

    def _batched(self, x) -> bool:
        return x.ndim == self._nd + 2

    def extra_repr(self) -> str:
        nd = self._nd
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * nd:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class _ConvForward(_ConvNd):
    """``ConvNd``: forward through ``cyconv.conv{nd}d``, backward through ``cyconv.grad``."""

    def _pad_amounts(self, x) -> tuple:
        """``cyconv.pad``'s amounts (last dim first) for this layer's padding on ``x``."""
        p = conv_params(self._op, self._nd, x.shape, self.weight.shape, stride=self.stride,
                        padding=self.padding, dilation=self.dilation, groups=self.groups)
        return tuple(v for pair in reversed(p.padding) for v in pair)

    def forward(self, x):
        w = self.weight.data
        self._check_input(x, w)
        b = None if self.bias is None else self.bias.data
        conv = getattr(cyconv, self._op)
        if self.padding_mode == "zeros":
            y = conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)
            self._ctx = (x, None, None)
        else:
            pad = self._pad_amounts(x)
            x_padded = cyconv.pad(x, pad, mode=self.padding_mode)
            y = conv(x_padded, w, b, self.stride, 0, self.dilation, self.groups)
            self._ctx = (x, x_padded, pad)
        return y

    def backward(self, grad_output):
        x, x_padded, pad = self._saved()
        w = self.weight.data
        src, padding = (x, self.padding) if x_padded is None else (x_padded, 0)
        args = (self.stride, padding, self.dilation, self.groups)
        gx = getattr(cyconv.grad, f"{self._op}_input")(src.shape, w, grad_output, *args)
        gw = getattr(cyconv.grad, f"{self._op}_weight")(src, w.shape, grad_output, *args)
        self._accumulate(self.weight, gw)
        if self.bias is not None:
            gb = cyconv.grad.bias(grad_output, channel_axis=1 if self._batched(x) else 0)
            self._accumulate(self.bias, gb)
        if x_padded is not None:
            gx = cyconv.grad.pad(gx, x.shape, pad, mode=self.padding_mode)
        return gx


class _ConvTransposeForward(_ConvNd):
    """``ConvTransposeNd``: forward through ``cyconv.conv_transpose{nd}d``."""

    _transposed = True

    def _output_padding(self, x, output_size) -> tuple:
        """PyTorch's ``_ConvTransposeNd._output_padding``: output_padding for a size."""
        if output_size is None:
            return self.output_padding
        name = type(self).__name__
        nd = self._nd
        if not (isinstance(output_size, (tuple, list)) or type(output_size).__name__ == "Size") \
                or not all(is_int(v) for v in output_size):
            raise ValueError(f"{name}: output_size must be a tuple of ints, got {output_size!r}")
        if x.ndim not in (nd + 1, nd + 2):
            return self.output_padding     # the functional op reports the wrong rank
        size = tuple(int(v) for v in output_size)
        lead = 2 if self._batched(x) else 1
        if len(size) == nd + lead:
            size = size[lead:]
        if len(size) != nd:
            raise ValueError(f"{name}: output_size must have {nd} or {nd + lead} elements, got "
                             f"{output_size!r} for input {tuple(x.shape)}")
        in_size = tuple(x.shape[-nd:])
        min_sizes = tuple(conv_transpose_out_size(i, k, s, (p, p), d) for i, s, p, d, k in zip(
            in_size, self.stride, self.padding, self.dilation, self.kernel_size))
        max_sizes = tuple(m + s - 1 for m, s in zip(min_sizes, self.stride))
        if any(not lo <= o <= hi for o, lo, hi in zip(size, min_sizes, max_sizes)):
            raise ValueError(f"{name}: requested an output size of {size}, but valid sizes "
                             f"range from {min_sizes} to {max_sizes} (for an input of "
                             f"{in_size})")
        return tuple(o - lo for o, lo in zip(size, min_sizes))

    def forward(self, x, output_size=None):
        """Transposed convolution of ``x``; ``output_size`` picks the output_padding.

        ``output_size`` (spatial sizes, optionally with the leading batch/channel dims)
        resolves the ambiguity of a strided transposed convolution, as in PyTorch: any
        size from the minimum to minimum + stride - 1 per dim.
        """
        w = self.weight.data
        self._check_input(x, w)
        b = None if self.bias is None else self.bias.data
        op = self._output_padding(x, output_size)
        y = getattr(cyconv, self._op)(x, w, b, self.stride, self.padding, op, self.groups,
                                      self.dilation)
        self._ctx = (x, op)
        return y

    def backward(self, grad_output):
        x, op = self._saved()
        w = self.weight.data
        args = (self.stride, self.padding, op, self.groups, self.dilation)
        gx = getattr(cyconv.grad, f"{self._op}_input")(x.shape, w, grad_output, *args)
        gw = getattr(cyconv.grad, f"{self._op}_weight")(x, w.shape, grad_output, *args)
        self._accumulate(self.weight, gw)
        if self.bias is not None:
            gb = cyconv.grad.bias(grad_output, channel_axis=1 if self._batched(x) else 0)
            self._accumulate(self.bias, gb)
        return gx


_CONV_DOC = """{nd}-D convolution layer (semantics of ``torch.nn.Conv{nd}d``).

Parameters
----------
in_channels, out_channels : int
kernel_size, stride, dilation : int or tuple of {nd} ints
padding : int, tuple of {nd} ints, tuple of {nd} (before, after) pairs, 'valid' or 'same'
    'same' works for every stride (TensorFlow's rule, see ``cyconv.conv{nd}d``).
groups : int
bias : bool
padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}
    A mode other than 'zeros' pads with ``cyconv.pad`` before a 'valid' convolution.
    Reflect padding must be smaller than the input size, circular at most as large.
device : {{'cpu', 'cuda'}}
dtype : float32 (default) or float64 (float16 on 'cuda')
    Inputs must have this dtype.

Attributes
----------
weight : Parameter, shape (out_channels, in_channels / groups, {kernel})
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels / groups *
    prod(kernel_size)``, PyTorch's default, from ``cyconv.manual_seed``'s generator.
bias : Parameter of shape (out_channels,), or None
    Same distribution.

Notes
-----
Input ``{shape}`` or unbatched ``{ushape}``; output ``(N, C_out, {out})``.
"""

_CONVT_DOC = """{nd}-D transposed convolution layer (semantics of ``torch.nn.ConvTranspose{nd}d``).

Parameters
----------
in_channels, out_channels : int
kernel_size, stride, padding, output_padding, dilation : int or tuple of {nd} ints
    output_padding must be smaller than max(stride, dilation) in every dim.
groups : int
bias : bool
padding_mode : 'zeros'
    The only mode, as in PyTorch; anything else raises ``ValueError``.
device : {{'cpu', 'cuda'}}
dtype : float32 (default) or float64 (float16 on 'cuda')

Attributes
----------
weight : Parameter, shape (in_channels, out_channels / groups, {kernel})
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = out_channels / groups *
    prod(kernel_size)`` (PyTorch reads weight dim 1 for transposed layers too).
bias : Parameter of shape (out_channels,), or None

Notes
-----
Call as ``layer(x, output_size=None)``. Input ``{shape}`` or unbatched ``{ushape}``;
out = (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1.
"""

_SHAPES = {1: ("(N, C_in, L)", "(C_in, L)", "k", "L_out"),
           2: ("(N, C_in, H, W)", "(C_in, H, W)", "kH, kW", "H_out, W_out"),
           3: ("(N, C_in, D, H, W)", "(C_in, D, H, W)", "kD, kH, kW", "D_out, H_out, W_out")}


def _doc(template, nd):
    shape, ushape, kernel, out = _SHAPES[nd]
    return template.format(nd=nd, shape=shape, ushape=ushape, kernel=kernel, out=out)


class Conv1d(_ConvForward):
    __doc__ = _doc(_CONV_DOC, 1)
    _nd, _op = 1, "conv1d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device="cpu",
                 dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, device, dtype)


class Conv2d(_ConvForward):
    __doc__ = _doc(_CONV_DOC, 2)
    _nd, _op = 2, "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device="cpu",
                 dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, device, dtype)


class Conv3d(_ConvForward):
    __doc__ = _doc(_CONV_DOC, 3)
    _nd, _op = 3, "conv3d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device="cpu",
                 dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, device, dtype)


class ConvTranspose1d(_ConvTransposeForward):
    __doc__ = _doc(_CONVT_DOC, 1)
    _nd, _op = 1, "conv_transpose1d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device="cpu", dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)


class ConvTranspose2d(_ConvTransposeForward):
    __doc__ = _doc(_CONVT_DOC, 2)
    _nd, _op = 2, "conv_transpose2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device="cpu", dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)


class ConvTranspose3d(_ConvTransposeForward):
    __doc__ = _doc(_CONVT_DOC, 3)
    _nd, _op = 3, "conv_transpose3d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device="cpu", dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)
