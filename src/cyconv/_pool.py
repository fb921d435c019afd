"""Pooling, padding, ReLU and linear: the public functional ops and their gradients.

Each op takes the package's one path: check devices and dtypes, normalise the arguments
into a parameter object (:mod:`cyconv._params`), then call the backend for the array
type (:mod:`cyconv._cpu_pool` for NumPy, :mod:`cyconv._gpu` for CuPy), which works on
batched arrays; unbatched inputs give unbatched outputs.  The checked parameters are
cached by the call's arguments (:func:`cyconv._dispatch.planned`), as the convolutions'
plans are, so a repeated call skips the checks.  Semantics are PyTorch's
(``torch.nn.functional`` for the ops, PyTorch's autograd for the gradients), except that
errors PyTorch raises as ``RuntimeError`` are ``ValueError`` here.

:mod:`cyconv.functional` exports the forward ops under their PyTorch names and
:mod:`cyconv.grad` exports the gradients (``grad_max_pool2d`` here is
``cyconv.grad.max_pool2d``).
"""
from __future__ import annotations

import numpy as np

from . import _cpu_pool
from ._dispatch import backend, batched, planned, prepare, unbatch
from ._params import (adaptive_pool_params, array_module_name, check_indices,
                      linear_params, pad_params, pool_grad_shape, pool_params, size_tuple)

_FORWARD = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
            "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_avg_pool3d", "relu", "linear", "pad"]
_GRAD = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
         "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
         "relu", "pad"]
__all__ = _FORWARD + [f"grad_{name}" for name in _GRAD]


def _check_gy(op, grad_output, expected, detail):
    if tuple(grad_output.shape) != tuple(expected):
        raise ValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, expected "
                         f"{tuple(expected)} {detail}")


#: the dtypes of NumPy arrays the CPU kernels take (any byte order: they copy to native).
_CPU_DTYPES = frozenset(np.dtype(t).newbyteorder(o) for t in ("f4", "f8") for o in "<>")

_SHAPES = {1: ("(N, C, L)", "(C, L)", "L"), 2: ("(N, C, H, W)", "(C, H, W)", "H, W"),
           3: ("(N, C, D, H, W)", "(C, D, H, W)", "D, H, W")}


# -- max pooling ---------------------------------------------------------------------------

def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    device, p = planned(_plan_max_pool, f"max_pool{nd}d", (input,),
                        (nd, kernel_size, stride, padding, dilation, ceil_mode))
    y, idx = backend(device).max_pool_forward(p, batched(input, p), bool(return_indices))
    y = unbatch(y, p)
    return (y, unbatch(idx, p)) if return_indices else y


def _plan_max_pool(op, input, nd, kernel_size, stride, padding, dilation, ceil_mode):
    device, _ = prepare(op, input=input)
    return device, pool_params(op, nd, "max", input.shape, kernel_size, stride, padding,
                               dilation, ceil_mode)


def _grad_max_pool(nd, grad_output, indices, input_size):
    device, ps = planned(_plan_grad_max_pool, f"max_pool{nd}d", (grad_output, indices),
                         (nd, input_size))
    gx = backend(device).max_pool_backward(ps, batched(grad_output, ps),
                                            batched(indices, ps))
    return unbatch(gx, ps)


def _plan_grad_max_pool(op, grad_output, indices, nd, input_size):
    device, _ = prepare(op, grad_output=grad_output)
    array_module_name(op, grad_output=grad_output, indices=indices)
    ps = pool_grad_shape(op, nd, input_size, grad_output.shape)
    check_indices(op, indices, grad_output.shape)
    return device, ps


_MAX_DOC = """{nd}-D max pooling over an input of shape {shape} or unbatched {ushape}.

Parameters
----------
input : array, shape {shape} or {ushape}
kernel_size : int or tuple of {nd} ints
stride : int or tuple of {nd} ints, optional
    Defaults to ``kernel_size``.
padding : int or tuple of {nd} ints
    Implicit -inf padding on both sides, at most ``kernel_size // 2``.
dilation : int or tuple of {nd} ints
ceil_mode : bool
    Round the output size up instead of down; a last window that would start in the
    right padding is dropped (PyTorch's rule).
return_indices : bool
    Also return the int64 flat index of each maximum within its input plane.

Returns
-------
array of shape (N, C, {out}), and the indices when ``return_indices``, where per
spatial dim out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1
(ceil in ceil mode).  A NaN in a window wins (its index is returned); ties keep the
first maximum; an all -inf window gives -inf and an in-bounds index.
"""

