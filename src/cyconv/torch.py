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
  ``MaxPool2dFunction``, ...) and behind their backward passes (``Conv2dInputFunction``,
  ``Conv2dWeightFunction``, ``BiasGradFunction``, ``MaxPool2dBackwardFunction``, ...),
  for code that wants to call ``.apply`` itself.
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
- Derivatives of any order work (``create_graph=True``, gradient penalties,
  Hessian-vector products): every backward pass is itself built from these autograd
  functions, so it too runs on cyconv kernels.
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
import importlib
import os
import warnings

import numpy as np

import cyconv
from cyconv import _cuda
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
    + [f"{kind}{nd}d{suffix}Function" for nd in (1, 2, 3)
       for kind, suffix in (("Conv", ""), ("Conv", "Input"), ("Conv", "Weight"),
                            ("ConvTranspose", ""), ("ConvTranspose", "Input"),
                            ("ConvTranspose", "Weight"), ("MaxPool", ""), ("MaxPool", "Backward"),
                            ("AvgPool", ""), ("AvgPool", "Backward"), ("AdaptiveAvgPool", ""),
                            ("AdaptiveAvgPool", "Backward"))]
    + ["BiasGradFunction", "PadFunction", "PadBackwardFunction"])


# -- crossing between tensors and arrays ---------------------------------------------------

_FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _cupy(op):
    """CuPy, for CUDA tensors (:func:`cyconv._cuda.require_cupy`: CUDAUnavailableError
    when it is missing or cannot reach the device; or move the tensors to the CPU)."""
    return _cuda.require_cupy(f"{op} (CUDA tensors)")


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
    ptr = torch.cuda.current_stream(t.device).cuda_stream
    with cupy.cuda.Device(t.device.index):
        # PyTorch's default stream is CUDA's legacy default stream (pointer 0).
        stream = cupy.cuda.Stream.null if ptr == 0 else cupy.cuda.ExternalStream(ptr)
        with stream:
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


def _fn(name, nd):
    """This module's autograd function ``name.format(nd) + 'Function'``, e.g.
    ``_fn('Conv{}dInput', 2)`` is :class:`Conv2dInputFunction`."""
    return globals()[name.format(nd) + "Function"]


def _run(op, fn, **tensors):
    """``fn(*arrays)``: the named tensors checked and crossed to arrays (in order), the
    work done on the first one's device, the result crossed back to a tensor."""
    _check_tensors(op, **tensors)
    with _device_of(next(iter(tensors.values()))):
        arrays = [_to_array(t, op, name) for name, t in tensors.items()]
        return _to_tensor(fn(*arrays))


# -- autograd functions: convolutions -------------------------------------------------------
#
# A convolution y = conv(x, w) is bilinear, and so are its two gradients,
#     gx = conv_input(gy, w)        (cyconv.grad.conv{nd}d_input)
#     gw = conv_weight(x, gy)       (cyconv.grad.conv{nd}d_weight).
# Each of the three is the adjoint of another in one argument:
#     <ggx, conv_input(gy, w)> = <conv(ggx, w), gy>
#     <ggw, conv_weight(x, gy)> = <conv(x, ggw), gy>
# so the gradients of the gradients are again conv, conv_input and conv_weight.  Each is an
# autograd function whose backward pass applies the others: derivatives of any order
# (double backward, gradient penalties, Hessian-vector products) run on cyconv kernels.
# A transposed convolution is the same family with its own three functions
# (conv_transpose, cyconv.grad.conv_transpose{nd}d_input and _weight), whose explicit
# output sizes make output_padding exact in every direction.

_CONV_ARGS = ("stride", "padding", "dilation", "groups", "algorithm")
_CONV_TRANSPOSE_ARGS = ("stride", "padding", "output_padding", "groups", "dilation",
                        "algorithm")


class _ConvFamily:
    """Names shared by the three functions of a convolution family."""
    _nd = 0
    _transposed = False

    @classmethod
    def _op(cls):
        return f"conv_transpose{cls._nd}d" if cls._transposed else f"conv{cls._nd}d"

    @classmethod
    def _cls(cls, role):
        """The family's ``''`` (forward), ``'Input'`` or ``'Weight'`` function."""
        kind = "ConvTranspose{}d" if cls._transposed else "Conv{}d"
        return _fn(kind + role, cls._nd)

    @classmethod
    def _forward(cls, input, weight, bias, kw):
        """The family's forward function applied with keyword arguments ``kw``."""
        names = _CONV_TRANSPOSE_ARGS if cls._transposed else _CONV_ARGS
        return cls._cls("").apply(input, weight, bias, *(kw[n] for n in names))


