"""Batch normalisation: the public functional op and its gradient.

``batch_norm`` takes the package's one path: the checked arguments are cached by the
call's arguments (:func:`cyconv._dispatch.planned`), then the backend for the array type
(:mod:`cyconv._cpu_layers`, :mod:`cyconv._gpu`) computes on the input viewed as
``(N, C, S)``.  Semantics are ``torch.nn.functional.batch_norm``'s (and
``torch.ops.aten.native_batch_norm_backward``'s for the gradient), except that errors
PyTorch raises as ``RuntimeError`` are ``ValueError`` here.
"""
from __future__ import annotations

from ._dispatch import backend, planned, prepare
from ._params import check_eps_momentum, norm_params
from ._pool import _publish

__all__ = ["batch_norm", "grad_batch_norm"]

_VECTORS = ("running_mean", "running_var", "weight", "bias")


def _shape(a):
    return None if a is None else a.shape


def _plan_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum,
                     eps):
    named = dict(input=input, running_mean=running_mean, running_var=running_var,
                 weight=weight, bias=bias)
    device, _ = prepare(op, **{k: v for k, v in named.items() if v is not None})
    eps, momentum = check_eps_momentum(op, eps, momentum)
    if momentum is None:
        raise ValueError(f"{op}: momentum must be a number in [0, 1], got None")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var are required when "
                         f"training=False")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    bp = norm_params(op, input.shape, training, running_mean=_shape(running_mean),
                     running_var=_shape(running_var), weight=_shape(weight),
                     bias=_shape(bias))
    return device, bp, eps, momentum


def forward(input, running_mean, running_var, weight=None, bias=None, training=False,
            momentum=0.1, eps=1e-5):
    """:func:`batch_norm` that also returns the ``(mean, invstd)`` it normalised with
    (per-channel vectors in the backend's statistics dtype; None for an empty batch):
    what :func:`grad_batch_norm` takes as ``save_mean``/``save_invstd``."""
    device, bp, eps, momentum = planned(
        _plan_batch_norm, "batch_norm", (input, running_mean, running_var, weight, bias),
        (training, momentum, eps))
    be = backend(device)
    x3 = input.reshape(bp.N, bp.C, bp.S)
    if not bp.training:
        mean, invstd = running_mean, be.running_invstd(running_var, eps)
        y3 = be.batch_norm_apply(x3, mean, invstd, weight, bias)
        return y3.reshape(bp.x_shape), (mean, invstd)
    if bp.count == 0 or bp.C == 0:        # PyTorch: an empty output, statistics untouched
        return input.copy(), None
    y3, mean, invstd = be.batch_norm_train(x3, weight, bias, eps, running_mean, running_var,
                                           momentum)
    return y3.reshape(bp.x_shape), (mean, invstd)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every dim but the channels (``torch.nn.functional.batch_norm``).

    Parameters
    ----------
    input : array, shape (N, C, *) (e.g. (N, C), (N, C, L), (N, C, H, W))
    running_mean, running_var : arrays of shape (C,), or None (training only)
        With ``training=True`` they are updated in place:
        ``r = (1 - momentum) * r + momentum * batch_stat``, the variance unbiased
        (``* n / (n - 1)``, n = values per channel), as in PyTorch.
    weight, bias : arrays of shape (C,), optional
        The affine transform (1 and 0 when None).
    training : bool
        Normalise with the batch statistics (True) or with the running ones (False).
    momentum : float in [0, 1]
    eps : float
        Added to the variance.

    Returns
    -------
    array of the input's shape:
    ``(x - mean) / sqrt(var + eps) * weight + bias``, per channel, with the biased batch
    variance when training.  Training needs more than one value per channel; an empty
    batch (N = 0) gives an empty output and leaves the running statistics alone.
    """
    return forward(input, running_mean, running_var, weight, bias, training, momentum,
                   eps)[0]


def _plan_grad(op, grad_output, input, running_mean, running_var, weight, training, eps):
    named = dict(grad_output=grad_output, input=input, running_mean=running_mean,
                 running_var=running_var, weight=weight)
    device, _ = prepare(op, **{k: v for k, v in named.items() if v is not None})
    eps, _ = check_eps_momentum(op, eps, 0.0)
    if tuple(grad_output.shape) != tuple(input.shape):
        raise ValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, but input "
                         f"has shape {tuple(input.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var are required when "
                         f"training=False")
    bp = norm_params(op, input.shape, training, running_mean=_shape(running_mean),
                     running_var=_shape(running_var), weight=_shape(weight))
    return device, bp, eps


def grad_batch_norm(grad_output, input, running_mean, running_var, weight=None,
                    training=False, eps=1e-5, save_mean=None, save_invstd=None):
    """Gradients of ``batch_norm`` with respect to its input, weight and bias
    (``torch.ops.aten.native_batch_norm_backward``).

    Parameters
    ----------
    grad_output : array, shape (N, C, *): the gradient of ``batch_norm``'s output
    input : array, shape (N, C, *): what ``batch_norm`` was given
    running_mean, running_var : arrays of shape (C,), or None
        The running statistics; used (and required) when ``training=False``.
    weight : array of shape (C,), optional
    training : bool
        As given to ``batch_norm``: True differentiates through the batch statistics.
    eps : float
    save_mean, save_invstd : arrays of shape (C,), optional
        The batch mean and ``1 / sqrt(var + eps)`` the training forward used (cyconv's
        ``BatchNorm`` layers keep them); recomputed from ``input`` when not given.

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
        ``grad_input`` of the input's shape; ``grad_weight`` = ``sum(grad_output * xhat)``
        and ``grad_bias`` = ``sum(grad_output)`` over every dim but the channels, shape
        (C,), returned even when ``weight`` is None (they are then the gradients a weight
        of ones and a bias of zeros would get).

    Notes
    -----
    With ``xhat = (x - mean) * invstd`` and n values per channel, training mode gives
    ``grad_input = weight * invstd * (gy - sum(gy) / n - xhat * sum(gy * xhat) / n)``;
    evaluation mode ``grad_input = weight * invstd * gy`` with the running statistics.
    """
    device, bp, eps = planned(_plan_grad, "batch_norm",
                              (grad_output, input, running_mean, running_var, weight),
                              (training, eps))
    be = backend(device)
    x3 = input.reshape(bp.N, bp.C, bp.S)
    gy3 = grad_output.reshape(bp.N, bp.C, bp.S)
    if bp.training:
        if bp.count == 0:
            mean = invstd = None
        elif save_mean is not None and save_invstd is not None:
            mean, invstd = save_mean, save_invstd
        else:
            mean, invstd = be.batch_norm_stats(x3, eps)
    else:
        mean, invstd = running_mean, be.running_invstd(running_var, eps)
    gx, gw, gb = be.batch_norm_backward(gy3, x3, mean, invstd, weight, bp.training)
    return gx.reshape(bp.x_shape), gw, gb


_publish(batch_norm, "batch_norm")
_publish(grad_batch_norm, "grad_batch_norm")
