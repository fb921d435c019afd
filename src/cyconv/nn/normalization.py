"""Batch normalisation layers: ``BatchNorm1d``, ``BatchNorm2d``, ``BatchNorm3d``.

They hold PyTorch's parameters (``weight``, ``bias``) and buffers (``running_mean``,
``running_var``, ``num_batches_tracked``) and compute through
``cyconv.batch_norm`` and ``cyconv.grad.batch_norm``.
"""
from __future__ import annotations

import numpy as np

import cyconv

from .. import _norm
from .._params import check_eps_momentum, is_int
from ._device import layer_dtype, parse_device, to_device
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(Module):
    """Shared construction, checks and bookkeeping of the three batch-norm layers."""

    _ndims = ()          # accepted input ranks
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, device="cpu"):
        super().__init__()
        name = type(self).__name__
        if not is_int(num_features) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int, got "
                             f"{num_features!r}")
        eps, momentum = check_eps_momentum(name, eps, momentum)
        dev, index = parse_device(name, device)
        dt = layer_dtype(name, dtype, dev)
        C = int(num_features)
        self.num_features = C
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)

        def put(a):
            return to_device(a, dev, index, name)

        if self.affine:
            self.weight = Parameter(put(np.ones(C, dt)))
            self.bias = Parameter(put(np.zeros(C, dt)))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", put(np.zeros(C, dt)))
            self.register_buffer("running_var", put(np.ones(C, dt)))
            self.register_buffer("num_batches_tracked", put(np.zeros((), np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Running mean 0, running variance 1, no batch tracked (as PyTorch)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _check(self, x):
        name = type(self).__name__
        ref = self.weight.data if self.affine else self.running_mean
        self._check_input(x, ref)
        if x.ndim not in self._ndims:
            raise ValueError(f"{name}: expected {self._layout} input, got {x.ndim}-D input "
                             f"of shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: input has {x.shape[1]} channels, expected "
                             f"num_features={self.num_features} (input shape "
                             f"{tuple(x.shape)})")

    def forward(self, x):
        """Normalise ``x`` with its batch statistics (training, updating the running
        ones) or with the running statistics (evaluation), as PyTorch's layer does."""
        self._check(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:         # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        track = not self.training or self.track_running_stats
        y, stats = _norm.forward(x, self.running_mean if track else None,
                                 self.running_var if track else None, w, b, use_batch,
                                 factor, self.eps)
        self._ctx = (x, stats, use_batch)
        return y

    def backward(self, grad_output):
        """Input gradient of the latest call (through the batch statistics in training
        mode); adds ``weight.grad`` and ``bias.grad``."""
        x, stats, use_batch = self._saved()
        mean, invstd = stats if stats is not None and use_batch else (None, None)
        w = None if self.weight is None else self.weight.data
        gx, gw, gb = cyconv.grad.batch_norm(
            grad_output, x, None if use_batch else self.running_mean,
            None if use_batch else self.running_var, w, use_batch, self.eps,
            save_mean=mean, save_invstd=invstd)
        if self.affine:
            self._accumulate(self.weight, gw)
            self._accumulate(self.bias, gb)
        return gx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


_DOC = """Batch normalisation over {what} (semantics of ``torch.nn.BatchNorm{nd}d``).

Parameters
----------
num_features : int
    C, the channels of the {layout} input.
eps : float
    Added to the variance.
momentum : float or None
    The running statistics' update factor; None uses the cumulative average
    (factor 1 / num_batches_tracked), as PyTorch.
affine : bool
    Learn ``weight`` (ones) and ``bias`` (zeros) of shape (C,).
track_running_stats : bool
    Keep ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``
    (int64) buffers, updated in training mode and used in evaluation mode; without them
    the batch statistics are used in both modes.
dtype : float32 (default) or float64 (float16 on 'cuda')
device : {{'cpu', 'cuda'}}

Notes
-----
``state_dict`` keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``.  The running variance is updated with the unbiased batch
variance, the normalisation uses the biased one.
"""


class BatchNorm1d(_BatchNorm):
    __doc__ = _DOC.format(nd=1, what="the batch (and length) of (N, C) or (N, C, L) inputs",
                          layout="(N, C) or (N, C, L)")
    _ndims = (2, 3)
    _layout = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    __doc__ = _DOC.format(nd=2, what="N, H and W of (N, C, H, W) inputs", layout="(N, C, H, W)")
    _ndims = (4,)
    _layout = "4-D (N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    __doc__ = _DOC.format(nd=3, what="N, D, H and W of (N, C, D, H, W) inputs",
                          layout="(N, C, D, H, W)")
    _ndims = (5,)
    _layout = "5-D (N, C, D, H, W)"
