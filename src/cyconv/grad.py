"""Gradients of the functional ops, with ``torch.nn.grad``'s names and semantics.

Each function returns one array.  ``input_size``/``weight_size`` are shape tuples; an
unbatched ``input_size`` gives an unbatched gradient.  Every padding form the forward op
accepts is accepted here too.
"""
from __future__ import annotations

from . import _dispatch
from ._dispatch import backend, batched, planned, unbatch
from ._params import conv_params, is_int

__all__ = ["bias"] + [f"conv{nd}d_{w}" for nd in (1, 2, 3) for w in ("input", "weight")] + [
    f"conv_transpose{nd}d_{w}" for nd in (1, 2, 3) for w in ("input", "weight")]


def _size(op, name, size):
    if (isinstance(size, (tuple, list)) or type(size).__name__ == "Size") and all(
            is_int(v) for v in size):
        return tuple(int(v) for v in size)
    raise ValueError(f"{op}: {name} must be a tuple of ints, got {size!r}")


def _check_gy(op, p, gy):
    if tuple(gy.shape) != p.y_shape:
        raise ValueError(f"{op}: grad_output has shape {tuple(gy.shape)}, expected {p.y_shape} "
                         f"for input {p.x_shape} and weight {p.w_shape}")


def _conv_input(op, nd, input_size, weight, grad_output, stride, padding, dilation, groups,
                algorithm, transposed=False, output_padding=0):
    plan = planned(_plan_input, op, (weight, grad_output),
                   (nd, input_size, stride, padding, dilation, groups, algorithm, transposed,
                    output_padding))
    p = plan.params
    be = backend(plan.device)
    gy = batched(grad_output, p)
    if transposed:   # the transposed op's input is the conv view's column side
        gx = be.conv_forward(plan, gy, weight, None)
    else:
        gx = be.conv_backward_input(plan, gy, weight, None)
    return unbatch(gx, p)


def _plan_input(op, weight, grad_output, nd, input_size, stride, padding, dilation, groups,
                algorithm, transposed, output_padding):
    device, dtype = _dispatch.prepare(op, weight=weight, grad_output=grad_output)
    p = conv_params(op, nd, _size(op, "input_size", input_size), weight.shape, stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    output_padding=output_padding, transposed=transposed)
    _check_gy(op, p, grad_output)
    direction = "forward" if transposed else "backward_input"
    return _dispatch.plan_for(op, p, direction, "input", dtype, algorithm, device)


def _conv_weight(op, nd, input, weight_size, grad_output, stride, padding, dilation, groups,
                 algorithm, transposed=False, output_padding=0):
    plan = planned(_plan_weight, op, (input, grad_output),
                   (nd, weight_size, stride, padding, dilation, groups, algorithm, transposed,
                    output_padding))
    p = plan.params
    x = batched(input, p)
    gy = batched(grad_output, p)
    if transposed:   # image side = the transposed op's output
        return backend(plan.device).conv_backward_weight(plan, gy, x)
    return backend(plan.device).conv_backward_weight(plan, x, gy)


def _plan_weight(op, input, grad_output, nd, weight_size, stride, padding, dilation, groups,
                 algorithm, transposed, output_padding):
    device, dtype = _dispatch.prepare(op, input=input, grad_output=grad_output)
    p = conv_params(op, nd, input.shape, _size(op, "weight_size", weight_size), stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    output_padding=output_padding, transposed=transposed)
    _check_gy(op, p, grad_output)
    return _dispatch.plan_for(op, p, "backward_weight", "weight", dtype, algorithm, device)


