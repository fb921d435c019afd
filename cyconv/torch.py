"""PyTorch adapter: cyconv kernels behind ``torch.autograd.Function`` s and ``nn`` modules.

PyTorch is optional: importing :mod:`cyconv` never imports it, and importing this module
without PyTorch raises an ``ImportError`` that says how to install it.

What is here
------------
- Functional ops with ``torch.nn.functional``'s names, signatures and semantics, whose
  forward *and* backward passes run cyconv kernels: :func:`conv1d` ... :func:`conv3d`,
  :func:`conv_transpose1d` ... :func:`conv_transpose3d`, :func:`max_pool1d` ...
  :func:`max_pool3d`, :func:`avg_pool1d` ... :func:`avg_pool3d`,
  :func:`adaptive_avg_pool1d` ... :func:`adaptive_avg_pool3d` and :func:`pad`.
  Each takes and returns ``torch.Tensor`` s and records itself on the autograd tape.
- The autograd functions behind them (``Conv2dFunction``, ``ConvTranspose2dFunction``,
  ``MaxPool2dFunction``, ...), for code that wants to call ``.apply`` itself.
- Drop-in modules (:class:`Conv2d`, :class:`ConvTranspose2d`, :class:`MaxPool2d`, ...):
  subclasses of the ``torch.nn`` classes that only change how the output is computed.
- :func:`convert`: turns every convolution (and pooling) layer of an existing model
  into its cyconv counterpart in place, keeping the very same ``Parameter`` objects.

How tensors cross
-----------------
CPU tensors cross without a copy: ``t.detach().numpy()`` shares the tensor's memory
(a non-contiguous tensor is made contiguous first), and results come back through
``torch.from_numpy``, which shares the NumPy array's.  CUDA tensors cross through
DLPack to CuPy (``cupy.from_dlpack`` / ``torch.from_dlpack``, also without copies);
cyconv's GPU kernels then run on PyTorch's current CUDA stream of the tensor's device,
so no synchronisation is needed on either side.

Differences from ``torch.nn.functional``
----------------------------------------
- Bad arguments raise cyconv's ``ValueError`` / ``TypeError`` (PyTorch raises
  ``RuntimeError`` for some of them).
- ``padding`` of the convolutions accepts everything cyconv accepts: ``'same'`` for
  every stride (TensorFlow's rule) and ``(before, after)`` pairs per spatial dim.
- The functions are differentiable once: the backward pass is not itself recorded, so
  double backward (``create_graph=True`` followed by a second ``backward``) raises.
- dtypes: float32 and float64 on the CPU; float16 too on CUDA.

Examples
--------
>>> import torch
>>> import cyconv.torch as ct
>>> x = torch.randn(2, 3, 16, 16, requires_grad=True)
>>> w = torch.randn(8, 3, 3, 3, requires_grad=True)
>>> y = ct.conv2d(x, w, padding="same")
>>> y.sum().backward()             # gradients computed by cyconv.grad
>>> model = ct.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()))
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings

import numpy as np

import cyconv
from cyconv import grad as _grad


def _import_torch():
    """The real ``torch`` package (never this module), or an ImportError with a hint."""
    try:
        mod = importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            "cyconv.torch needs PyTorch, which is not installed: install it with "
            "'pip install torch' (CPU or CUDA builds: https://pytorch.org/get-started/). "
            "cyconv itself works without it.") from exc
    here = os.path.abspath(__file__)
    if os.path.abspath(getattr(mod, "__file__", "") or "") == here or not hasattr(mod, "autograd"):
        raise ImportError(
            "cyconv.torch: 'import torch' found cyconv's own torch.py instead of PyTorch; "
            "do not run scripts from inside the cyconv package directory")
    return mod


torch = _import_torch()
_nn = torch.nn

__all__ = (
    [f"conv{nd}d" for nd in (1, 2, 3)] + [f"conv_transpose{nd}d" for nd in (1, 2, 3)]
    + [f"{kind}_pool{nd}d" for kind in ("max", "avg", "adaptive_avg") for nd in (1, 2, 3)]
    + ["pad", "convert"]
    + [f"Conv{nd}d" for nd in (1, 2, 3)] + [f"ConvTranspose{nd}d" for nd in (1, 2, 3)]
    + [f"{kind}Pool{nd}d" for kind in ("Max", "Avg", "AdaptiveAvg") for nd in (1, 2, 3)]
    + [f"Conv{nd}dFunction" for nd in (1, 2, 3)]
    + [f"ConvTranspose{nd}dFunction" for nd in (1, 2, 3)]
    + [f"{kind}Pool{nd}dFunction" for kind in ("Max", "Avg", "AdaptiveAvg") for nd in (1, 2, 3)]
    + ["PadFunction"])


# -- crossing between tensors and arrays ---------------------------------------------------

_FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _cupy(op):
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise TypeError(
            f"{op}: CUDA tensors run on cyconv's GPU kernels, which need CuPy: install it "
            f"with 'pip install cupy-cuda12x' (or move the tensors to the CPU)") from exc


def _to_array(t, op, name):
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``t``'s memory; None stays None.

    A non-contiguous tensor is made contiguous first (the one copy this may make).
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; cyconv takes float32 and float64 "
                        f"tensors (and float16 on CUDA)")
    t = t.detach()
    if t.device.type == "cpu":
        if not t.is_contiguous():
            t = t.contiguous()
        return t.resolve_neg().numpy()
    if t.device.type == "cuda":
        return _cupy(op).from_dlpack(t)
    raise TypeError(f"{op}: {name} is on device {t.device}; cyconv runs on CPU and CUDA "
                    f"tensors")


def _to_tensor(a):
    """A tensor sharing the memory of the NumPy or CuPy array ``a``."""
    if isinstance(a, np.ndarray):
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = np.array(a)
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


@contextlib.contextmanager
def _device_of(t):
    """Run the enclosed CuPy work on ``t``'s GPU and on PyTorch's current stream there.

    Nothing to do for CPU tensors.  For CUDA tensors, cyconv's kernels then queue
    behind the PyTorch work that produced their inputs, and PyTorch's later work
    queues behind them, without any synchronisation.
    """
    if t.device.type != "cuda":
        yield
        return
    cupy = _cupy("cyconv.torch")
    stream = torch.cuda.current_stream(t.device)
    with cupy.cuda.Device(t.device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
        yield


def _check_tensors(op, **tensors):
    """Every argument a tensor (or None), all on one device, else a TypeError."""
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    devices = {t.device for t in tensors.values() if t is not None}
    if len(devices) > 1:
        raise TypeError(f"{op}: expected all tensors on one device, got "
                        + ", ".join(f"{name} on {t.device}" for name, t in tensors.items()
                                    if t is not None))


def _plain(v):
    """A list (e.g. from ``torch.Size`` or TorchScript-style code) as a tuple."""
    return tuple(_plain(e) for e in v) if isinstance(v, (list, tuple)) else v


def _differentiable_once(backward):
    """Make a backward pass refuse to be recorded (double backward) with a clear error.

    With ``create_graph=True`` autograd runs backward passes with grad mode on and
    expects them to be differentiable; cyconv's gradient kernels are not recorded, so
    going on would silently drop the second-order terms.
    """
    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        if torch.is_grad_enabled():
            name = type(ctx).__name__.replace("Backward", "")
            raise RuntimeError(
                f"cyconv.torch: {name} is differentiable once; a backward pass with "
                f"create_graph=True (double backward) through it is not supported")
        return backward(ctx, *grad_outputs)
    return wrapper


# -- autograd functions: convolutions -------------------------------------------------------

class _ConvFunctionBase(torch.autograd.Function):
    """``y = conv{nd}d(x, w, b)`` with cyconv's forward and gradient kernels.

    ``apply(input, weight, bias, stride, padding, dilation, groups, algorithm)``.

    Notes
    -----
    The gradients are ``gx = cyconv.grad.conv{nd}d_input(x.shape, w, gy)``,
    ``gw = cyconv.grad.conv{nd}d_weight(x, w.shape, gy)`` and
    ``gb = cyconv.grad.bias(gy)`` (summed over every axis but the channel axis); each is
    computed only when autograd needs it.
    """
    _nd = 0

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, algorithm):
        nd = ctx._forward_cls._nd
        op = f"conv{nd}d"
        _check_tensors(op, input=input, weight=weight, bias=bias)
        with _device_of(input):
            y = getattr(cyconv, op)(
                _to_array(input, op, "input"), _to_array(weight, op, "weight"),
                _to_array(bias, op, "bias"), stride, padding, dilation, groups,
                algorithm=algorithm)
            y = _to_tensor(y)
        ctx.save_for_backward(input, weight)
        ctx.args = (stride, padding, dilation, groups)
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output):
        nd = ctx._forward_cls._nd
        op = f"conv{nd}d"
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        with _device_of(grad_output):
            gy = _to_array(grad_output, op, "grad_output")
            if need_x:
                gx = _to_tensor(getattr(_grad, f"{op}_input")(
                    tuple(x.shape), _to_array(w, op, "weight"), gy, stride, padding,
                    dilation, groups))
            if need_w:
                gw = _to_tensor(getattr(_grad, f"{op}_weight")(
                    _to_array(x, op, "input"), tuple(w.shape), gy, stride, padding,
                    dilation, groups))
            if need_b:
                gb = _to_tensor(_grad.bias(gy, channel_axis=1 if x.dim() == nd + 2 else 0))
        return gx, gw, gb, None, None, None, None, None


class _ConvTransposeFunctionBase(torch.autograd.Function):
    """``y = conv_transpose{nd}d(x, w, b)`` with cyconv's kernels.

    ``apply(input, weight, bias, stride, padding, output_padding, groups, dilation,
    algorithm)``.

    Notes
    -----
    A transposed convolution is the input gradient of a convolution, so its own input
    gradient is a convolution: ``gx = cyconv.grad.conv_transpose{nd}d_input(x.shape, w,
    gy)``; ``gw = cyconv.grad.conv_transpose{nd}d_weight(x, w.shape, gy)``;
    ``gb = cyconv.grad.bias(gy)``.
    """
    _nd = 0

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, output_padding, groups, dilation,
                algorithm):
        nd = ctx._forward_cls._nd
        op = f"conv_transpose{nd}d"
        _check_tensors(op, input=input, weight=weight, bias=bias)
        with _device_of(input):
            y = getattr(cyconv, op)(
                _to_array(input, op, "input"), _to_array(weight, op, "weight"),
                _to_array(bias, op, "bias"), stride, padding, output_padding, groups,
                dilation, algorithm=algorithm)
            y = _to_tensor(y)
        ctx.save_for_backward(input, weight)
        ctx.args = (stride, padding, output_padding, groups, dilation)
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output):
        nd = ctx._forward_cls._nd
        op = f"conv_transpose{nd}d"
        x, w = ctx.saved_tensors
        stride, padding, output_padding, groups, dilation = ctx.args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        with _device_of(grad_output):
            gy = _to_array(grad_output, op, "grad_output")
            if need_x:
                gx = _to_tensor(getattr(_grad, f"{op}_input")(
                    tuple(x.shape), _to_array(w, op, "weight"), gy, stride, padding,
                    output_padding, groups, dilation))
            if need_w:
                gw = _to_tensor(getattr(_grad, f"{op}_weight")(
                    _to_array(x, op, "input"), tuple(w.shape), gy, stride, padding,
                    output_padding, groups, dilation))
            if need_b:
                gb = _to_tensor(_grad.bias(gy, channel_axis=1 if x.dim() == nd + 2 else 0))
        return gx, gw, gb, None, None, None, None, None, None


# -- autograd functions: pooling and pad ------------------------------------------------------

class _MaxPoolFunctionBase(torch.autograd.Function):
    """``max_pool{nd}d`` with cyconv's kernels.

    ``apply(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)``
    returns the output, or ``(output, indices)`` when ``return_indices`` (the indices
    are int64 and not differentiable).  The backward pass scatters ``grad_output`` to
    the recorded maxima with ``cyconv.grad.max_pool{nd}d``.
    """
    _nd = 0

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode,
                return_indices):
        op = f"max_pool{ctx._forward_cls._nd}d"
        want_indices = bool(return_indices) or ctx.needs_input_grad[0]
        with _device_of(input):
            out = getattr(cyconv, op)(_to_array(input, op, "input"), kernel_size, stride,
                                      padding, dilation, ceil_mode,
                                      return_indices=want_indices)
            y, idx = (out if want_indices else (out, None))
            y = _to_tensor(y)
            idx = None if idx is None else _to_tensor(idx)
        ctx.input_shape = tuple(input.shape)
        if idx is not None:
            ctx.save_for_backward(idx)
        if return_indices:
            ctx.mark_non_differentiable(idx)
            return y, idx
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output, grad_indices=None):
        op = f"max_pool{ctx._forward_cls._nd}d"
        (idx,) = ctx.saved_tensors
        with _device_of(grad_output):
            gx = getattr(_grad, op)(_to_array(grad_output, op, "grad_output"),
                                    _to_indices(idx), ctx.input_shape)
            gx = _to_tensor(gx)
        return gx, None, None, None, None, None, None


def _to_indices(t):
    """The int64 indices tensor of a max pooling as a NumPy/CuPy array (no copy)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.contiguous().numpy()
    return _cupy("max_pool").from_dlpack(t.contiguous())


