"""``Sequential``: modules applied in order, their backward passes in reverse order."""
from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np

from .._params import is_int
from ._device import array_module
from .module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """A chain of modules (semantics of ``torch.nn.Sequential``).

    Parameters
    ----------
    *modules : Module
        Registered as ``"0"``, ``"1"``, ..., so parameter keys read ``"0.weight"``.
        A single ``OrderedDict`` (or dict) of name -> module uses those names instead.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
    ...                       nn.Linear(4 * 8 * 8, 10))
    >>> y = model(np.zeros((2, 1, 8, 8), np.float32))
    >>> gx = model.backward(np.ones_like(y))
    >>> list(model.state_dict())
    ['0.weight', '0.bias', '3.weight', '3.bias']
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"{type(self).__name__}: module names must be non-empty "
                                 f"strings without '.', got {name!r}")
            if not isinstance(m, Module):
                raise TypeError(f"{type(self).__name__}: {name!r} is a {type(m).__name__}, "
                                f"not a cyconv.nn.Module")
            setattr(self, name, m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        self._ctx = True
        return x

    def backward(self, grad_output):
        self._saved()
        g = grad_output
        for m in reversed(self._modules.values()):
            g = m.backward(g)
        return g

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        if not is_int(idx) or not -len(items) <= idx < len(items):
            raise IndexError(f"{type(self).__name__}: index {idx!r} out of range for "
                             f"{len(items)} modules")
        return items[idx][1]

    def append(self, module):
        """Add ``module`` at the end, under the next integer name; returns ``self``."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.append: expected a cyconv.nn.Module, "
                            f"got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def summary(self, input_shape, file=None):
        """Print each child's output shape and parameter count for an input shape.

        Runs the model on zeros of ``input_shape`` (in the parameters' dtype and device);
        the saved forward contexts and the buffers (running statistics) are restored
        afterwards, so a pending ``backward`` and the model's state are unaffected.

        Parameters
        ----------
        input_shape : tuple of ints
            Including the batch dim, e.g. ``(1, 1, 8, 8)``.
        file : file-like, optional
            Where to print (default ``sys.stdout``).
        """
        params = list(self.parameters())
        ref = params[0].data if params else np.empty(0, np.float32)
        xp = array_module(ref)
        x = xp.zeros(tuple(int(s) for s in input_shape), ref.dtype)
        saved = [(m, m._ctx) for m in self.modules()]
        buffers = [(b, b.copy()) for b in self.buffers()]   # BatchNorm's running statistics
        rows = [("input", "", tuple(x.shape), "")]
        try:
            for name, m in self._modules.items():
                x = m(x)
                if isinstance(x, tuple):          # MaxPool with return_indices
                    x = x[0]
                n = sum(p.size for p in m.parameters())
                rows.append((name, type(m).__name__, tuple(x.shape), f"{n:,}"))
        finally:
            for m, ctx in saved:
                object.__setattr__(m, "_ctx", ctx)
            for b, copy in buffers:
                b[...] = copy
        header = ("name", "layer", "output shape", "params")
        table = [header] + [(a, b, str(c), d) for a, b, c, d in rows]
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        lines = ["  ".join(r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i])
                           for i in range(4)) for r in table]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        total = sum(p.size for p in params)
        lines.append(f"total parameters: {total:,} ({ref.dtype.name})")
        print("\n".join(lines), file=file if file is not None else sys.stdout)
