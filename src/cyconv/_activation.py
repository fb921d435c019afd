"""Activations, softmax and dropout: the public functional ops and their gradients.

Each op takes the package's one path: check devices and dtypes (cached by the call's
arguments, :func:`cyconv._dispatch.planned`), then call the backend for the array type
(:mod:`cyconv._cpu_layers` for NumPy, :mod:`cyconv._gpu` for CuPy).  A float32/float64
NumPy array skips even the cache lookup, as ``relu`` does: these are small, frequent
ops.  Semantics are ``torch.nn.functional``'s and PyTorch autograd's.

:mod:`cyconv.functional` exports the forward ops and :mod:`cyconv.grad` the gradients
(``grad_sigmoid`` here is ``cyconv.grad.sigmoid``).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _cpu_layers
from ._cpu_layers import ACTIVATIONS
from ._dispatch import backend, planned, prepare
from ._params import array_module_name, check_probability, softmax_lines
from ._pool import _CPU_DTYPES, _publish
from ._random import get_generator

__all__ = ["leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softmax", "log_softmax",
           "dropout", "grad_leaky_relu", "grad_sigmoid", "grad_tanh", "grad_gelu",
           "grad_silu", "grad_softmax", "grad_log_softmax", "grad_dropout"]


def _slope(op, negative_slope):
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise TypeError(f"{op}: negative_slope must be a number, got {negative_slope!r}")
    return float(negative_slope)


def _gelu_code(approximate):
    if approximate == "none":
        return ACTIVATIONS["gelu"]
    if approximate == "tanh":
        return ACTIVATIONS["gelu_tanh"]
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def _forward(name, input, code, alpha=0.0):
    if type(input) is np.ndarray and input.dtype in _CPU_DTYPES:     # the common case
        return _cpu_layers.activation_forward(input, code, alpha)
    device, _ = prepare(name, input=input)
    return backend(device).activation_forward(input, code, alpha)


def _plan_pair(op, grad_output, other, other_name):
    device, _ = prepare(op, grad_output=grad_output, **{other_name: other})
    if tuple(grad_output.shape) != tuple(other.shape):
        raise ValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, but "
                         f"{other_name} has shape {tuple(other.shape)}")
    return device


def _backward(name, grad_output, other, other_name, code, alpha=0.0):
    if (type(grad_output) is np.ndarray and type(other) is np.ndarray
            and grad_output.dtype in _CPU_DTYPES and other.dtype == grad_output.dtype
            and grad_output.shape == other.shape):
        return _cpu_layers.activation_backward(grad_output, other, code, alpha)
    device = planned(_plan_pair, name, (grad_output, other), (other_name,))
    return backend(device).activation_backward(grad_output, other, code, alpha)


# -- element-wise activations ----------------------------------------------------------------

def leaky_relu(input, negative_slope=0.01):
    """``input`` where positive, ``negative_slope * input`` elsewhere, any shape
    (``torch.nn.functional.leaky_relu``).  NaN propagates; -0.0 gives -0.0 * slope."""
    return _forward("leaky_relu", input, ACTIVATIONS["leaky_relu"],
                    _slope("leaky_relu", negative_slope))


def grad_leaky_relu(grad_output, input, negative_slope=0.01):
    """Gradient of ``leaky_relu`` from its input: ``grad_output`` where ``input > 0``,
    ``negative_slope * grad_output`` elsewhere.

    Parameters
    ----------
    grad_output : array, any shape
    input : array of the same shape and dtype: what ``leaky_relu`` was given
    negative_slope : float
    """
    return _backward("leaky_relu", grad_output, input, "input", ACTIVATIONS["leaky_relu"],
                     _slope("leaky_relu", negative_slope))


def sigmoid(input):
    """``1 / (1 + exp(-input))`` element-wise, any shape (``torch.sigmoid``)."""
    return _forward("sigmoid", input, ACTIVATIONS["sigmoid"])


def grad_sigmoid(grad_output, output):
    """Gradient of ``sigmoid`` from its output: ``grad_output * (1 - output) * output``.

    Parameters
    ----------
    grad_output : array, any shape
    output : array of the same shape and dtype: what ``sigmoid`` returned
    """
    return _backward("sigmoid", grad_output, output, "output", ACTIVATIONS["sigmoid"])


def tanh(input):
    """The hyperbolic tangent element-wise, any shape (``torch.tanh``)."""
    return _forward("tanh", input, ACTIVATIONS["tanh"])


def grad_tanh(grad_output, output):
    """Gradient of ``tanh`` from its output: ``grad_output * (1 - output ** 2)``.

    Parameters
    ----------
    grad_output : array, any shape
    output : array of the same shape and dtype: what ``tanh`` returned
    """
    return _backward("tanh", grad_output, output, "output", ACTIVATIONS["tanh"])


def gelu(input, approximate="none"):
    """GELU element-wise, any shape (``torch.nn.functional.gelu``).

    ``approximate='none'``: ``x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))``;
    ``'tanh'``: ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))``.
    """
    return _forward("gelu", input, _gelu_code(approximate))


def grad_gelu(grad_output, input, approximate="none"):
    """Gradient of ``gelu`` from its input: ``grad_output * (Phi(x) + x * phi(x))``
    (the derivative of the tanh form for ``approximate='tanh'``).

    Parameters
    ----------
    grad_output : array, any shape
    input : array of the same shape and dtype: what ``gelu`` was given
    approximate : {'none', 'tanh'}
    """
    return _backward("gelu", grad_output, input, "input", _gelu_code(approximate))


def silu(input):
    """SiLU (swish) ``x * sigmoid(x)`` element-wise, any shape
    (``torch.nn.functional.silu``)."""
    return _forward("silu", input, ACTIVATIONS["silu"])


def grad_silu(grad_output, input):
    """Gradient of ``silu`` from its input: ``grad_output * s * (1 + x * (1 - s))`` with
    ``s = sigmoid(x)``.

    Parameters
    ----------
    grad_output : array, any shape
    input : array of the same shape and dtype: what ``silu`` was given
    """
    return _backward("silu", grad_output, input, "input", ACTIVATIONS["silu"])


# -- softmax -----------------------------------------------------------------------------------

def _plan_softmax(op, input, dim):
    device, _ = prepare(op, input=input)
    return device, softmax_lines(op, input.shape, dim)


def _softmax(op, input, dim, log):
    device, lines = planned(_plan_softmax, op, (input,), (dim,))
    return backend(device).softmax_forward(input, lines, log)


def _plan_grad_softmax(op, grad_output, output, dim):
    device = _plan_pair(op, grad_output, output, "output")
    return device, softmax_lines(op, output.shape, dim)


def _grad_softmax(op, grad_output, output, dim, log):
    device, lines = planned(_plan_grad_softmax, op, (grad_output, output), (dim,))
    return backend(device).softmax_backward(grad_output, output, lines, log)


def softmax(input, dim):
    """``exp(x) / sum(exp(x))`` over ``dim`` (``torch.nn.functional.softmax``).

    Parameters
    ----------
    input : array of any shape
    dim : int
        The dim to normalise over (negative counts from the end).

    Returns
    -------
    array of the input's shape: every slice along ``dim`` sums to 1.  Computed as
    ``exp(x - max) / sum(exp(x - max))``, so large inputs do not overflow; a slice
    holding a NaN (or only -inf) gives NaN.
    """
    return _softmax("softmax", input, dim, False)


def log_softmax(input, dim):
    """``x - log(sum(exp(x)))`` over ``dim`` (``torch.nn.functional.log_softmax``),
    computed as ``x - max - log(sum(exp(x - max)))``.

    Parameters
    ----------
    input : array of any shape
    dim : int
    """
    return _softmax("log_softmax", input, dim, True)


def grad_softmax(grad_output, output, dim):
    """Gradient of ``softmax`` from its output:
    ``output * (grad_output - sum(grad_output * output, dim))``.

    Parameters
    ----------
    grad_output : array, the output's shape
    output : array: what ``softmax(input, dim)`` returned
    dim : int
    """
    return _grad_softmax("softmax", grad_output, output, dim, False)


def grad_log_softmax(grad_output, output, dim):
    """Gradient of ``log_softmax`` from its output:
    ``grad_output - exp(output) * sum(grad_output, dim)``.

    Parameters
    ----------
    grad_output : array, the output's shape
    output : array: what ``log_softmax(input, dim)`` returned
    dim : int
    """
    return _grad_softmax("log_softmax", grad_output, output, dim, True)


# -- dropout -----------------------------------------------------------------------------------

def dropout(input, p=0.5, training=True, *, return_mask=False):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``
    (``torch.nn.functional.dropout``).

    Parameters
    ----------
    input : array of any shape
    p : float in [0, 1]
    training : bool
        False returns ``input`` itself (no copy), as PyTorch does.
    return_mask : bool
        Also return the boolean keep-mask (what ``cyconv.grad.dropout`` takes); an
        addition of cyconv's (PyTorch keeps it inside autograd).

    Returns
    -------
    array of the input's shape (and the mask).  The mask is drawn from cyconv's
    seedable generator (:func:`cyconv.manual_seed`): the same seed gives the same masks.
    On the GPU the samples come from a CuPy generator seeded from that generator, so the
    masks are reproducible there too but differ from the CPU's.  As in PyTorch the
    output is ``input * mask * scale``, so a dropped NaN or Inf gives NaN.
    """
    p = check_probability("dropout", p)
    if not training:
        prepare("dropout", input=input)
        if return_mask:
            xp = np if isinstance(input, np.ndarray) else _cupy()
            return input, xp.ones(input.shape, bool)
        return input
    device, _ = prepare("dropout", input=input)
    y, mask = backend(device).dropout_forward(input, p, get_generator())
    return (y, mask) if return_mask else y