class _AvgPoolFunctionBase(torch.autograd.Function):
    """``avg_pool{nd}d`` with cyconv's kernels.

    ``apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override)`` (``divisor_override`` must be None for 1-D).  The backward pass
    spreads each ``grad_output`` element over its window with
    ``cyconv.grad.avg_pool{nd}d``.
    """
    _nd = 0

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        nd = ctx._forward_cls._nd
        op = f"avg_pool{nd}d"
        args = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        if nd > 1:
            args += (divisor_override,)
        elif divisor_override is not None:
            raise ValueError(f"{op}: divisor_override is not an argument of avg_pool1d "
                             f"(as in PyTorch), got {divisor_override!r}")
        with _device_of(input):
            y = _to_tensor(getattr(cyconv, op)(_to_array(input, op, "input"), *args))
        ctx.input_shape = tuple(input.shape)
        ctx.args = args
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output):
        op = f"avg_pool{ctx._forward_cls._nd}d"
        with _device_of(grad_output):
            gx = getattr(_grad, op)(_to_array(grad_output, op, "grad_output"),
                                    ctx.input_shape, *ctx.args)
            gx = _to_tensor(gx)
        return gx, None, None, None, None, None, None


class _AdaptiveAvgPoolFunctionBase(torch.autograd.Function):
    """``adaptive_avg_pool{nd}d`` with cyconv's kernels: ``apply(input, output_size)``."""
    _nd = 0

    @staticmethod
    def forward(ctx, input, output_size):
        op = f"adaptive_avg_pool{ctx._forward_cls._nd}d"
        with _device_of(input):
            y = _to_tensor(getattr(cyconv, op)(_to_array(input, op, "input"), output_size))
        ctx.input_shape = tuple(input.shape)
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output):
        op = f"adaptive_avg_pool{ctx._forward_cls._nd}d"
        with _device_of(grad_output):
            gx = getattr(_grad, op)(_to_array(grad_output, op, "grad_output"),
                                    ctx.input_shape)
            gx = _to_tensor(gx)
        return gx, None