_GRAD_MAX_DOC = """Gradient of ``max_pool{nd}d`` with respect to its input.

Parameters
----------
grad_output : array, shape (N, C, {out}) or unbatched (C, {out})
indices : integer array shaped like grad_output
    The indices ``max_pool{nd}d(..., return_indices=True)`` returned.
input_size : tuple of ints
    The pooling input's shape, {shape} or {ushape}.

Returns
-------
array of shape ``input_size``: each ``grad_output`` element added at its index.
ValueError when an index lies outside the input plane.
"""


# -- average pooling -----------------------------------------------------------------------

def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    device, p = planned(_plan_avg_pool, f"avg_pool{nd}d", (input,),
                        (nd, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override))
    return unbatch(backend(device).avg_pool_forward(p, batched(input, p)), p)


def _plan_avg_pool(op, input, nd, kernel_size, stride, padding, ceil_mode,
                   count_include_pad, divisor_override):
    device, _ = prepare(op, input=input)
    return device, pool_params(op, nd, "avg", input.shape, kernel_size, stride, padding, 1,
                               ceil_mode, count_include_pad, divisor_override)


def _grad_avg_pool(nd, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                   count_include_pad, divisor_override):
    device, p = planned(_plan_grad_avg_pool, f"avg_pool{nd}d", (grad_output,),
                        (nd, input_size, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override))
    return unbatch(backend(device).avg_pool_backward(p, batched(grad_output, p)), p)


def _plan_grad_avg_pool(op, grad_output, nd, input_size, kernel_size, stride, padding,
                        ceil_mode, count_include_pad, divisor_override):
    device, _ = prepare(op, grad_output=grad_output)
    p = pool_params(op, nd, "avg", size_tuple(op, "input_size", input_size), kernel_size,
                    stride, padding, 1, ceil_mode, count_include_pad, divisor_override,
                    what="input_size")
    _check_gy(op, grad_output, p.y_shape, f"for input_size {p.x_shape}")
    return device, p


_AVG_DOC = """{nd}-D average pooling over an input of shape {shape} or unbatched {ushape}.

Parameters
----------
input : array, shape {shape} or {ushape}
kernel_size : int or tuple of {nd} ints
stride : int or tuple of {nd} ints, optional
    Defaults to ``kernel_size``.
padding : int or tuple of {nd} ints
    Implicit zero padding on both sides, at most ``kernel_size // 2``.
ceil_mode : bool
    Round the output size up; a last window that would start in the right padding is
    dropped.
count_include_pad : bool
    Count the padding in the divisor.  A ceil-mode window that overhangs the right
    padding is clipped to it first, exactly as in PyTorch.{override_param}

Returns
-------
array of shape (N, C, {out}), out = floor((in + 2 * padding - kernel_size) / stride) + 1
per spatial dim (ceil in ceil mode).
"""

_OVERRIDE_PARAM = """
divisor_override : int, optional
    Divide every window sum by this non-zero value instead."""

_GRAD_AVG_DOC = """Gradient of ``avg_pool{nd}d`` with respect to its input.

Parameters
----------
grad_output : array, shape (N, C, {out}) or unbatched (C, {out})
input_size : tuple of ints
    The pooling input's shape, {shape} or {ushape}.
kernel_size, stride, padding, ceil_mode, count_include_pad{override_name}
    As given to ``avg_pool{nd}d``.

Returns
-------
array of shape ``input_size``: each ``grad_output`` element divided by its window's
divisor and added to every input element of the window.
"""


# -- adaptive average pooling --------------------------------------------------------------

def _adaptive_avg_pool(nd, input, output_size):
    device, ps = planned(_plan_adaptive, f"adaptive_avg_pool{nd}d", (input,),
                         (nd, output_size))
    return unbatch(backend(device).adaptive_avg_pool_forward(ps, batched(input, ps)), ps)


def _plan_adaptive(op, input, nd, output_size):
    device, _ = prepare(op, input=input)
    return device, adaptive_pool_params(op, nd, input.shape, output_size)


def _grad_adaptive_avg_pool(nd, grad_output, input_size):
    device, ps = planned(_plan_grad_adaptive, f"adaptive_avg_pool{nd}d", (grad_output,),
                         (nd, input_size))
    gx = backend(device).adaptive_avg_pool_backward(ps, batched(grad_output, ps))
    return unbatch(gx, ps)


