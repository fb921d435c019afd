"""``ReLU``."""
from __future__ import annotations

import cyconv

from .module import Module

__all__ = ["ReLU"]


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