class PadFunction(torch.autograd.Function):
    """``pad(input, pad, mode, value)`` with cyconv's kernels (``torch.nn.functional.pad``
    semantics); the backward pass folds the padding back with ``cyconv.grad.pad``."""

    @staticmethod
    def forward(ctx, input, pad, mode, value):
        with _device_of(input):
            y = _to_tensor(cyconv.pad(_to_array(input, "pad", "input"), pad, mode, value))
        ctx.input_shape = tuple(input.shape)
        ctx.args = (pad, mode)
        return y

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad_output):
        with _device_of(grad_output):
            gx = _grad.pad(_to_array(grad_output, "pad", "grad_output"), ctx.input_shape,
                           *ctx.args)
            gx = _to_tensor(gx)
        return gx, None, None, None


def _function_class(base, name, nd):
    cls = type(name, (base,), {"_nd": nd, "__module__": __name__, "__qualname__": name,
                               "__doc__": base.__doc__.replace("{nd}", str(nd))})
    globals()[name] = cls
    return cls


for _nd in (1, 2, 3):
    _function_class(_ConvFunctionBase, f"Conv{_nd}dFunction", _nd)
    _function_class(_ConvTransposeFunctionBase, f"ConvTranspose{_nd}dFunction", _nd)
    _function_class(_MaxPoolFunctionBase, f"MaxPool{_nd}dFunction", _nd)
    _function_class(_AvgPoolFunctionBase, f"AvgPool{_nd}dFunction", _nd)
    _function_class(_AdaptiveAvgPoolFunctionBase, f"AdaptiveAvgPool{_nd}dFunction", _nd)