def _cupy():
    from ._cuda import require_cupy
    return require_cupy("dropout")


def grad_dropout(grad_output, mask, p=0.5):
    """Gradient of ``dropout`` (training mode): ``grad_output * mask / (1 - p)`` (0 for
    ``p = 1``).

    Parameters
    ----------
    grad_output : array, any shape
    mask : bool array of the same shape: what ``dropout(..., return_mask=True)`` returned
    p : float in [0, 1], as given to ``dropout``
    """
    p = check_probability("dropout", p)
    device = planned(_plan_grad_dropout, "grad_dropout", (grad_output, mask), ())
    return backend(device).dropout_backward(grad_output, mask, p)


def _plan_grad_dropout(op, grad_output, mask):
    device, _ = prepare("dropout", grad_output=grad_output)
    array_module_name("dropout", grad_output=grad_output, mask=mask)
    if np.dtype(mask.dtype) != np.bool_:
        raise TypeError(f"dropout: mask must be a bool array (from return_mask=True), got "
                        f"{np.dtype(mask.dtype).name}")
    if tuple(grad_output.shape) != tuple(mask.shape):
        raise ValueError(f"dropout: grad_output has shape {tuple(grad_output.shape)}, but "
                         f"mask has shape {tuple(mask.shape)}")
    return device


for _name in __all__:
    _publish(globals()[_name], _name)
