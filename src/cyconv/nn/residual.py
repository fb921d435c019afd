"""``Residual``: ``y = body(x) + shortcut(x)``, and ``fuse_conv_bn``."""
from __future__ import annotations

import copy

from ._device import array_module
from .conv import Conv1d, Conv2d, Conv3d
from .module import Module, Parameter
from .normalization import _BatchNorm

__all__ = ["Residual", "fuse_conv_bn"]


class Residual(Module):
    """A residual block: ``y = body(x) + (shortcut(x) if shortcut else x)``.

    cyconv's own addition (PyTorch users write the sum in ``forward``): a ResNet block
    whose backward pass needs no code.

    Parameters
    ----------
    body : Module
        The main path, e.g. ``Sequential(Conv2d, BatchNorm2d, ReLU, Conv2d, BatchNorm2d)``.
    shortcut : Module, optional
        The projection path (e.g. a strided 1x1 ``Conv2d`` and a ``BatchNorm2d``) when
        the body changes the shape; None is the identity.

    Notes
    -----
    ``backward(gy)`` returns ``body.backward(gy) + shortcut.backward(gy)`` (or ``+ gy``),
    accumulating both paths' parameter gradients.  ``state_dict`` keys are ``body.*`` and
    ``shortcut.*``.  The activation after the sum belongs outside:
    ``Sequential(Residual(...), ReLU())``.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        for arg, m in (("body", body), ("shortcut", shortcut)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {arg} must be a cyconv.nn.Module, got "
                                f"{type(m).__name__}")
        if body is None:
            raise TypeError("Residual: body must be a cyconv.nn.Module, got NoneType")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        if tuple(y.shape) != tuple(s.shape):
            raise ValueError(f"Residual: the body's output {tuple(y.shape)} and the "
                             f"shortcut's {tuple(s.shape)} differ for input "
                             f"{tuple(x.shape)}; give a shortcut that matches the body")
        self._ctx = True
        return y + s

    def backward(self, grad_output):
        self._saved()
        g = self.body.backward(grad_output)
        if self.shortcut is None:
            return g + grad_output
        return g + self.shortcut.backward(grad_output)


def fuse_conv_bn(conv, bn):
    """A new convolution equal to ``conv`` followed by ``bn`` in evaluation mode
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``).

    Parameters
    ----------
    conv : Conv1d, Conv2d or Conv3d
    bn : BatchNorm1d, BatchNorm2d or BatchNorm3d
        With running statistics, ``num_features == conv.out_channels``.

    Returns
    -------
    A copy of ``conv`` (same arguments, dtype and device, with a bias) whose
    ``weight = conv.weight * s`` (per output channel) and
    ``bias = (conv.bias - running_mean) * s + bn.bias``, where
    ``s = bn.weight / sqrt(running_var + eps)``.  ``conv`` and ``bn`` are unchanged.
    """
    if type(conv) not in (Conv1d, Conv2d, Conv3d):
        raise TypeError(f"fuse_conv_bn: conv must be a Conv1d, Conv2d or Conv3d, got "
                        f"{type(conv).__name__}")
    if not isinstance(bn, _BatchNorm):
        raise TypeError(f"fuse_conv_bn: bn must be a BatchNorm1d/2d/3d, got "
                        f"{type(bn).__name__}")
    if bn.running_mean is None:
        raise ValueError("fuse_conv_bn: bn has no running statistics "
                         "(track_running_stats=False); nothing to fold")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fuse_conv_bn: bn has num_features={bn.num_features}, but conv has "
                         f"out_channels={conv.out_channels}")
    w = conv.weight.data
    xp = array_module(w)
    acc = xp.float64 if w.dtype != xp.float16 else xp.float32
    scale = 1.0 / xp.sqrt(bn.running_var.astype(acc) + bn.eps)
    shift = -bn.running_mean.astype(acc) * scale
    if bn.affine:
        scale = scale * bn.weight.data.astype(acc)
        shift = shift * bn.weight.data.astype(acc) + bn.bias.data.astype(acc)
    b = (conv.bias.data.astype(acc) if conv.bias is not None
         else xp.zeros(conv.out_channels, acc))
    fused = copy.copy(conv)
    object.__setattr__(fused, "_parameters", type(conv._parameters)())
    object.__setattr__(fused, "_buffers", type(conv._buffers)())
    object.__setattr__(fused, "_modules", type(conv._modules)())
    object.__setattr__(fused, "_ctx", None)
    fused.weight = Parameter((w.astype(acc) * scale.reshape((-1,) + (1,) * (w.ndim - 1)))
                             .astype(w.dtype))
    fused.bias = Parameter((b * scale + shift).astype(w.dtype))
    return fused