class _ConvFunctionBase(_ConvFamily, torch.autograd.Function):
    """``y = {op}(x, w, b)`` on cyconv's kernels, differentiable to any order.

    ``apply({args})``.

    Notes
    -----
    Backward: ``gx = {Name}InputFunction(gy, w)`` (``cyconv.grad.{op}_input``),
    ``gw = {Name}WeightFunction(x, gy)`` (``cyconv.grad.{op}_weight``) and
    ``gb = BiasGradFunction(gy)`` (``cyconv.grad.bias``), each only when needed.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, *args):
        cls = ctx._forward_cls
        op = cls._op()
        kw = dict(zip(_CONV_TRANSPOSE_ARGS if cls._transposed else _CONV_ARGS, args))
        _check_tensors(op, input=input, weight=weight, bias=bias)
        with _device_of(input):
            y = _to_tensor(getattr(cyconv, op)(
                _to_array(input, op, "input"), _to_array(weight, op, "weight"),
                _to_array(bias, op, "bias"), **kw))
        ctx.save_for_backward(input, weight)
        ctx.kw = kw
        return y

    @staticmethod
    def backward(ctx, grad_output):
        cls = ctx._forward_cls
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:
            gx = cls._cls("Input").apply(grad_output, w, tuple(x.shape), ctx.kw)
        if need_w:
            gw = cls._cls("Weight").apply(x, grad_output, tuple(w.shape), ctx.kw)
        if need_b:
            gb = BiasGradFunction.apply(grad_output, 1 if x.dim() == cls._nd + 2 else 0)
        return (gx, gw, gb) + (None,) * (len(ctx.kw))


class _ConvInputFunctionBase(_ConvFamily, torch.autograd.Function):
    """``gx = cyconv.grad.{op}_input(input_size, w, gy, **kw)`` as an autograd function.

    ``apply(grad_output, weight, input_size, kw)`` with ``kw`` the op's keyword
    arguments; its gradients are ``{op}(ggx, w)`` for ``grad_output`` and
    ``{op}_weight(ggx, gy)`` for ``weight``.
    """

    @staticmethod
    def forward(ctx, grad_output, weight, input_size, kw):
        op = f"{ctx._forward_cls._op()}_input"
        gx = _run(op, lambda gy, w: getattr(_grad, op)(input_size, w, gy, **kw),
                  grad_output=grad_output, weight=weight)
        ctx.save_for_backward(grad_output, weight)
        ctx.kw = kw
        return gx

    @staticmethod
    def backward(ctx, ggx):
        cls = ctx._forward_cls
        gy, w = ctx.saved_tensors
        d_gy = d_w = None
        if ctx.needs_input_grad[0]:
            d_gy = cls._forward(ggx, w, None, ctx.kw)
        if ctx.needs_input_grad[1]:
            d_w = cls._cls("Weight").apply(ggx, gy, tuple(w.shape), ctx.kw)
        return d_gy, d_w, None, None


class _ConvWeightFunctionBase(_ConvFamily, torch.autograd.Function):
    """``gw = cyconv.grad.{op}_weight(x, weight_size, gy, **kw)`` as an autograd function.

    ``apply(input, grad_output, weight_size, kw)``; its gradients are
    ``{op}_input(gy, ggw)`` for ``input`` and ``{op}(x, ggw)`` for ``grad_output``.
    """

    @staticmethod
    def forward(ctx, input, grad_output, weight_size, kw):
        op = f"{ctx._forward_cls._op()}_weight"
        gw = _run(op, lambda x, gy: getattr(_grad, op)(x, weight_size, gy, **kw),
                  input=input, grad_output=grad_output)
        ctx.save_for_backward(input, grad_output)
        ctx.kw = kw
        return gw

    @staticmethod
    def backward(ctx, ggw):
        cls = ctx._forward_cls
        x, gy = ctx.saved_tensors
        d_x = d_gy = None
        if ctx.needs_input_grad[0]:
            d_x = cls._cls("Input").apply(gy, ggw, tuple(x.shape), ctx.kw)
        if ctx.needs_input_grad[1]:
            d_gy = cls._forward(x, ggw, None, ctx.kw)
        return d_x, d_gy, None, None


class BiasGradFunction(torch.autograd.Function):
    """``gb = cyconv.grad.bias(gy, channel_axis)``: ``gy`` summed over every other axis.

    ``apply(grad_output, channel_axis)``; its gradient broadcasts ``ggb`` back over
    ``grad_output``'s shape.
    """

    @staticmethod
    def forward(ctx, grad_output, channel_axis):
        gb = _run("bias", lambda gy: _grad.bias(gy, channel_axis=channel_axis),
                  grad_output=grad_output)
        ctx.shape = tuple(grad_output.shape)
        ctx.channel_axis = channel_axis
        return gb

    @staticmethod
    def backward(ctx, ggb):
        view = [1] * len(ctx.shape)
        view[ctx.channel_axis] = -1
        return ggb.reshape(view).expand(ctx.shape), None


# -- autograd functions: pooling and pad ------------------------------------------------------
#
# Pooling and padding are linear in their input (max pooling once its indices are fixed),
# so each backward pass is the adjoint operator, whose own gradient is the forward operator
# again: average pooling <-> cyconv.grad.avg_pool, pad <-> cyconv.grad.pad, and the max-pool
# scatter (cyconv.grad.max_pool) <-> a gather at the same indices.

class _MaxPoolFunctionBase(torch.autograd.Function):
    """``max_pool{nd}d`` on cyconv's kernels.

    ``apply(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)``
    returns the output, or ``(output, indices)`` when ``return_indices`` (int64, not
    differentiable).  Backward: ``MaxPool{nd}dBackwardFunction(gy, indices)``, the
    scatter of ``cyconv.grad.max_pool{nd}d``.
    """
    _nd = 0

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode,
                return_indices):
        op = f"max_pool{ctx._forward_cls._nd}d"
        _check_tensors(op, input=input)
        want_indices = bool(return_indices) or ctx.needs_input_grad[0]
        with _device_of(input):
            out = getattr(cyconv, op)(_to_array(input, op, "input"), kernel_size, stride,
                                      padding, dilation, ceil_mode,
                                      return_indices=want_indices)
            y, idx = out if want_indices else (out, None)
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
    def backward(ctx, grad_output, grad_indices=None):
        (idx,) = ctx.saved_tensors
        gx = _fn("MaxPool{}dBackward", ctx._forward_cls._nd).apply(grad_output, idx,
                                                                   ctx.input_shape)
        return gx, None, None, None, None, None, None


class _MaxPoolBackwardFunctionBase(torch.autograd.Function):
    """``cyconv.grad.max_pool{nd}d(gy, indices, input_size)`` as an autograd function:
    each ``gy`` element added at its index.  Its gradient gathers at the indices."""
    _nd = 0

    @staticmethod
    def forward(ctx, grad_output, indices, input_size):
        op = f"max_pool{ctx._forward_cls._nd}d"
        _check_tensors(op, grad_output=grad_output, indices=indices)
        with _device_of(grad_output):
            gx = _to_tensor(getattr(_grad, op)(_to_array(grad_output, op, "grad_output"),
                                               _to_indices(indices), input_size))
        ctx.save_for_backward(indices)
        return gx

    @staticmethod
    def backward(ctx, ggx):
        (idx,) = ctx.saved_tensors
        nd = ctx._forward_cls._nd
        plane = ggx.flatten(start_dim=ggx.dim() - nd)
        return plane.gather(-1, idx.flatten(start_dim=idx.dim() - nd)).view(idx.shape), \
            None, None


def _to_indices(t):
    """The int64 indices tensor of a max pooling as a NumPy/CuPy array (no copy)."""
    if t.dtype != torch.int64:
        raise TypeError(f"max_pool: indices must be int64, got {t.dtype}")
    t = t.detach().contiguous()
    if t.device.type == "cpu":
        return t.numpy()
    return _cupy("max_pool").from_dlpack(t)


class _AvgPoolFunctionBase(torch.autograd.Function):
    """``avg_pool{nd}d`` on cyconv's kernels.

    ``apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override)`` (``divisor_override`` must be None for 1-D).  Backward:
    ``AvgPool{nd}dBackwardFunction`` (``cyconv.grad.avg_pool{nd}d``).
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
        y = _run(op, lambda x: getattr(cyconv, op)(x, *args), input=input)
        ctx.input_shape = tuple(input.shape)
        ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        gx = _fn("AvgPool{}dBackward", ctx._forward_cls._nd).apply(
            grad_output, ctx.input_shape, *ctx.args)
        return gx, None, None, None, None, None, None