def _make(nd):
    def conv_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                   *, algorithm="auto"):
        return _conv_input(f"conv{nd}d_input", nd, input_size, weight, grad_output, stride,
                           padding, dilation, groups, algorithm)

    def conv_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1,
                    groups=1, *, algorithm="auto"):
        return _conv_weight(f"conv{nd}d_weight", nd, input, weight_size, grad_output, stride,
                            padding, dilation, groups, algorithm)

    def convt_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0,
                    groups=1, dilation=1, *, algorithm="auto"):
        return _conv_input(f"conv_transpose{nd}d_input", nd, input_size, weight, grad_output,
                           stride, padding, dilation, groups, algorithm, transposed=True,
                           output_padding=output_padding)

    def convt_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto"):
        return _conv_weight(f"conv_transpose{nd}d_weight", nd, input, weight_size,
                            grad_output, stride, padding, dilation, groups, algorithm,
                            transposed=True, output_padding=output_padding)

    fns = {f"conv{nd}d_input": conv_input, f"conv{nd}d_weight": conv_weight,
           f"conv_transpose{nd}d_input": convt_input,
           f"conv_transpose{nd}d_weight": convt_weight}
    for name, fn in fns.items():
        fn.__name__ = fn.__qualname__ = name
        kind = "input" if name.endswith("input") else "weight"
        fn.__doc__ = (f"Gradient of ``{name.rsplit('_', 1)[0]}`` with respect to its {kind} "
                      f"(semantics of ``torch.nn.grad.{name}``).")
    return fns


for _nd in (1, 2, 3):
    globals().update(_make(_nd))


def bias(grad_output, channel_axis=1):
    """Gradient of a bias: ``grad_output`` summed over every axis but ``channel_axis``.

    Use ``channel_axis=0`` for an unbatched convolution and ``-1`` for ``linear``.
    """
    device, _ = _dispatch.prepare("bias", grad_output=grad_output)
    nd = grad_output.ndim
    if not is_int(channel_axis) or not -nd <= channel_axis < nd:
        raise ValueError(f"bias: channel_axis={channel_axis!r} is out of range for grad_output "
                         f"of shape {tuple(grad_output.shape)}")
    axes = tuple(a for a in range(nd) if a != channel_axis % nd)
    return backend(device).bias_grad(grad_output, axes)

# ---- pooling, padding, ReLU (cyconv/_pool.py) ----
from ._pool import grad_adaptive_avg_pool1d as adaptive_avg_pool1d  # noqa: E402
from ._pool import grad_adaptive_avg_pool2d as adaptive_avg_pool2d  # noqa: E402
from ._pool import grad_adaptive_avg_pool3d as adaptive_avg_pool3d  # noqa: E402
from ._pool import grad_avg_pool1d as avg_pool1d  # noqa: E402
from ._pool import grad_avg_pool2d as avg_pool2d  # noqa: E402
from ._pool import grad_avg_pool3d as avg_pool3d  # noqa: E402
from ._pool import grad_max_pool1d as max_pool1d  # noqa: E402
from ._pool import grad_max_pool2d as max_pool2d  # noqa: E402
from ._pool import grad_max_pool3d as max_pool3d  # noqa: E402
from ._pool import grad_pad as pad  # noqa: E402
from ._pool import grad_relu as relu  # noqa: E402

__all__ += ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
            "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "relu", "pad"]

# ---- batch norm, activations, softmax, dropout, resampling ----
from ._activation import grad_dropout as dropout  # noqa: E402
from ._activation import grad_gelu as gelu  # noqa: E402
from ._activation import grad_leaky_relu as leaky_relu  # noqa: E402
from ._activation import grad_log_softmax as log_softmax  # noqa: E402
from ._activation import grad_sigmoid as sigmoid  # noqa: E402
from ._activation import grad_silu as silu  # noqa: E402
from ._activation import grad_softmax as softmax  # noqa: E402
from ._activation import grad_tanh as tanh  # noqa: E402
from ._norm import grad_batch_norm as batch_norm  # noqa: E402
from ._resample import grad_adaptive_max_pool1d as adaptive_max_pool1d  # noqa: E402
from ._resample import grad_adaptive_max_pool2d as adaptive_max_pool2d  # noqa: E402
from ._resample import grad_adaptive_max_pool3d as adaptive_max_pool3d  # noqa: E402
from ._resample import grad_interpolate as interpolate  # noqa: E402

__all__ += ["batch_norm", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softmax",
            "log_softmax", "dropout", "interpolate", "adaptive_max_pool1d",
            "adaptive_max_pool2d", "adaptive_max_pool3d"]
