"""``Upsample``: ``cyconv.interpolate`` as a layer."""
from __future__ import annotations

import cyconv

from .module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """Resample the spatial dims (semantics of ``torch.nn.Upsample``).

    Parameters
    ----------
    size : int or tuple of ints, optional
    scale_factor : float or tuple of floats, optional
        Exactly one of ``size`` and ``scale_factor`` (checked at the first call, as in
        PyTorch).
    mode : {'nearest', 'linear', 'bilinear', 'trilinear'}
    align_corners : bool, optional
        Linear modes only; None means False.

    Notes
    -----
    Input (N, C, L), (N, C, H, W) or (N, C, D, H, W), as for ``cyconv.interpolate``; the
    backward pass is ``cyconv.grad.interpolate``.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def _args(self):
        return self.size, self.scale_factor, self.mode, self.align_corners

    def forward(self, x):
        self._check_input(x)
        y = cyconv.interpolate(x, *self._args())
        self._ctx = tuple(x.shape)
        return y

    def backward(self, grad_output):
        return cyconv.grad.interpolate(grad_output, self._saved(), *self._args())

    def extra_repr(self):
        what = (f"size={self.size}" if self.size is not None
                else f"scale_factor={self.scale_factor}")
        return f"{what}, mode={self.mode!r}"