def _plan_grad_adaptive(op, grad_output, nd, input_size):
    device, _ = prepare(op, grad_output=grad_output)
    return device, pool_grad_shape(op, nd, input_size, grad_output.shape)


_ADAPTIVE_DOC = """{nd}-D adaptive average pooling to a fixed output size.

Parameters
----------
input : array, shape {shape} or unbatched {ushape}
output_size : int or tuple of {nd} ints or None
    None keeps that input size; 0 gives an empty output.

Returns
-------
array of shape (N, C, *output_size).  Output cell ``o`` of a dim averages the input
range [floor(o * in / out), ceil((o + 1) * in / out)).
"""

_GRAD_ADAPTIVE_DOC = """Gradient of ``adaptive_avg_pool{nd}d`` with respect to its input.

Parameters
----------
grad_output : array, shape (N, C, {out}) or unbatched (C, {out})
    Its spatial shape is the pooling's output size.
input_size : tuple of ints
    The pooling input's shape, {shape} or {ushape}.

Returns
-------
array of shape ``input_size``.
"""


def _publish(fn, name):
    """Name ``fn`` as the public function it is: ``grad_<op>`` is ``cyconv.grad.<op>``,
    every other op ``cyconv.functional.<op>``."""
    public = name[len("grad_"):] if name.startswith("grad_") else name
    fn.__name__ = fn.__qualname__ = public
    fn.__module__ = "cyconv.grad" if name.startswith("grad_") else "cyconv.functional"
    return fn


def _make(nd):
    shape, ushape, sp = _SHAPES[nd]
    out = ", ".join(f"{d}_out" for d in sp.split(", "))
    fmt = dict(nd=nd, shape=shape, ushape=ushape, out=out)

    def max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
        return _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices)

    def grad_max_pool(grad_output, indices, input_size):
        return _grad_max_pool(nd, grad_output, indices, input_size)

    if nd == 1:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True):
            return _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode,
                             count_include_pad, None)

        def grad_avg_pool(grad_output, input_size, kernel_size, stride=None, padding=0,
                          ceil_mode=False, count_include_pad=True):
            return _grad_avg_pool(nd, grad_output, input_size, kernel_size, stride, padding,
                                  ceil_mode, count_include_pad, None)
    else:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
            return _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode,
                             count_include_pad, divisor_override)

        def grad_avg_pool(grad_output, input_size, kernel_size, stride=None, padding=0,
                          ceil_mode=False, count_include_pad=True, divisor_override=None):
            return _grad_avg_pool(nd, grad_output, input_size, kernel_size, stride, padding,
                                  ceil_mode, count_include_pad, divisor_override)

    def adaptive_avg_pool(input, output_size):
        return _adaptive_avg_pool(nd, input, output_size)

    def grad_adaptive_avg_pool(grad_output, input_size):
        return _grad_adaptive_avg_pool(nd, grad_output, input_size)

    override = nd > 1
    docs = {
        max_pool: (f"max_pool{nd}d", _MAX_DOC),
        grad_max_pool: (f"grad_max_pool{nd}d", _GRAD_MAX_DOC),
        avg_pool: (f"avg_pool{nd}d", _AVG_DOC),
        grad_avg_pool: (f"grad_avg_pool{nd}d", _GRAD_AVG_DOC),
        adaptive_avg_pool: (f"adaptive_avg_pool{nd}d", _ADAPTIVE_DOC),
        grad_adaptive_avg_pool: (f"grad_adaptive_avg_pool{nd}d", _GRAD_ADAPTIVE_DOC),
    }
    fns = {}
    for fn, (name, doc) in docs.items():
        _publish(fn, name)
        fn.__doc__ = doc.format(**fmt, override_param=_OVERRIDE_PARAM if override else "",
                                override_name=", divisor_override" if override else "")
        fns[name] = fn
    return fns


for _nd in (1, 2, 3):
    globals().update(_make(_nd))


# -- ReLU ----------------------------------------------------------------------------------

def relu(input):
    """max(input, 0) element-wise, for an array of any shape.

    NaN propagates and -0.0 stays -0.0, as in ``torch.nn.functional.relu``.
    """
    if type(input) is np.ndarray and input.dtype in _CPU_DTYPES:   # the common case
        return _cpu_pool.relu_forward(input)
    device, _ = prepare("relu", input=input)
    return backend(device).relu_forward(input)


