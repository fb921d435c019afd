"""Losses: ``CrossEntropyLoss`` and ``MSELoss``, with an explicit backward pass.

``loss = loss_fn(input, target)`` returns the reduced loss as a 0-d array;
``loss_fn.backward()`` returns the gradient with respect to ``input`` of that call,
the start of a model's backward pass::

    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
"""
from __future__ import annotations

import numpy as np

from ._device import array_module, is_cupy
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}")
        self.reduction = reduction

    def _check_float(self, arg, a):
        name = type(self).__name__
        if not (isinstance(a, np.ndarray) or is_cupy(a)):
            raise TypeError(f"{name}: {arg} must be a NumPy or CuPy array, got "
                            f"{type(a).__name__}")
        if a.dtype.name not in ("float16", "float32", "float64"):
            raise TypeError(f"{name}: {arg} has dtype {a.dtype.name}; expected float32 or "
                            f"float64")

    def _reduce(self, per_element):
        if self.reduction == "mean":
            return per_element.mean()
        if self.reduction == "sum":
            return per_element.sum()
        return per_element

    def _upstream(self, grad_output, shape, dtype, xp):
        """The gradient arriving at each unreduced loss element, shaped like it."""
        name = type(self).__name__
        if grad_output is None:
            if self.reduction == "none":
                raise ValueError(f"{name}.backward: reduction='none' needs a grad_output "
                                 f"of shape {shape}")
            g = xp.ones((), dtype)
        else:
            g = xp.asarray(grad_output, dtype=dtype)
            want = shape if self.reduction == "none" else ()
            if tuple(g.shape) != want:
                raise ValueError(f"{name}.backward: grad_output has shape {tuple(g.shape)}, "
                                 f"expected {want}")
        n = int(np.prod(shape))
        if self.reduction == "mean":
            g = g / max(n, 1)
        return xp.broadcast_to(g, shape)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy with integer class targets (``torch.nn.CrossEntropyLoss``).

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}

    Notes
    -----
    ``logits`` is ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; ``target`` holds class
    indices in ``[0, C)`` of shape ``(N,)``, ``()`` or ``(N, d1, ...)``.  With
    ``lse = log(sum(exp(logits)))`` over the class axis, computed stably::

        loss_i = lse_i - logits[i, target_i]
        d loss_i / d logits[i, c] = softmax(logits_i)[c] - [c == target_i]
    """

    def forward(self, logits, target):
        name = type(self).__name__
        self._check_float("logits", logits)
        xp = array_module(logits)
        if not (isinstance(target, np.ndarray) or is_cupy(target)):
            target = xp.asarray(target)
        if is_cupy(target) != is_cupy(logits):
            raise TypeError(f"{name}: logits and target must both be NumPy or both CuPy "
                            f"arrays")
        if target.dtype.kind not in "iu":
            raise TypeError(f"{name}: target must hold integer class indices, got dtype "
                            f"{target.dtype.name}")
        if logits.ndim == 0:
            raise ValueError(f"{name}: logits must have a class axis, got a 0-d array")
        cls_axis = 0 if logits.ndim == 1 else 1
        C = logits.shape[cls_axis]
        if C == 0:
            raise ValueError(f"{name}: logits of shape {tuple(logits.shape)} have no classes")
        expected = tuple(s for i, s in enumerate(logits.shape) if i != cls_axis)
        if tuple(target.shape) != expected:
            raise ValueError(f"{name}: target has shape {tuple(target.shape)}, expected "
                             f"{expected} for logits of shape {tuple(logits.shape)}")
        if target.size and (bool((target < 0).any()) or bool((target >= C).any())):
            bad = target[(target < 0) | (target >= C)].ravel()[0]
            raise ValueError(f"{name}: target contains class {int(bad)}, outside [0, {C}) "
                             f"for logits of shape {tuple(logits.shape)}")
        z = xp.moveaxis(logits, cls_axis, -1).reshape(-1, C)     # (M, C)
        t = target.astype(np.int64, copy=False).reshape(-1)      # (M,)
        rows = xp.arange(t.shape[0])
        shifted = z - z.max(axis=-1, keepdims=True)
        lse = xp.log(xp.exp(shifted).sum(axis=-1))               # (M,)
        per_element = (lse - shifted[rows, t]).reshape(expected)
        self._ctx = (shifted, lse, t, logits.shape, cls_axis)
        return self._reduce(per_element)

    def backward(self, grad_output=None):
        """Gradient w.r.t. the logits of the latest call (``grad_output`` defaults to 1)."""
        shifted, lse, t, shape, cls_axis = self._saved()
        xp = array_module(shifted)
        moved = shape[:cls_axis] + shape[cls_axis + 1:] + (shape[cls_axis],)
        g = self._upstream(grad_output, moved[:-1], shifted.dtype, xp).reshape(-1)
        grad = xp.exp(shifted - lse[:, None])                    # softmax, (M, C)
        grad[xp.arange(t.shape[0]), t] -= 1
        grad *= g[:, None]
        return xp.ascontiguousarray(xp.moveaxis(grad.reshape(moved), -1, cls_axis))


class MSELoss(_Loss):
    """Mean squared error (semantics of ``torch.nn.MSELoss``).

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}

    Notes
    -----
    ``input`` and ``target`` must have the same shape and dtype (no broadcasting).
    ``loss = mean((input - target) ** 2)``, ``d loss / d input = 2 (input - target) / n``.
    """

    def forward(self, input, target):
        name = type(self).__name__
        self._check_float("input", input)
        self._check_float("target", target)
        if is_cupy(input) != is_cupy(target):
            raise TypeError(f"{name}: input and target must both be NumPy or both CuPy "
                            f"arrays")
        if input.dtype != target.dtype:
            raise TypeError(f"{name}: input is {input.dtype.name} but target is "
                            f"{target.dtype.name}; convert with "
                            f"target.astype(np.{input.dtype.name})")
        if tuple(input.shape) != tuple(target.shape):
            raise ValueError(f"{name}: input has shape {tuple(input.shape)} but target has "
                             f"{tuple(target.shape)}; they must match")
        diff = input - target
        self._ctx = diff
        return self._reduce(diff * diff)

    def backward(self, grad_output=None):
        """Gradient w.r.t. the input of the latest call (``grad_output`` defaults to 1)."""
        diff = self._saved()
        xp = array_module(diff)
        g = self._upstream(grad_output, diff.shape, diff.dtype, xp)
        return 2 * diff * g
