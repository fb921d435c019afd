"""The one path every convolution takes: arguments -> plan (cached) -> backend.

``functional`` and ``grad`` describe each public op as a direction of the conv-view
primitives (forward, backward_input, backward_weight).  A call first looks its plan up
by its raw arguments (:func:`planned`); only on a miss are the devices, dtypes and
arguments checked and normalised (:mod:`cyconv._params`) and the plan made
(:mod:`cyconv._plan`), through a second cache keyed by the normalised arguments, which
:func:`cyconv.plan` shares, so a plan asked for and the plan a call runs are one object.
This module also handles the batch forms (unbatched in, unbatched out; N = 0).
"""
from __future__ import annotations

import numpy as np

from . import _cpu, _plan, _runtime
from ._params import (array_module_name, check_algorithm, check_dtypes, check_winograd,
                      conv_params)

#: public direction -> conv-view direction, for a convolution and a transposed one.
CONV_DIRECTIONS = {False: {"forward": "forward", "input": "backward_input",
                           "weight": "backward_weight"},
                   True: {"forward": "backward_input", "input": "forward",
                          "weight": "backward_weight"}}
DEVICES = {"numpy": "cpu", "cupy": "cuda"}
_calls: dict = {}


def backend(device: str):
    """The module that executes plans on ``device`` ('cpu' or 'cuda')."""
    if device == "cuda":
        from . import _gpu
        return _gpu
    return _cpu


def prepare(op, **arrays):
    """Device ('cpu' | 'cuda') and common dtype of the named arrays (``bias`` may be
    None).  TypeError for anything but a NumPy or CuPy array, naming the argument, and
    for mixed devices or dtypes."""
    if arrays.get("bias", 0) is None:
        del arrays["bias"]
    xp_name = array_module_name(op, **arrays)
    dtype = check_dtypes(op, xp_name, **arrays)
    return DEVICES[xp_name], dtype


def plan_key(p, conv_direction, public_direction, dtype, algorithm, device):
    """The key of a plan: every normalised argument it depends on (not ``p.op``, which
    names the public function for error messages), and the settings' generation."""
    return (p.nd, p.transposed, p.batched, p.N, p.C_in, p.C_out, p.G, p.in_size,
            p.out_size, p.kernel_size, p.stride, p.padding, p.dilation, p.output_padding,
            conv_direction, public_direction, np.dtype(dtype), algorithm, device,
            _runtime.generation)


def plan_for(op, p, conv_direction, public_direction, dtype, algorithm, device):
    """The plan of normalised arguments, from the cache or made and cached."""
    check_algorithm(op, algorithm)
    key = plan_key(p, conv_direction, public_direction, dtype, algorithm, device)
    plan = _plan.lookup(key)
    if plan is None:
        if algorithm == "winograd":
            check_winograd(op, p)
        base = op.removesuffix("_input").removesuffix("_weight")
        plan = _plan.make_plan(base, p, conv_direction, dtype, algorithm, device,
                               public_direction)
        _plan.remember(key, plan)
    return plan


def planned(make, op, arrays, args):
    """``make(op, *arrays, *args)``, cached by the call's raw arguments: a convolution's
    :class:`~cyconv._plan.Plan`, or the checked state of an op with no kernel choice
    (pooling, pad, linear), e.g. ``(device, PoolParams)``.  The key holds each array's
    type, shape and dtype (None stays None), the other arguments frozen with their types
    (:func:`cyconv._plan.freeze`) and the settings' generation; arguments that cannot
    key the cache (lists, say) are checked afresh on every call, and a call whose
    arguments are wrong raises from ``make`` every time."""
    try:
        key = [op, _runtime.generation]
        for a in arrays:
            key.append(None if a is None else (type(a), a.shape, a.dtype))
        for v in args:
            key.append(_plan.freeze(v))
        key = tuple(key)
        return _calls[key]
    except KeyError:
        state = make(op, *arrays, *args)
        remember_call(key, state)
        return state
    except (AttributeError, TypeError, _plan.Unplanned):
        return make(op, *arrays, *args)