# -- functional ops ---------------------------------------------------------------------------

_FUNCTIONAL_DOC = """``torch.nn.functional.{name}`` computed by ``cyconv.{name}``.

Takes and returns ``torch.Tensor`` s (CPU, or CUDA with CuPy installed) and records
itself on the autograd tape; its backward pass runs ``cyconv.grad`` kernels.  The
arguments and their meaning are those of ``cyconv.{name}``:

{cyconv_doc}"""


def _make_functional(nd):
    Conv = globals()[f"Conv{nd}dFunction"]
    ConvT = globals()[f"ConvTranspose{nd}dFunction"]
    MaxPool = globals()[f"MaxPool{nd}dFunction"]
    AvgPool = globals()[f"AvgPool{nd}dFunction"]
    AdaptiveAvgPool = globals()[f"AdaptiveAvgPool{nd}dFunction"]

    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             algorithm="auto"):
        return Conv.apply(input, weight, bias, _plain(stride), _plain(padding),
                          _plain(dilation), groups, algorithm)

    def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1, *, algorithm="auto"):
        return ConvT.apply(input, weight, bias, _plain(stride), _plain(padding),
                           _plain(output_padding), groups, _plain(dilation), algorithm)

    def max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
        return MaxPool.apply(input, _plain(kernel_size), _plain(stride), _plain(padding),
                             _plain(dilation), ceil_mode, return_indices)

    if nd == 1:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True):
            return AvgPool.apply(input, _plain(kernel_size), _plain(stride),
                                 _plain(padding), ceil_mode, count_include_pad, None)
    else:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
            return AvgPool.apply(input, _plain(kernel_size), _plain(stride),
                                 _plain(padding), ceil_mode, count_include_pad,
                                 divisor_override)

    def adaptive_avg_pool(input, output_size):
        return AdaptiveAvgPool.apply(input, _plain(output_size))

    fns = {f"conv{nd}d": conv, f"conv_transpose{nd}d": conv_transpose,
           f"max_pool{nd}d": max_pool, f"avg_pool{nd}d": avg_pool,
           f"adaptive_avg_pool{nd}d": adaptive_avg_pool}
    for name, fn in fns.items():
        fn.__name__ = fn.__qualname__ = name
        fn.__module__ = __name__
        fn.__doc__ = _FUNCTIONAL_DOC.format(name=name,
                                            cyconv_doc=getattr(cyconv, name).__doc__ or "")
    return fns