class _AvgPoolBackwardFunctionBase(torch.autograd.Function):
    """``cyconv.grad.avg_pool{nd}d`` as an autograd function: ``apply(grad_output,
    input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override)``.  Its gradient is ``avg_pool{nd}d`` itself."""
    _nd = 0

    @staticmethod
    def forward(ctx, grad_output, input_size, *args):
        nd = ctx._forward_cls._nd
        op = f"avg_pool{nd}d"
        pos = args if nd > 1 else args[:-1]      # avg_pool1d has no divisor_override
        gx = _run(op, lambda gy: getattr(_grad, op)(gy, input_size, *pos),
                  grad_output=grad_output)
        ctx.args = args
        return gx

    @staticmethod
    def backward(ctx, ggx):
        d_gy = _fn("AvgPool{}d", ctx._forward_cls._nd).apply(ggx, *ctx.args)
        return (d_gy,) + (None,) * (1 + len(ctx.args))


class _AdaptiveAvgPoolFunctionBase(torch.autograd.Function):
    """``adaptive_avg_pool{nd}d`` on cyconv's kernels: ``apply(input, output_size)``.
    Backward: ``AdaptiveAvgPool{nd}dBackwardFunction``."""
    _nd = 0

    @staticmethod
    def forward(ctx, input, output_size):
        op = f"adaptive_avg_pool{ctx._forward_cls._nd}d"
        y = _run(op, lambda x: getattr(cyconv, op)(x, output_size), input=input)
        ctx.input_shape = tuple(input.shape)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        gx = _fn("AdaptiveAvgPool{}dBackward", ctx._forward_cls._nd).apply(
            grad_output, ctx.input_shape)
        return gx, None