def remember_call(key, plan):
    if len(_calls) >= _plan.CACHE_SIZE:
        try:
            del _calls[next(iter(_calls))]
        except (StopIteration, KeyError, RuntimeError):
            pass
    _calls[key] = plan


def clear_cache():
    """Forget every cached call and plan."""
    _calls.clear()
    _plan.clear_cache()


def batched(a, p):
    """View an op-side array as batched (N, C, ...)."""
    return a if p.batched else a[None]


def unbatch(a, p):
    return a if p.batched else a[0]


_PLAN_OPS = {**{f"conv{nd}d": (nd, False) for nd in (1, 2, 3)},
             **{f"conv_transpose{nd}d": (nd, True) for nd in (1, 2, 3)}}
_PLAN_KWARGS = {False: ("stride", "padding", "dilation", "groups"),
                True: ("stride", "padding", "output_padding", "groups", "dilation",
                       "output_size")}


def plan(op, input_shape, weight_shape, *, dtype="float32", device="cpu",
         direction="forward", **op_kwargs):
    """The plan of a convolution call: which kernel runs, and why.

    Parameters
    ----------
    op : str
        ``"conv1d"`` ... ``"conv3d"``, ``"conv_transpose1d"`` ... ``"conv_transpose3d"``.
    input_shape, weight_shape : tuple of ints
        The op's input and weight shapes (batched or unbatched input), as for the call.
    dtype : {"float32", "float64"} (``"float16"`` too on the GPU)
    device : {"cpu", "cuda"}
    direction : {"forward", "input", "weight"}
        The op itself, or its ``cyconv.grad`` input or weight gradient.
    **op_kwargs
        The op's own arguments: ``stride``, ``padding``, ``dilation``, ``groups``
        (``output_padding`` and ``output_size`` for a transposed convolution) and
        ``algorithm``.

    Returns
    -------
    Plan
        The object the matching call executes (the same one, from the same cache):
        ``.kernel``, ``.algorithm``, ``.reason``, ``.out_shape``, ``.threads``,
        ``.workspace_bytes``; ``print(plan)`` shows them.  Bad arguments raise the op's
        own errors.

    Examples
    --------
    >>> print(cyconv.plan("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), padding=1))
    """
    if op not in _PLAN_OPS:
        raise ValueError(f"plan: op must be one of {', '.join(_PLAN_OPS)}, got {op!r}")
    nd, transposed = _PLAN_OPS[op]
    if direction not in _plan.PUBLIC_DIRECTIONS:
        raise ValueError(f"plan: direction must be 'forward', 'input' or 'weight', got "
                         f"{direction!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"plan: device must be 'cpu' or 'cuda', got {device!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    allowed = ("float16", "float32", "float64") if device == "cuda" else ("float32", "float64")
    if dt is None or dt.name not in allowed:
        raise TypeError(f"plan: dtype must be one of {', '.join(allowed)} on {device}, got "
                        f"{dtype!r}")
    algorithm = op_kwargs.pop("algorithm", "auto")
    allowed_kwargs = _PLAN_KWARGS[transposed]
    for name in op_kwargs:
        if name not in allowed_kwargs or (name == "output_size" and direction != "forward"):
            raise TypeError(f"plan: {op} {direction} takes no argument {name!r}")
    name = op if direction == "forward" else f"{op}_{direction}"
    if "output_size" in op_kwargs:
        op_kwargs["out_size"] = op_kwargs.pop("output_size")
    p = conv_params(name, nd, input_shape, weight_shape, transposed=transposed, **op_kwargs)
    return plan_for(name, p, CONV_DIRECTIONS[transposed][direction], direction,
                    dt.newbyteorder("="), algorithm, device)