for _nd in (1, 2, 3):
    globals().update(_make_functional(_nd))


def pad(input, pad, mode="constant", value=None):
    """``torch.nn.functional.pad`` computed by ``cyconv.pad`` (and ``cyconv.grad.pad``).

    Parameters
    ----------
    input : torch.Tensor
    pad : tuple of an even number of ints
        ``(before, after)`` amounts from the last dim backwards; negative amounts crop.
    mode : {'constant', 'reflect', 'replicate', 'circular'}
    value : float, optional
        The fill of 'constant' mode (0 when None).
    """
    return PadFunction.apply(input, _plain(pad), mode, value)


# -- modules ----------------------------------------------------------------------------------

class _CyconvModule:
    """Base of every module whose output cyconv computes.

    ``_cyconv_nd`` (set on each concrete class) is the number of spatial dims; the
    module's repr names it ``cyconv.<PyTorch name>`` so a converted model shows which
    layers run on cyconv.
    """
    _cyconv_nd = 0

    def _get_name(self):
        return "cyconv." + super()._get_name()


class _ConvMixin(_CyconvModule):
    """Replaces ``torch.nn.Conv{nd}d._conv_forward``.

    A padding mode other than 'zeros' pads with :func:`pad` (cyconv's kernel) and then
    runs a 'valid' convolution, exactly as PyTorch's ``_conv_forward`` does with
    ``F.pad``.
    """

    def _conv_forward(self, input, weight, bias):
        conv = _FUNCTIONS["conv"][self._cyconv_nd]
        if self.padding_mode != "zeros":
            padded = pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation,
                    self.groups)