class _AdaptiveAvgPoolBackwardFunctionBase(torch.autograd.Function):
    """``cyconv.grad.adaptive_avg_pool{nd}d(gy, input_size)`` as an autograd function.
    Its gradient is ``adaptive_avg_pool{nd}d`` to ``gy``'s size."""
    _nd = 0

    @staticmethod
    def forward(ctx, grad_output, input_size):
        op = f"adaptive_avg_pool{ctx._forward_cls._nd}d"
        gx = _run(op, lambda gy: getattr(_grad, op)(gy, input_size), grad_output=grad_output)
        ctx.output_size = tuple(grad_output.shape[grad_output.dim() - ctx._forward_cls._nd:])
        return gx

    @staticmethod
    def backward(ctx, ggx):
        return _fn("AdaptiveAvgPool{}d", ctx._forward_cls._nd).apply(ggx, ctx.output_size), \
            None


class PadFunction(torch.autograd.Function):
    """``pad(input, pad, mode, value)`` on cyconv's kernels (``torch.nn.functional.pad``
    semantics).  Backward: ``PadBackwardFunction`` (``cyconv.grad.pad``)."""

    @staticmethod
    def forward(ctx, input, pad, mode, value):
        y = _run("pad", lambda x: cyconv.pad(x, pad, mode, value), input=input)
        ctx.input_shape = tuple(input.shape)
        ctx.args = (pad, mode)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        return PadBackwardFunction.apply(grad_output, ctx.input_shape, *ctx.args), \
            None, None, None


class PadBackwardFunction(torch.autograd.Function):
    """``cyconv.grad.pad(gy, input_size, pad, mode)`` as an autograd function.  Its
    gradient is the padding itself (with zeros: the fill value is a constant)."""

    @staticmethod
    def forward(ctx, grad_output, input_size, pad, mode):
        gx = _run("pad", lambda gy: _grad.pad(gy, input_size, pad, mode),
                  grad_output=grad_output)
        ctx.args = (pad, mode)
        return gx

    @staticmethod
    def backward(ctx, ggx):
        return PadFunction.apply(ggx, *ctx.args, None), None, None, None


def _function_class(base, name, nd, transposed=False):
    op = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    args = ("input, weight, bias, " + ", ".join(
        _CONV_TRANSPOSE_ARGS if transposed else _CONV_ARGS))
    doc = base.__doc__.replace("{nd}", str(nd)).replace("{op}", op).replace(
        "{Name}", name[:-len("Function")]).replace("{args}", args)
    cls = type(name, (base,), {"_nd": nd, "_transposed": transposed, "__module__": __name__,
                               "__qualname__": name, "__doc__": doc})
    globals()[name] = cls
    return cls


_FUNCTION_NAMES = {
    _MaxPoolFunctionBase: "MaxPool{}dFunction",
    _MaxPoolBackwardFunctionBase: "MaxPool{}dBackwardFunction",
    _AvgPoolFunctionBase: "AvgPool{}dFunction",
    _AvgPoolBackwardFunctionBase: "AvgPool{}dBackwardFunction",
    _AdaptiveAvgPoolFunctionBase: "AdaptiveAvgPool{}dFunction",
    _AdaptiveAvgPoolBackwardFunctionBase: "AdaptiveAvgPool{}dBackwardFunction",
}
for _nd in (1, 2, 3):
    for _transposed, _kind in ((False, "Conv"), (True, "ConvTranspose")):
        for _base, _role in ((_ConvFunctionBase, ""), (_ConvInputFunctionBase, "Input"),
                             (_ConvWeightFunctionBase, "Weight")):
            _function_class(_base, f"{_kind}{_nd}d{_role}Function", _nd, _transposed)
    for _base, _name in _FUNCTION_NAMES.items():
        _function_class(_base, _name.format(_nd), _nd)


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
