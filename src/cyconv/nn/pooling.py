"""Pooling layers: ``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``, ``AdaptiveAvgPool1d/2d/3d``,
``AdaptiveMaxPool1d/2d/3d``.

Each is a thin stateful wrapper over ``cyconv.<op>`` and ``cyconv.grad.<op>``; the
functional ops check the arguments (at the first call, as in PyTorch).
"""
from __future__ import annotations

import cyconv

from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"]


class _MaxPoolNd(Module):
    _op = ""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x):
        """Max over each window; ``(output, indices)`` when ``return_indices`` is set."""
        self._check_input(x)
        y, indices = getattr(cyconv, self._op)(x, self.kernel_size, self.stride, self.padding,
                                               self.dilation, self.ceil_mode,
                                               return_indices=True)
        self._ctx = (tuple(x.shape), indices)
        return (y, indices) if self.return_indices else y

    def backward(self, grad_output):
        """Routes each output gradient to the input element its window picked."""
        x_shape, indices = self._saved()
        return getattr(cyconv.grad, self._op)(grad_output, indices, x_shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class _AvgPoolNd(Module):
    _op = ""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def _args(self):
        args = (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad)
        return args if self._op == "avg_pool1d" else args + (self.divisor_override,)

    def forward(self, x):
        self._check_input(x)
        y = getattr(cyconv, self._op)(x, *self._args())
        self._ctx = tuple(x.shape)
        return y

    def backward(self, grad_output):
        x_shape = self._saved()
        return getattr(cyconv.grad, self._op)(grad_output, x_shape, *self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AdaptiveAvgPoolNd(Module):
    _op = ""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        self._check_input(x)
        y = getattr(cyconv, self._op)(x, self.output_size)
        self._ctx = tuple(x.shape)
        return y

    def backward(self, grad_output):
        x_shape = self._saved()
        return getattr(cyconv.grad, self._op)(grad_output, x_shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"


_MAX_DOC = """{nd}-D max pooling (semantics of ``torch.nn.MaxPool{nd}d``).

Parameters
----------
kernel_size : int or tuple of {nd} ints
stride : int or tuple of {nd} ints, optional
    Defaults to ``kernel_size``.
padding, dilation : int or tuple of {nd} ints
return_indices : bool
    Return ``(output, indices)`` (flat indices within each input plane, int64).
ceil_mode : bool
    Round the output size up; a window that would start in the right padding is dropped.
"""

_AVG_DOC = """{nd}-D average pooling (semantics of ``torch.nn.AvgPool{nd}d``).

Parameters
----------
kernel_size : int or tuple of {nd} ints
stride : int or tuple of {nd} ints, optional
    Defaults to ``kernel_size``.
padding : int or tuple of {nd} ints
ceil_mode : bool
count_include_pad : bool
    Count the zero padding in the divisor.{extra}
"""

_ADAPTIVE_DOC = """{nd}-D adaptive average pooling (semantics of ``torch.nn.AdaptiveAvgPool{nd}d``).

Parameters
----------
output_size : int or tuple of {nd} ints (an entry may be None: keep that input size)
"""

_DIVISOR = "\ndivisor_override : int, optional\n    Divide every window sum by this instead."


class MaxPool1d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(nd=1)
    _op = "max_pool1d"


class MaxPool2d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(nd=2)
    _op = "max_pool2d"


class MaxPool3d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(nd=3)
    _op = "max_pool3d"


class AvgPool1d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(nd=1, extra="")
    _op = "avg_pool1d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(nd=2, extra=_DIVISOR)
    _op = "avg_pool2d"


class AvgPool3d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(nd=3, extra=_DIVISOR)
    _op = "avg_pool3d"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(nd=1)
    _op = "adaptive_avg_pool1d"


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(nd=2)
    _op = "adaptive_avg_pool2d"


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(nd=3)
    _op = "adaptive_avg_pool3d"


class _AdaptiveMaxPoolNd(Module):
    _op = ""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, x):
        """Max over each adaptive window; ``(output, indices)`` with ``return_indices``."""
        self._check_input(x)
        y, indices = getattr(cyconv, self._op)(x, self.output_size, return_indices=True)
        self._ctx = (tuple(x.shape), indices)
        return (y, indices) if self.return_indices else y

    def backward(self, grad_output):
        """Routes each output gradient to the input element its window picked."""
        x_shape, indices = self._saved()
        return getattr(cyconv.grad, self._op)(grad_output, indices, x_shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"


_ADAPTIVE_MAX_DOC = """{nd}-D adaptive max pooling (semantics of ``torch.nn.AdaptiveMaxPool{nd}d``).

Parameters
----------
output_size : int or tuple of {nd} ints (an entry may be None: keep that input size)
return_indices : bool
    Return ``(output, indices)`` (flat indices within each input plane, int64).
"""


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    __doc__ = _ADAPTIVE_MAX_DOC.format(nd=1)
    _op = "adaptive_max_pool1d"


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    __doc__ = _ADAPTIVE_MAX_DOC.format(nd=2)
    _op = "adaptive_max_pool2d"


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    __doc__ = _ADAPTIVE_MAX_DOC.format(nd=3)
    _op = "adaptive_max_pool3d"