def grad_relu(grad_output, output):
    """Gradient of ``relu`` from its output: ``grad_output`` where ``output > 0`` and 0
    where ``output <= 0`` (PyTorch's ``threshold_backward``; a NaN output passes the
    gradient through).

    Parameters
    ----------
    grad_output : array, any shape
    output : array of the same shape and dtype: what ``relu`` returned
    """
    device = planned(_plan_grad_relu, "grad_relu", (grad_output, output), ())
    return backend(device).relu_backward(grad_output, output)


def _plan_grad_relu(op, grad_output, output):
    device, _ = prepare("relu", grad_output=grad_output, output=output)
    if tuple(grad_output.shape) != tuple(output.shape):
        raise ValueError(f"relu: grad_output has shape {tuple(grad_output.shape)}, but "
                         f"output has shape {tuple(output.shape)}")
    return device


_publish(relu, "relu")
_publish(grad_relu, "grad_relu")


# -- linear --------------------------------------------------------------------------------

def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (``torch.nn.functional.linear``).

    Parameters
    ----------
    input : array, shape (*, in_features)
        Any number of leading dims.
    weight : array, shape (out_features, in_features)
    bias : array, shape (out_features,), optional

    Returns
    -------
    array of shape (*, out_features).

    Notes
    -----
    The gradients are plain matrix products: w.r.t. the input ``grad_output @ weight``,
    w.r.t. the weight ``grad_output`` (as M x out) transposed times ``input`` (M x in),
    w.r.t. the bias ``cyconv.grad.bias(grad_output, channel_axis=-1)``.
    """
    device, lp = planned(_plan_linear, "linear", (input, weight, bias), ())
    return backend(device).linear_forward(lp, input, weight, bias)


def _plan_linear(op, input, weight, bias):
    device, _ = prepare(op, input=input, weight=weight, bias=bias)
    return device, linear_params(op, input.shape, weight.shape,
                                 None if bias is None else bias.shape)


_publish(linear, "linear")


# -- pad -----------------------------------------------------------------------------------

def pad(input, pad, mode="constant", value=0.0):
    """Pad (or, with negative amounts, crop) the trailing dims of ``input``
    (``torch.nn.functional.pad``).

    Parameters
    ----------
    input : array of any shape
    pad : tuple of an even number of ints
        ``(before, after)`` amounts from the last dim backwards:
        ``(left, right, top, bottom, ...)``.  Negative amounts crop.
    mode : {'constant', 'reflect', 'replicate', 'circular'}
        reflect mirrors without repeating the edge and needs every amount < the dim's
        size; replicate repeats the edge; circular wraps around and needs every amount
        <= the dim's size (negative amounts crop first, as in PyTorch).
    value : float
        The fill of 'constant' mode; other modes take none.

    Returns
    -------
    array of shape ``in + before + after`` in each padded dim.
    Unlike PyTorch, non-constant modes accept any number of leading dims and pad any
    number of trailing dims.
    """
    device, pp = planned(_plan_pad, "pad", (input,), (pad, mode, value))
    return backend(device).pad_forward(pp, input)


def _plan_pad(op, input, pad, mode, value):
    device, _ = prepare(op, input=input)
    return device, pad_params(op, input.shape, pad, mode, value)


def grad_pad(grad_output, input_size, pad, mode="constant"):
    """Gradient of ``pad`` with respect to its input.

    Parameters
    ----------
    grad_output : array, the shape ``pad`` returned
    input_size : tuple of ints
        The shape of ``pad``'s input.
    pad, mode
        As given to ``pad``.

    Returns
    -------
    array of shape ``input_size``: each input element receives the sum of the gradients
    of every output element that copies it (several for reflect, replicate and circular
    padding; none where it was cropped away).
    """
    device, pp = planned(_plan_grad_pad, "grad_pad", (grad_output,), (input_size, pad, mode))
    return backend(device).pad_backward(pp, grad_output)


def _plan_grad_pad(op, grad_output, input_size, pad, mode):
    device, _ = prepare("pad", grad_output=grad_output)
    pp = pad_params("pad", size_tuple("pad", "input_size", input_size), pad, mode, 0.0,
                    what="input_size")
    _check_gy("pad", grad_output, pp.out_shape,
              f"for input_size {pp.in_shape}, pad {tuple(pad)} and mode {mode!r}")
    return device, pp


_publish(pad, "pad")
_publish(grad_pad, "grad_pad")
