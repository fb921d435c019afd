"""Activation layers: ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``GELU``, ``SiLU``,
``Softmax``, ``LogSoftmax``; ``Identity`` and ``Dropout``.

Each is a thin stateful wrapper over ``cyconv.<op>`` and ``cyconv.grad.<op>``: the
forward keeps what the gradient needs (the output for ReLU, sigmoid, tanh and the
softmaxes, the input for the others, dropout's mask).
"""
from __future__ import annotations

import numbers

import cyconv

from .._params import check_probability
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softmax", "LogSoftmax",
           "Identity", "Dropout"]


class ReLU(Module):
    """``max(x, 0)`` elementwise (semantics of ``torch.nn.ReLU``).

    Parameters
    ----------
    inplace : bool
        Accepted for compatibility with PyTorch code; cyconv never modifies its input,
        so the output is always a new array.

    Notes
    -----
    The backward pass, ``cyconv.grad.relu(gy, y)``, passes the gradient where the
    output is positive (PyTorch's convention: zero gradient at 0).
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        self._check_input(x)
        y = cyconv.relu(x)
        self._ctx = y
        return y

    def backward(self, grad_output):
        y = self._saved()
        return cyconv.grad.relu(grad_output, y)


class _Elementwise(Module):
    """An activation ``y = f(x)`` whose gradient reads the input (``_from_output``
    False) or the output."""

    _op = ""
    _from_output = False

    def _args(self):
        return ()

    def forward(self, x):
        self._check_input(x)
        y = getattr(cyconv, self._op)(x, *self._args())
        self._ctx = y if self._from_output else x
        return y

    def backward(self, grad_output):
        return getattr(cyconv.grad, self._op)(grad_output, self._saved(), *self._args())


class LeakyReLU(_Elementwise):
    """``x`` where positive, ``negative_slope * x`` elsewhere (``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float
    inplace : bool
        Accepted for compatibility; the output is always a new array.
    """

    _op = "leaky_relu"

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, got "
                            f"{negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def _args(self):
        return (self.negative_slope,)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))`` elementwise (``torch.nn.Sigmoid``)."""

    _op = "sigmoid"
    _from_output = True


class Tanh(_Elementwise):
    """``tanh(x)`` elementwise (``torch.nn.Tanh``)."""

    _op = "tanh"
    _from_output = True


class GELU(_Elementwise):
    """GELU elementwise (``torch.nn.GELU``).

    Parameters
    ----------
    approximate : {'none', 'tanh'}
        The exact ``x * Phi(x)`` or its tanh approximation.
    """

    _op = "gelu"

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got "
                             f"{approximate!r}")
        self.approximate = approximate

    def _args(self):
        return (self.approximate,)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """``x * sigmoid(x)`` elementwise (``torch.nn.SiLU``).

    Parameters
    ----------
    inplace : bool
        Accepted for compatibility; the output is always a new array.
    """

    _op = "silu"

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)


class _SoftmaxBase(Module):
    _op = ""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def _dim(self, x):
        """PyTorch's legacy choice when ``dim`` is None: 0 for 0-, 1- and 3-D inputs,
        else 1."""
        if self.dim is not None:
            return self.dim
        return 0 if x.ndim in (0, 1, 3) else 1

    def forward(self, x):
        self._check_input(x)
        d = self._dim(x)
        y = getattr(cyconv, self._op)(x, d)
        self._ctx = (y, d)
        return y

    def backward(self, grad_output):
        y, d = self._saved()
        return getattr(cyconv.grad, self._op)(grad_output, y, d)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """Softmax over ``dim`` (``torch.nn.Softmax``): every slice along it sums to 1.

    Parameters
    ----------
    dim : int
        None picks PyTorch's legacy dim (0 for 0-, 1- and 3-D inputs, else 1).
    """

    _op = "softmax"


class LogSoftmax(_SoftmaxBase):
    """Log-softmax over ``dim`` (``torch.nn.LogSoftmax``).

    Parameters
    ----------
    dim : int
        None picks PyTorch's legacy dim (0 for 0-, 1- and 3-D inputs, else 1).
    """

    _op = "log_softmax"


class Identity(Module):
    """Returns its input (``torch.nn.Identity``); any constructor arguments are ignored,
    as in PyTorch.  Its backward returns the gradient it is given."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        self._ctx = True
        return x

    def backward(self, grad_output):
        self._saved()
        return grad_output


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by
    ``1 / (1 - p)`` (``torch.nn.Dropout``); the identity in evaluation mode.

    Parameters
    ----------
    p : float in [0, 1]
    inplace : bool
        Accepted for compatibility; the output is always a new array.

    Notes
    -----
    Masks come from cyconv's seedable generator (``cyconv.manual_seed``).
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = check_probability("Dropout", p)
        self.inplace = bool(inplace)

    def forward(self, x):
        self._check_input(x)
        if not self.training or self.p == 0:
            self._ctx = (None,)
            return cyconv.dropout(x, self.p, False)
        y, mask = cyconv.dropout(x, self.p, True, return_mask=True)
        self._ctx = (mask,)
        return y

    def backward(self, grad_output):
        (mask,) = self._saved()
        if mask is None:
            return grad_output
        return cyconv.grad.dropout(grad_output, mask, self.p)

    def extra_repr(self):
        return f"p={self.p}"
