"""Resampling (``interpolate``) and adaptive max pooling: the public functional ops and
their gradients.

Each op takes the package's one path: check devices, dtypes and arguments once per
distinct call (:func:`cyconv._dispatch.planned` caches the checked parameters, which
for ``interpolate`` include the per-dim source maps), then call the backend for the array
type (:mod:`cyconv._cpu_layers`, :mod:`cyconv._gpu`).  Semantics are
``torch.nn.functional``'s, except that errors PyTorch raises as ``RuntimeError`` are
``ValueError`` here.
"""
from __future__ import annotations

from ._dispatch import backend, batched, planned, prepare, unbatch
from ._params import (adaptive_pool_params, array_module_name, check_indices,
                      interpolate_params, pool_grad_shape, size_tuple)
from ._pool import _SHAPES, _publish

__all__ = ["interpolate", "grad_interpolate"] + [
    f"{g}adaptive_max_pool{nd}d" for g in ("", "grad_") for nd in (1, 2, 3)]


# -- interpolate -------------------------------------------------------------------------------

def _plan_interpolate(op, input, size, scale_factor, mode, align_corners):
    device, dtype = prepare(op, input=input)
    return device, interpolate_params(op, input.shape, dtype, size, scale_factor, mode,
                                      align_corners)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resample the spatial dims of ``input`` (``torch.nn.functional.interpolate``).

    Parameters
    ----------
    input : array, shape (N, C, L), (N, C, H, W) or (N, C, D, H, W)
    size : int or tuple of ints, optional
        The output's spatial size.
    scale_factor : float or tuple of floats, optional
        Multiplies the spatial size (``floor(in * scale_factor)``); the factor itself maps
        output to input coordinates, as in PyTorch (``recompute_scale_factor=None``).
        Give exactly one of ``size`` and ``scale_factor``.
    mode : {'nearest', 'linear', 'bilinear', 'trilinear'}
        'nearest' (any of the three ranks) copies input ``floor(o * in / out)``;
        'linear', 'bilinear', 'trilinear' (3-, 4-, 5-D inputs) interpolate linearly
        between the two nearest input samples of each dim.
    align_corners : bool, optional
        Linear modes only; None (the default) is False: pixel centres, input coordinate
        ``(o + 0.5) * in / out - 0.5`` clamped at 0.  True maps the corner samples onto
        each other.

    Returns
    -------
    array of shape (N, C, *out_size).  Indices and weights follow PyTorch's arithmetic
    (float32 coordinates for float32 inputs), so nearest results equal PyTorch's exactly.
    """
    device, rp = planned(_plan_interpolate, "interpolate", (input,),
                         (size, scale_factor, mode, align_corners))
    return backend(device).interpolate_forward(rp, input)


def _plan_grad_interpolate(op, grad_output, input_size, size, scale_factor, mode,
                           align_corners):
    device, dtype = prepare(op, grad_output=grad_output)
    rp = interpolate_params(op, size_tuple(op, "input_size", input_size), dtype, size,
                            scale_factor, mode, align_corners, what="input_size")
    if tuple(grad_output.shape) != rp.y_shape:
        raise ValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, expected "
                         f"{rp.y_shape} for input_size {rp.x_shape}")
    return device, rp


def grad_interpolate(grad_output, input_size, size=None, scale_factor=None, mode="nearest",
                     align_corners=None):
    """Gradient of ``interpolate`` with respect to its input.

    Parameters
    ----------
    grad_output : array, shape (N, C, *out_size)
    input_size : tuple of ints
        The shape of ``interpolate``'s input, (N, C, *in_size).
    size, scale_factor, mode, align_corners
        As given to ``interpolate``.

    Returns
    -------
    array of shape ``input_size``: each input element receives the weighted sum of the
    gradients of the outputs that read it (the adjoint of the resampling).
    """
    device, rp = planned(_plan_grad_interpolate, "interpolate", (grad_output,),
                         (input_size, size, scale_factor, mode, align_corners))
    return backend(device).interpolate_backward(rp, grad_output)


# -- adaptive max pooling ----------------------------------------------------------------------

def _adaptive_max(nd, input, output_size, return_indices):
    device, ps = planned(_plan_adaptive_max, f"adaptive_max_pool{nd}d", (input,),
                         (nd, output_size))
    y, idx = backend(device).adaptive_max_pool_forward(ps, batched(input, ps))
    y = unbatch(y, ps)
    return (y, unbatch(idx, ps)) if return_indices else y


def _plan_adaptive_max(op, input, nd, output_size):
    device, _ = prepare(op, input=input)
    return device, adaptive_pool_params(op, nd, input.shape, output_size)


def _grad_adaptive_max(nd, grad_output, indices, input_size):
    device, ps = planned(_plan_grad_adaptive_max, f"adaptive_max_pool{nd}d",
                         (grad_output, indices), (nd, input_size))
    gx = backend(device).max_pool_backward(ps, batched(grad_output, ps), batched(indices, ps))
    return unbatch(gx, ps)


def _plan_grad_adaptive_max(op, grad_output, indices, nd, input_size):
    device, _ = prepare(op, grad_output=grad_output)
    array_module_name(op, grad_output=grad_output, indices=indices)
    ps = pool_grad_shape(op, nd, input_size, grad_output.shape)
    check_indices(op, indices, grad_output.shape)
    return device, ps


_ADAPTIVE_MAX_DOC = """{nd}-D adaptive max pooling to a fixed output size
(``torch.nn.functional.adaptive_max_pool{nd}d``).

Parameters
----------
input : array, shape {shape} or unbatched {ushape}
output_size : int or tuple of {nd} ints or None
    None keeps that input size; 0 gives an empty output.
return_indices : bool
    Also return the int64 flat index of each maximum within its input plane (what
    ``cyconv.grad.adaptive_max_pool{nd}d`` takes).

Returns
-------
array of shape (N, C, *output_size) (and the indices).  Output cell ``o`` of a dim takes
the maximum of the input range [floor(o * in / out), ceil((o + 1) * in / out)); a NaN
wins, ties keep the first maximum (PyTorch's rule).
"""

_GRAD_ADAPTIVE_MAX_DOC = """Gradient of ``adaptive_max_pool{nd}d`` with respect to its input.

Parameters
----------
grad_output : array, shape (N, C, *output_size) or unbatched (C, *output_size)
indices : integer array shaped like grad_output
    The indices ``adaptive_max_pool{nd}d(..., return_indices=True)`` returned.
input_size : tuple of ints
    The pooling input's shape, {shape} or {ushape}.

Returns
-------
array of shape ``input_size``: each ``grad_output`` element added at its index.
ValueError when an index lies outside the input plane.
"""


def _make(nd):
    shape, ushape, _ = _SHAPES[nd]

    def adaptive_max_pool(input, output_size, return_indices=False):
        return _adaptive_max(nd, input, output_size, return_indices)

    def grad_adaptive_max_pool(grad_output, indices, input_size):
        return _grad_adaptive_max(nd, grad_output, indices, input_size)

    fns = {}
    for fn, name, doc in ((adaptive_max_pool, f"adaptive_max_pool{nd}d", _ADAPTIVE_MAX_DOC),
                          (grad_adaptive_max_pool, f"grad_adaptive_max_pool{nd}d",
                           _GRAD_ADAPTIVE_MAX_DOC)):
        _publish(fn, name)
        fn.__doc__ = doc.format(nd=nd, shape=shape, ushape=ushape)
        fns[name] = fn
    return fns


for _nd in (1, 2, 3):
    globals().update(_make(_nd))

_publish(interpolate, "interpolate")
_publish(grad_interpolate, "grad_interpolate")
