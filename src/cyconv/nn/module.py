"""``Parameter`` and ``Module``: PyTorch's ``nn.Module`` with an explicit backward pass.

A module computes ``y = module(x)`` and keeps what its backward pass needs (its
*context*).  ``module.backward(gy)`` then returns the gradient with respect to the
input of that latest call and adds each parameter's gradient into ``param.grad``, as
``loss.backward()`` does in PyTorch.  There is no autograd graph: a container calls
its children's ``backward`` in reverse order.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from ._device import device_of, is_cupy, layer_dtype, parse_device, to_device

__all__ = ["Parameter", "Module"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter:
    """A trainable array and its accumulated gradient.

    Parameters
    ----------
    data : array
        A NumPy or CuPy array; it is used as is (not copied).

    Attributes
    ----------
    data : array
        The value.  Optimizers update it in place.
    grad : array or None
        The gradient accumulated by ``Module.backward`` since the last ``zero_grad``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        if not (isinstance(data, np.ndarray) or is_cupy(data)):
            raise TypeError(f"Parameter: data must be a NumPy or CuPy array, got "
                            f"{type(data).__name__}")
        self.data = data
        self.grad = None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype.name}, device={self.device!r})"


def _describe_array(x) -> str:
    return f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"


class Module:
    """Base class of every layer, container and loss (semantics of ``torch.nn.Module``).

    Subclasses implement ``forward(x)``, saving what they need in ``self._ctx``, and
    ``backward(grad_output)``, which reads ``self._ctx`` through :meth:`_saved`.
    Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it,
    in assignment order, under the attribute's name: that order and those names make
    the ``state_dict`` keys (``"weight"``, ``"0.bias"``, ``"depthwise.weight"``).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_ctx", None)

    # -- registration --------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before "
                               f"assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value          # a buffer stays one (None included)
            object.__setattr__(self, name, value)
            return
        # replacing a parameter or module keeps its place (state_dict and Sequential order)
        kind = (self._parameters if isinstance(value, Parameter)
                else self._modules if isinstance(value, Module) else None)
        for d in (self._parameters, self._modules, self._buffers):
            if d is not kind:
                d.pop(name, None)
        if kind is not None:
            kind[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._buffers.pop(name, None)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- calling -------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output):
        """Gradient w.r.t. the input of the latest ``forward``; adds parameter grads."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _saved(self):
        """The context of the latest forward; a clear error when there is none."""
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward: "
                               f"call the module on an input first; backward returns the "
                               f"gradient for the input of the latest call")
        return self._ctx

    def _check_input(self, x, ref=None):
        """Input checks shared by the layers: an array, on the layer's device, of its dtype.

        ``ref`` is the array whose device and dtype the input must match (the weight);
        parameterless layers pass ``None`` and leave dtype checks to the functional op.
        """
        name = type(self).__name__
        if not (isinstance(x, np.ndarray) or is_cupy(x)):
            hint = ""
            if type(x).__module__.split(".")[0] == "torch":
                hint = "; convert a torch tensor with x.numpy() or np.from_dlpack(x)"
            raise TypeError(f"{name}: expected a NumPy or CuPy array, got "
                            f"{_describe_array(x)}{hint}")
        if ref is None:
            return
        if device_of(x) != device_of(ref):
            move = "cupy.asarray(x)" if is_cupy(ref) else "cupy.asnumpy(x)"
            raise TypeError(f"{name}: input is a {'CuPy' if is_cupy(x) else 'NumPy'} array "
                            f"({device_of(x)}) but the layer's parameters are on "
                            f"{device_of(ref)}; move the input with {move} or the layer "
                            f"with .to({device_of(x)!r})")
        if x.dtype != ref.dtype:
            raise TypeError(f"{name}: input is {x.dtype.name} but the layer's weight is "
                            f"{ref.dtype.name}; convert with x.astype(np.{ref.dtype.name}) "
                            f"or build the layer with dtype=np.{x.dtype.name}")

    @staticmethod
    def _accumulate(param, grad):
        """``param.grad += grad`` (``grad`` is fresh, so the first one is kept as is)."""
        if param.grad is None:
            param.grad = grad
        else:
            param.grad += grad

    # -- traversal -----------------------------------------------------------------
    def named_children(self):
        yield from self._modules.items()

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = ""):
        """``(name, module)`` for this module and every descendant, depth first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """``(name, Parameter)`` pairs, own parameters first, with PyTorch's names."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        if recurse:
            for name, m in self._modules.items():
                yield from m.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def register_buffer(self, name: str, array):
        """Register ``array`` (or None) as a buffer: state that is not trained but is saved
        in the ``state_dict`` and moved by :meth:`to` (BatchNorm's running statistics)."""
        if "_buffers" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before "
                               f"registering buffers")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{type(self).__name__}.register_buffer: the name must be a "
                             f"non-empty string without '.', got {name!r}")
        if array is not None and not (isinstance(array, np.ndarray) or is_cupy(array)):
            raise TypeError(f"{type(self).__name__}.register_buffer: {name!r} must be a "
                            f"NumPy or CuPy array or None, got {type(array).__name__}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        """``(name, array)`` of every buffer that is not None, own buffers first."""
        for name, b in self._buffers.items():
            if b is not None:
                yield (f"{prefix}.{name}" if prefix else name), b
        if recurse:
            for name, m in self._modules.items():
                yield from m.named_buffers(f"{prefix}.{name}" if prefix else name)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def _named_state(self, prefix: str = ""):
        """``(key, owner, attribute)`` of every state_dict entry in PyTorch's order: each
        module's parameters, then its buffers, then its children's entries."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p, "data"
        for name, b in self._buffers.items():
            if b is not None:
                yield (f"{prefix}.{name}" if prefix else name), self, name
        for name, m in self._modules.items():
            yield from m._named_state(f"{prefix}.{name}" if prefix else name)

    # -- training state ------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True):
        """Reset every parameter's gradient (to ``None``, or to zeros in place)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def train(self, mode: bool = True):
        """Set training mode on this module and its descendants; returns ``self``."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Same as ``train(False)``."""
        return self.train(False)

    # -- state_dict ----------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """Every parameter and buffer under PyTorch's key, as a copy on its device.

        Unlike PyTorch, the arrays are snapshots: later optimizer steps do not change a
        state_dict taken before them.
        """
        return OrderedDict((key, getattr(owner, attr).copy())
                           for key, owner, attr in self._named_state())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into the existing parameters, keeping their dtype and device.

        Parameters
        ----------
        state_dict : mapping of str to array
            NumPy or CuPy arrays (or anything ``numpy.asarray`` accepts, such as a
            PyTorch state_dict converted with ``{k: v.numpy() for k, v in sd.items()}``).
        strict : bool
            With ``True`` a missing or unexpected key raises ``ValueError``; with
            ``False`` such keys are only reported in the result.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, as PyTorch returns.

        Raises
        ------
        ValueError
            For a missing or unexpected key (``strict=True``) or a shape mismatch, naming
            the keys; nothing is copied then.
        """
        name = type(self).__name__
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"{name}.load_state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        own = OrderedDict((key, (owner, attr)) for key, owner, attr in self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"{name}.load_state_dict: {'; '.join(parts)} (the model has "
                             f"{list(own)})")
        values = {}
        for key, (owner, attr) in own.items():
            if key not in state_dict:
                continue
            v = state_dict[key]
            if not (isinstance(v, np.ndarray) or is_cupy(v)):
                v = np.asarray(v)
            have = tuple(getattr(owner, attr).shape)
            if tuple(v.shape) != have:
                raise ValueError(f"{name}.load_state_dict: shape mismatch for {key!r}: the "
                                 f"state_dict has {tuple(v.shape)}, the model {have}")
            values[key] = v
        for key, v in values.items():
            target = getattr(*own[key])
            if is_cupy(target) != is_cupy(v):
                v = to_device(v, device_of(target), what=f"{name}.load_state_dict")
            target[...] = v.astype(target.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # -- device and dtype ----------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter and buffer in place; returns ``self``.

        Parameters
        ----------
        device : {'cpu', 'cuda', 'cuda:<index>'} or dtype, optional
            'cuda' stores parameters as CuPy arrays (CuPy is imported now, with a clear
            error when it or a GPU is missing).  A dtype given here is taken as ``dtype``,
            so ``model.to(np.float64)`` works as in PyTorch.
        dtype : float32 or float64 (float16 on 'cuda'), optional

        Notes
        -----
        Gradients move with their parameters; integer buffers (``num_batches_tracked``)
        keep their dtype.  Saved forward contexts are dropped, so
        call the model again before ``backward``.  Create optimizers after moving a
        model: their state stays where it was.
        """
        name = f"{type(self).__name__}.to"
        if device is not None and not isinstance(device, str):
            if dtype is not None:
                raise ValueError(f"{name}: got two dtypes, {device!r} and {dtype!r}")
            device, dtype = None, device
        params = list(self.parameters())
        if device is None:
            first = params[0].data if params else next(self.buffers(), None)
            target, index = (device_of(first) if first is not None else "cpu"), None
        else:
            target, index = parse_device(name, device)
        dt = None if dtype is None else layer_dtype(name, dtype, target)
        for p in params:
            for attr in ("data", "grad"):
                a = getattr(p, attr)
                if a is None:
                    continue
                a = to_device(a, target, index, what=name)
                if dt is not None and a.dtype != dt:
                    a = a.astype(dt)
                setattr(p, attr, a)
        for m in self.modules():         # buffers: floating ones take the dtype too
            for key, b in list(m._buffers.items()):
                if b is None:
                    continue
                b = to_device(b, target, index, what=name)
                if dt is not None and b.dtype.kind == "f" and b.dtype != dt:
                    b = b.astype(dt)
                setattr(m, key, b)
        for m in self.modules():
            object.__setattr__(m, "_ctx", None)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # -- printing ------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