class _ConvTransposeMixin(_CyconvModule):
    """Replaces ``torch.nn.ConvTranspose{nd}d.forward`` (``output_size`` works as there)."""

    def forward(self, input, output_size=None):
        nd = self._cyconv_nd
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for "
                             f"ConvTranspose{nd}d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, nd, self.dilation)
        return _FUNCTIONS["conv_transpose"][nd](
            input, self.weight, self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation)


class _MaxPoolMixin(_CyconvModule):
    """Replaces ``torch.nn.MaxPool{nd}d.forward``."""

    def forward(self, input):
        return _FUNCTIONS["max_pool"][self._cyconv_nd](
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class _AvgPoolMixin(_CyconvModule):
    """Replaces ``torch.nn.AvgPool{nd}d.forward``."""

    def forward(self, input):
        nd = self._cyconv_nd
        extra = {} if nd == 1 else {"divisor_override": self.divisor_override}
        return _FUNCTIONS["avg_pool"][nd](
            input, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad, **extra)


class _AdaptiveAvgPoolMixin(_CyconvModule):
    """Replaces ``torch.nn.AdaptiveAvgPool{nd}d.forward``."""

    def forward(self, input):
        return _FUNCTIONS["adaptive_avg_pool"][self._cyconv_nd](input, self.output_size)


_FUNCTIONS = {kind: {nd: globals()[f"{kind}{nd}d"] for nd in (1, 2, 3)}
              for kind in ("conv", "conv_transpose", "max_pool", "avg_pool",
                           "adaptive_avg_pool")}

#: torch.nn class -> (the mixin that computes it with cyconv, spatial dims, the method
#: the mixin replaces, whether convert() replaces it without ``pooling=True``).
_TORCH_CLASSES = {}
for _nd in (1, 2, 3):
    _TORCH_CLASSES.update({
        getattr(_nn, f"Conv{_nd}d"): (_ConvMixin, _nd, "_conv_forward", True),
        getattr(_nn, f"ConvTranspose{_nd}d"): (_ConvTransposeMixin, _nd, "forward", True),
        getattr(_nn, f"MaxPool{_nd}d"): (_MaxPoolMixin, _nd, "forward", False),
        getattr(_nn, f"AvgPool{_nd}d"): (_AvgPoolMixin, _nd, "forward", False),
        getattr(_nn, f"AdaptiveAvgPool{_nd}d"): (_AdaptiveAvgPoolMixin, _nd, "forward",
                                                 False),
    })

_MODULE_DOC = """``torch.nn.{name}`` computed by cyconv: the same constructor, parameters,
``state_dict`` and hooks; only {method} runs cyconv kernels (forward and backward).

``isinstance(m, torch.nn.{name})`` holds, so code that inspects layer types keeps
working.  Build one directly, or let :func:`convert` turn an existing
``torch.nn.{name}`` into one in place.
"""

_cyconv_classes = {}   # torch class (or a user subclass of one) -> its cyconv class


def _cyconv_class(cls):
    """The cyconv counterpart of a torch.nn class, made once per class.

    For the torch classes themselves these are the public classes of this module
    (:class:`Conv2d`, ...); for a user subclass of one, a subclass of it whose only
    change is the computing method.
    """
    made = _cyconv_classes.get(cls)
    if made is not None:
        return made
    base = next(b for b in cls.__mro__ if b in _TORCH_CLASSES)
    mixin, nd, method, _ = _TORCH_CLASSES[base]
    public = cls is base
    name = cls.__name__ if public else f"Cyconv{cls.__name__}"
    made = type(name, (mixin, cls), {
        "_cyconv_nd": nd, "__module__": __name__ if public else cls.__module__,
        "__qualname__": name if public else f"Cyconv{cls.__qualname__}",
        "__doc__": _MODULE_DOC.format(
            name=base.__name__,
            method="``forward``" if method == "forward" else "``_conv_forward``")})
    _cyconv_classes[cls] = made
    return made


for _cls in list(_TORCH_CLASSES):
    globals()[_cls.__name__] = _cyconv_class(_cls)


def _convertible(module, pooling):
    """(cyconv class, None) for a module convert() replaces, else (None, reason or None)."""
    if isinstance(module, _CyconvModule):
        return None, None
    cls = type(module)
    base = next((b for b in cls.__mro__ if b in _TORCH_CLASSES), None)
    if base is None:
        return None, None
    _, _, method, always = _TORCH_CLASSES[base]
    if not (always or pooling):
        return None, None
    if getattr(cls, method) is not getattr(base, method):
        return None, (f"{cls.__qualname__} overrides {base.__name__}.{method}, which cyconv "
                      f"would replace")
    lazy = importlib.import_module("torch.nn.modules.lazy").LazyModuleMixin
    if isinstance(module, lazy) and module.has_uninitialized_params():
        return None, (f"{cls.__qualname__} has uninitialized parameters; run one forward "
                      f"pass before convert()")
    return _cyconv_class(cls), None


def convert(model, *, pooling=True):
    """Make every convolution (and pooling) layer of ``model`` compute through cyconv.

    Each ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` (and, with ``pooling``,
    each ``nn.MaxPool*``, ``nn.AvgPool*`` and ``nn.AdaptiveAvgPool*``) in ``model``,
    ``model`` itself included, becomes the matching cyconv module of this package:
    the *same* object, whose class becomes a subclass of its own class that only
    replaces the method computing the output.  So every ``Parameter``, buffer, hook,
    attribute and ``state_dict`` key is untouched, optimizers created before or after
    keep working, and an existing training script runs on cyconv kernels unchanged.

    Parameters
    ----------
    model : torch.nn.Module
    pooling : bool, default True
        Also convert max, average and adaptive average pooling layers.

    Returns
    -------
    torch.nn.Module
        ``model`` itself, converted in place.

    Notes
    -----
    All padding modes work: 'reflect', 'replicate' and 'circular' pad with cyconv's
    ``pad`` and then run a 'valid' convolution, as PyTorch does.  Layers already
    converted are left alone (converting twice is harmless).  A subclass that overrides
    the method cyconv replaces (``_conv_forward`` of a convolution, ``forward`` of the
    others), and a lazy layer that has not run yet, are left unchanged with a warning.
    Converted models pickle as long as their classes can be imported: the cyconv
    classes of the ``torch.nn`` layers can, subclasses made for user classes cannot
    (save the ``state_dict`` instead).
    """
    if not isinstance(model, _nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    for name, module in model.named_modules():
        cls, reason = _convertible(module, pooling)
        if cls is not None:
            module.__class__ = cls
        elif reason is not None:
            warnings.warn(f"convert: left {name or 'the model'} unchanged: {reason}",
                          stacklevel=2)
    return model
