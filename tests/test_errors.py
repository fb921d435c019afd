"""Bad arguments get a clear ``ValueError``/``TypeError``, never a crash.

One test per error in API.md's list, for the convolutions, the transposed convolutions
and the gradient functions, each matching the whole message (messages name the op, the
argument and the shapes).  Then a fuzz test over garbage arguments, run in a child
process so that a crash or a hang fails the test instead of killing the session.
"""
from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest

import cyconv
from conftest import run_python

f32 = np.float32


def raises(exc, message):
    """``pytest.raises`` matching the whole message exactly."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def zeros(*shape, dtype=f32):
    return np.zeros(shape, dtype)


X = zeros(2, 3, 8, 8)
W = zeros(4, 3, 3, 3)
WT = zeros(3, 4, 3, 3)       # transposed weight: (C_in, C_out/groups, kH, kW)


# -- channels and groups ------------------------------------------------------------------------

def test_channel_mismatch():
    with raises(ValueError, "conv2d: input (2, 3, 8, 8) has 3 channels, weight (4, 2, 3, 3) "
                            "with groups=1 expects 2"):
        cyconv.conv2d(X, zeros(4, 2, 3, 3))


def test_channel_mismatch_with_groups():
    with raises(ValueError, "conv1d: input (2, 6, 9) has 6 channels, weight (4, 2, 3) "
                            "with groups=2 expects 4"):
        cyconv.conv1d(zeros(2, 6, 9), zeros(4, 2, 3), groups=2)


def test_channel_mismatch_hints_at_channels_last():
    with raises(ValueError, "conv2d: input (2, 8, 8, 3) has 8 channels, weight (4, 3, 3, 3) "
                            "with groups=1 expects 3. The last axis has 3: is the input "
                            "channels-last? Use x.transpose(0, 3, 1, 2)"):
        cyconv.conv2d(zeros(2, 8, 8, 3), W)


def test_channel_mismatch_hints_at_channels_last_unbatched():
    with raises(ValueError, "conv3d: input (5, 6, 7, 3) has 5 channels, weight (4, 3, 1, 1, 1) "
                            "with groups=1 expects 3. The last axis has 3: is the input "
                            "channels-last? Use x.transpose(3, 0, 1, 2)"):
        cyconv.conv3d(zeros(5, 6, 7, 3), zeros(4, 3, 1, 1, 1))


def test_channel_mismatch_transposed():
    with raises(ValueError, "conv_transpose2d: input (2, 3, 8, 8) has 3 channels, but weight "
                            "(4, 4, 3, 3) expects 4 (transposed weights are (in_channels, "
                            "out_channels/groups, *kernel))"):
        cyconv.conv_transpose2d(X, zeros(4, 4, 3, 3))


def test_groups_not_dividing_in_channels():
    with raises(ValueError, "conv2d: groups=3 does not divide in_channels=8 "
                            "(input (4, 8, 32, 32), weight (6, 3, 3, 3))"):
        cyconv.conv2d(zeros(4, 8, 32, 32), zeros(6, 3, 3, 3), groups=3)


def test_groups_not_dividing_out_channels():
    with raises(ValueError, "conv2d: groups=3 does not divide out_channels=4 "
                            "(input (4, 6, 32, 32), weight (4, 3, 3, 3))"):
        cyconv.conv2d(zeros(4, 6, 32, 32), zeros(4, 3, 3, 3), groups=3)


def test_groups_not_dividing_transposed():
    with raises(ValueError, "conv_transpose1d: groups=2 does not divide in_channels=3 "
                            "(input (1, 3, 5), weight (3, 2, 3))"):
        cyconv.conv_transpose1d(zeros(1, 3, 5), zeros(3, 2, 3), groups=2)


@pytest.mark.parametrize("groups", [0, -2, True, 1.0, None])
def test_groups_not_a_positive_int(groups):
    with raises(ValueError, f"conv2d: groups must be a positive int, got {groups!r} "
                            f"(input (2, 3, 8, 8), weight (4, 3, 3, 3))"):
        cyconv.conv2d(X, W, groups=groups)


# -- stride, dilation, padding ------------------------------------------------------------------

@pytest.mark.parametrize("stride, shown", [(0, "(0, 0)"), ((1, -1), "(1, -1)")])
def test_non_positive_stride(stride, shown):
    with raises(ValueError, f"conv2d: stride must be positive, got {shown}"):
        cyconv.conv2d(X, W, stride=stride)


def test_non_positive_stride_transposed():
    with raises(ValueError, "conv_transpose2d: stride must be positive, got (0, 0)"):
        cyconv.conv_transpose2d(X, WT, stride=0)


@pytest.mark.parametrize("dilation, shown", [(0, "(0, 0)"), ((-1, 1), "(-1, 1)")])
def test_non_positive_dilation(dilation, shown):
    with raises(ValueError, f"conv2d: dilation must be positive, got {shown}"):
        cyconv.conv2d(X, W, dilation=dilation)


@pytest.mark.parametrize("padding", [-1, (0, -1), ((0, -1), (0, 0))])
def test_negative_padding(padding):
    with raises(ValueError, f"conv2d: padding must be non-negative, got {padding!r}"):
        cyconv.conv2d(X, W, padding=padding)


def test_negative_padding_transposed():
    with raises(ValueError, "conv_transpose2d: padding must be non-negative, got -1"):
        cyconv.conv_transpose2d(X, WT, padding=-1)


def test_kernel_larger_than_padded_input():
    with raises(ValueError, "conv2d: kernel larger than the padded input in spatial dim 0: "
                            "padded size 2 (= 2 + 0 + 0) < effective kernel 3 (= dilation 1 * "
                            "(kernel 3 - 1) + 1) (input (2, 3, 2, 8), weight (4, 3, 3, 3))"):
        cyconv.conv2d(zeros(2, 3, 2, 8), W)


def test_dilated_kernel_larger_than_padded_input():
    with raises(ValueError, "conv1d: kernel larger than the padded input in spatial dim 0: "
                            "padded size 10 (= 8 + 1 + 1) < effective kernel 11 (= dilation 5 * "
                            "(kernel 3 - 1) + 1) (input (2, 3, 8), weight (4, 3, 3))"):
        cyconv.conv1d(zeros(2, 3, 8), zeros(4, 3, 3), padding=1, dilation=5)


def test_transposed_output_not_positive():
    with raises(ValueError, "conv_transpose2d: output size (0, 0) is not positive for input "
                            "(2, 3, 8, 8), weight (3, 4, 3, 3), stride (1, 1), padding 5, "
                            "dilation (1, 1)"):
        cyconv.conv_transpose2d(X, WT, padding=5)


_OP_FORMULA = ("(output = (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + "
               "output_padding + 1)")


@pytest.mark.parametrize("kw, shown, dim, s, d", [
    (dict(stride=2, output_padding=2), "(2, 2)", 0, 2, 1),
    (dict(stride=1, output_padding=1), "(1, 1)", 0, 1, 1),
    (dict(stride=(2, 1), dilation=(1, 2), output_padding=(1, 2)), "(1, 2)", 1, 1, 2),
    (dict(stride=2, output_padding=-1), "(-1, -1)", 0, 2, 1),
])
def test_output_padding_rule(kw, shown, dim, s, d):
    with raises(ValueError, f"conv_transpose2d: output_padding={shown} must be non-negative and "
                            f"smaller than max(stride, dilation) in every dim; dim {dim} has "
                            f"stride {s}, dilation {d} {_OP_FORMULA}"):
        cyconv.conv_transpose2d(X, WT, **kw)


def test_output_padding_below_dilation_is_accepted_with_stride_1():
    y = cyconv.conv_transpose1d(zeros(1, 3, 5), zeros(3, 2, 3), stride=1, dilation=2,
                                output_padding=1)
    assert y.shape == (1, 2, 5 - 1 + 4 + 1 + 1)


# -- ranks and per-dim tuples -------------------------------------------------------------------

def test_input_rank_too_high_hints_next_op():
    with raises(ValueError, "conv2d expects input of 3-D (C, H, W) or 4-D (N, C, H, W) shape, "
                            "got 5-D (2, 3, 8, 8, 8); use conv3d for 3-D data"):
        cyconv.conv2d(zeros(2, 3, 8, 8, 8), W)


def test_input_rank_too_low():
    with raises(ValueError, "conv2d expects input of 3-D (C, H, W) or 4-D (N, C, H, W) shape, "
                            "got 2-D (8, 8)"):
        cyconv.conv2d(zeros(8, 8), W)


def test_conv1d_given_2d_data():
    with raises(ValueError, "conv1d expects input of 2-D (C, L) or 3-D (N, C, L) shape, "
                            "got 4-D (2, 3, 8, 8); use conv2d for 2-D data"):
        cyconv.conv1d(X, zeros(4, 3, 3))


def test_weight_rank():
    with raises(ValueError, "conv2d: weight must be 4-D (out_channels, in_channels/groups, "
                            "*kernel), got 3-D (4, 3, 3) (input (2, 3, 8, 8))"):
        cyconv.conv2d(X, zeros(4, 3, 3))


@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [(1, 2, 3), (1,), 1.0, "1", [1, None]])
def test_per_dim_tuple_of_wrong_length_or_type(name, value):
    with raises(ValueError, f"conv2d: {name} must be an int or a tuple of 2 ints, got {value!r}"):
        cyconv.conv2d(X, W, **{name: value})


def test_output_padding_tuple_of_wrong_length():
    with raises(ValueError, "conv_transpose2d: output_padding must be an int or a tuple of 2 "
                            "ints, got (1, 1, 1)"):
        cyconv.conv_transpose2d(X, WT, stride=2, output_padding=(1, 1, 1))


@pytest.mark.parametrize("padding", [(1, 1, 1), ((0, 1),), ((0, 1, 2), (0, 1)), 1.5,
                                     (1.0, 1)])
def test_padding_of_wrong_form(padding):
    with raises(ValueError, "conv2d: padding must be an int, a tuple of 2 ints or (before, "
                            f"after) pairs, 'valid' or 'same', got {padding!r}"):
        cyconv.conv2d(X, W, padding=padding)


# -- bias, padding strings, algorithm -----------------------------------------------------------

@pytest.mark.parametrize("shape", [(3,), (4, 1), (1, 4)])
def test_wrong_bias_shape(shape):
    with raises(ValueError, f"conv2d: bias must have shape (4,), got {shape} "
                            "(weight (4, 3, 3, 3))"):
        cyconv.conv2d(X, W, zeros(*shape))


def test_wrong_bias_shape_transposed():
    with raises(ValueError, "conv_transpose2d: bias must have shape (4,), got (3,) "
                            "(weight (3, 4, 3, 3))"):
        cyconv.conv_transpose2d(X, WT, zeros(3))


@pytest.mark.parametrize("padding", ["full", "SAME", ""])
def test_unknown_padding_string(padding):
    with raises(ValueError, f"conv2d: unknown padding {padding!r}; expected an int, a tuple, "
                            "'valid' or 'same'"):
        cyconv.conv2d(X, W, padding=padding)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_padding_string_on_transposed(padding):
    with raises(ValueError, f"conv_transpose2d: padding={padding!r} is not supported by "
                            "transposed convolutions; use an int or a tuple of 2 ints"):
        cyconv.conv_transpose2d(X, WT, padding=padding)


def test_padding_pairs_on_transposed():
    with raises(ValueError, "conv_transpose2d: padding must be an int or a tuple of 2 ints, "
                            "got ((0, 1), (0, 1))"):
        cyconv.conv_transpose2d(X, WT, padding=((0, 1), (0, 1)))


@pytest.mark.parametrize("op, call", [
    ("conv2d", lambda a: cyconv.conv2d(X, W, algorithm=a)),
    ("conv_transpose2d", lambda a: cyconv.conv_transpose2d(X, WT, algorithm=a)),
], ids=["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("algorithm", ["fft", "Winograd", None, "IM2COL"])
def test_unknown_algorithm(op, call, algorithm):
    with raises(ValueError, f"{op}: unknown algorithm {algorithm!r}; expected one of 'auto', "
                            "'im2col', 'direct', 'winograd'"):
        call(algorithm)


def test_unknown_algorithm_in_gradients():
    with raises(ValueError, "conv2d_weight: unknown algorithm 'fft'; expected one of 'auto', "
                            "'im2col', 'direct', 'winograd'"):
        cyconv.grad.conv2d_weight(X, W.shape, zeros(2, 4, 6, 6), algorithm="fft")


_WINO = ("algorithm='winograd' needs groups=1, 3 taps per dim, stride 1 and dilation 1; "
         "got ")


@pytest.mark.parametrize("call, message", [
    (lambda: cyconv.conv2d(zeros(1, 4, 8, 8), zeros(4, 4, 3, 3), stride=2,
                           algorithm="winograd"), "conv2d: " + _WINO + "stride (2, 2)"),
    (lambda: cyconv.conv2d(zeros(1, 4, 8, 8), zeros(4, 2, 3, 3), groups=2,
                           algorithm="winograd"), "conv2d: " + _WINO + "groups=2"),
    (lambda: cyconv.conv2d(zeros(1, 4, 8, 8), zeros(4, 4, 5, 3), dilation=(1, 2),
                           algorithm="winograd"),
     "conv2d: " + _WINO + "kernel (5, 3), dilation (1, 2)"),
    (lambda: cyconv.conv1d(zeros(1, 4, 8), zeros(4, 4, 2), algorithm="winograd"),
     "conv1d: " + _WINO + "kernel (2,)"),
    (lambda: cyconv.conv_transpose2d(zeros(1, 4, 8, 8), zeros(4, 4, 3, 3), stride=2,
                                     algorithm="winograd"),
     "conv_transpose2d: " + _WINO + "stride (2, 2)"),
    (lambda: cyconv.grad.conv2d_input((1, 4, 15, 15), zeros(4, 4, 3, 3),
                                      zeros(1, 4, 7, 7), stride=2, algorithm="winograd"),
     "conv2d_input: " + _WINO + "stride (2, 2)"),
    (lambda: cyconv.grad.conv2d_weight(zeros(1, 4, 8, 8), (4, 4, 1, 1), zeros(1, 4, 8, 8),
                                       algorithm="winograd"),
     "conv2d_weight: " + _WINO + "kernel (1, 1)"),
    (lambda: cyconv.plan("conv3d", (1, 4, 8, 8, 8), (4, 4, 3, 3, 3), dilation=2,
                         algorithm="winograd"), "conv3d: " + _WINO + "dilation (2, 2, 2)"),
], ids=["stride", "groups", "kernel-dilation", "conv1d-k2", "transposed", "input-grad",
        "weight-grad", "plan-3d"])
def test_winograd_constraints(call, message):
    with raises(ValueError, message):
        call()


# -- dtypes and array kinds ---------------------------------------------------------------------

def test_float16_on_cpu():
    with raises(TypeError, "conv2d: input is float16; float16 is supported for CuPy (GPU) arrays "
                           "only; use float32 on the CPU"):
        cyconv.conv2d(X.astype(np.float16), W.astype(np.float16))


def test_float16_on_cpu_in_gradients():
    with raises(TypeError, "conv2d_input: weight is float16; float16 is supported for CuPy (GPU) "
                           "arrays only; use float32 on the CPU"):
        cyconv.grad.conv2d_input(X.shape, W.astype(np.float16), zeros(2, 4, 6, 6, dtype=np.float16))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.complex64, np.bool_,
                                   np.longdouble, object])
def test_unsupported_dtype(dtype):
    name = np.dtype(dtype).name
    with raises(TypeError, f"conv2d: input has unsupported dtype {name}; expected one of "
                           "float32, float64"):
        cyconv.conv2d(X.astype(dtype), W)


def test_unsupported_weight_dtype():
    with raises(TypeError, "conv_transpose2d: weight has unsupported dtype int64; expected one "
                           "of float32, float64"):
        cyconv.conv_transpose2d(X, WT.astype(np.int64))


def test_input_weight_dtype_mismatch():
    with raises(TypeError, "conv2d: input is float64 but weight is float32; convert with "
                           "weight.astype(np.float64)"):
        cyconv.conv2d(X.astype(np.float64), W)


def test_bias_dtype_mismatch():
    with raises(TypeError, "conv2d: input is float32 but bias is float64; convert with "
                           "bias.astype(np.float32)"):
        cyconv.conv2d(X, W, np.zeros(4))


def test_grad_output_dtype_mismatch():
    with raises(TypeError, "conv2d_input: weight is float32 but grad_output is float64; convert "
                           "with grad_output.astype(np.float32)"):
        cyconv.grad.conv2d_input(X.shape, W, np.zeros((2, 4, 6, 6)))


@pytest.mark.parametrize("args, name, kind", [
    ((X.tolist(), W), "input", "list"),
    ((X, W.tolist()), "weight", "list"),
    ((X, W, [0.0] * 4), "bias", "list"),
    ((X, W, 0.0), "bias", "float"),
    ((np.float32(1), W), "input", "float32"),
    ((X, memoryview(W)), "weight", "memoryview"),
    ((None, W), "input", "NoneType"),
    ((X, None), "weight", "NoneType"),
])
def test_numpy_mixed_with_non_arrays(args, name, kind):
    with raises(TypeError, f"conv2d: {name} must be a NumPy or CuPy array, got {kind}"):
        cyconv.conv2d(*args)
    with raises(TypeError, f"conv2d: {name} must be a NumPy or CuPy array, got {kind}"):
        cyconv.conv2d(*args)          # the same again: errors are never cached away


@pytest.mark.parametrize("call, name", [
    (lambda: cyconv.conv_transpose2d(None, W), "input"),
    (lambda: cyconv.grad.conv2d_input(X.shape, None, zeros(2, 4, 6, 6)), "weight"),
    (lambda: cyconv.grad.conv2d_weight(None, W.shape, zeros(2, 4, 6, 6)), "input"),
    (lambda: cyconv.grad.conv2d_weight(X, W.shape, None), "grad_output"),
    (lambda: cyconv.max_pool2d(None, 2), "input"),
    (lambda: cyconv.relu([1.0]), "input"),
    (lambda: cyconv.linear(X, None), "weight"),
    (lambda: cyconv.pad(None, (1, 1)), "input"),
])
def test_non_arrays_name_the_argument(call, name):
    with pytest.raises(TypeError, match=f": {name} must be a NumPy or CuPy array, got "):
        call()


def test_torch_tensor_is_rejected():
    torch = pytest.importorskip("torch")
    with raises(TypeError, "conv2d: input must be a NumPy or CuPy array, got Tensor"):
        cyconv.conv2d(torch.zeros(2, 3, 8, 8), W)


def test_numpy_mixed_with_cupy(xp):
    if xp is np:
        pytest.skip("needs CuPy and a GPU")
    with raises(TypeError, "conv2d: arrays mix NumPy (CPU) and CuPy (GPU); move them to one "
                           "device first (cupy.asarray / cupy.asnumpy)"):
        cyconv.conv2d(xp.asarray(X), W)


# -- gradient functions -------------------------------------------------------------------------

def test_grad_output_shape_mismatch_input_grad():
    with raises(ValueError, "conv2d_input: grad_output has shape (2, 4, 5, 5), expected "
                            "(2, 4, 6, 6) for input (2, 3, 8, 8) and weight (4, 3, 3, 3)"):
        cyconv.grad.conv2d_input(X.shape, W, zeros(2, 4, 5, 5))


def test_grad_output_shape_mismatch_weight_grad():
    with raises(ValueError, "conv2d_weight: grad_output has shape (2, 4, 6), expected "
                            "(2, 4, 6, 6) for input (2, 3, 8, 8) and weight (4, 3, 3, 3)"):
        cyconv.grad.conv2d_weight(X, W.shape, zeros(2, 4, 6))


def test_grad_output_shape_mismatch_unbatched():
    with raises(ValueError, "conv1d_input: grad_output has shape (1, 4, 6), expected (4, 6) "
                            "for input (3, 8) and weight (4, 3, 3)"):
        cyconv.grad.conv1d_input((3, 8), zeros(4, 3, 3), zeros(1, 4, 6))


def test_grad_output_shape_mismatch_transposed():
    with raises(ValueError, "conv_transpose2d_input: grad_output has shape (2, 4, 9, 9), "
                            "expected (2, 4, 10, 10) for input (2, 3, 8, 8) and weight "
                            "(3, 4, 3, 3)"):
        cyconv.grad.conv_transpose2d_input(X.shape, WT, zeros(2, 4, 9, 9))
    with raises(ValueError, "conv_transpose2d_weight: grad_output has shape (2, 4, 9, 9), "
                            "expected (2, 4, 10, 10) for input (2, 3, 8, 8) and weight "
                            "(3, 4, 3, 3)"):
        cyconv.grad.conv_transpose2d_weight(X, WT.shape, zeros(2, 4, 9, 9))


@pytest.mark.parametrize("size", [5, None, (2, 3, 8.0, 8), "2388", (2, 3, True, 8),
                                  np.array([2, 3, 8, 8])])
def test_bad_input_size(size):
    with raises(ValueError, f"conv2d_input: input_size must be a tuple of ints, got {size!r}"):
        cyconv.grad.conv2d_input(size, W, zeros(2, 4, 6, 6))


def test_input_size_of_wrong_rank():
    with raises(ValueError, "conv2d_input expects input of 3-D (C, H, W) or 4-D (N, C, H, W) "
                            "shape, got 2-D (8, 8)"):
        cyconv.grad.conv2d_input((8, 8), W, zeros(4, 6, 6))


def test_input_size_with_wrong_channels():
    with raises(ValueError, "conv2d_input: input (2, 5, 8, 8) has 5 channels, weight "
                            "(4, 3, 3, 3) with groups=1 expects 3"):
        cyconv.grad.conv2d_input((2, 5, 8, 8), W, zeros(2, 4, 6, 6))


@pytest.mark.parametrize("size", [4, (4, 3, 3.0, 3), "4333", None])
def test_bad_weight_size(size):
    with raises(ValueError, f"conv2d_weight: weight_size must be a tuple of ints, got {size!r}"):
        cyconv.grad.conv2d_weight(X, size, zeros(2, 4, 6, 6))


def test_weight_size_of_wrong_rank():
    with raises(ValueError, "conv2d_weight: weight must be 4-D (out_channels, "
                            "in_channels/groups, *kernel), got 3-D (4, 3, 3) (input "
                            "(2, 3, 8, 8))"):
        cyconv.grad.conv2d_weight(X, (4, 3, 3), zeros(2, 4, 6, 6))


def test_weight_size_with_wrong_channels():
    with raises(ValueError, "conv2d_weight: input (2, 3, 8, 8) has 3 channels, weight "
                            "(4, 2, 3, 3) with groups=1 expects 2"):
        cyconv.grad.conv2d_weight(X, (4, 2, 3, 3), zeros(2, 4, 6, 6))


def test_weight_size_with_empty_dimension():
    with raises(ValueError, "conv2d_weight: weight (0, 3, 3, 3) has an empty dimension "
                            "(input (2, 3, 8, 8))"):
        cyconv.grad.conv2d_weight(X, (0, 3, 3, 3), zeros(2, 0, 6, 6))


def test_gradient_with_non_array_grad_output():
    with raises(TypeError, "conv2d_input: grad_output must be a NumPy or CuPy array, got list"):
        cyconv.grad.conv2d_input(X.shape, W, zeros(2, 4, 6, 6).tolist())


@pytest.mark.parametrize("axis", [4, -5, 1.0, None, True])
def test_bias_grad_channel_axis(axis):
    with raises(ValueError, f"bias: channel_axis={axis!r} is out of range for grad_output of "
                            "shape (2, 4, 6, 6)"):
        cyconv.grad.bias(zeros(2, 4, 6, 6), channel_axis=axis)


# -- empty dimensions ---------------------------------------------------------------------------

def test_empty_weight_dimension():
    with raises(ValueError, "conv2d: weight (0, 3, 3, 3) has an empty dimension "
                            "(input (2, 3, 8, 8))"):
        cyconv.conv2d(X, zeros(0, 3, 3, 3))


def test_empty_spatial_input():
    with raises(ValueError, "conv2d: input (2, 3, 0, 8) has an empty spatial dimension"):
        cyconv.conv2d(zeros(2, 3, 0, 8), W)


# -- fuzz: garbage in, ValueError/TypeError/MemoryError out ------------------------------------

GARBAGE = [0, -1, 1, 2, 3, 7, 2**31, 2**40, -2**40, 2**63, 2**64, True, False, 1.5, float("nan"),
           np.int64(2), np.int32(-1), np.uint8(3), np.int64(2**40), None, "same", "valid", "x",
           (), (1,), (1, 2), (1, 2, 3), (0, 1), (2**40, 1), ((0, 1), (1, 0)),
           ((0, 2**40), (0, 0)), ((-1, 0), (0, 0)), [1, 2], [], (np.int64(1), 2), (1.0, 1),
           (True, 1), object()]

#: (op, nd, argument names) -- the keyword arguments each op takes
_OPS = [(f"conv{nd}d", nd, ("stride", "padding", "dilation", "groups")) for nd in (1, 2, 3)] + [
    (f"conv_transpose{nd}d", nd, ("stride", "padding", "output_padding", "groups", "dilation"))
    for nd in (1, 2, 3)]
_ALLOWED = (ValueError, TypeError, MemoryError)


def _shapes(rng, nd, transposed):
    """Garbage-ish but mostly small shapes; huge ones are zero-stride views (no memory)."""
    kind = rng.integers(6)
    C = int(rng.choice([1, 2, 3, 4, 2**31, 2**33]))
    N = int(rng.choice([0, 1, 2]))
    spatial = tuple(int(rng.choice([1, 2, 3, 5, 8])) for _ in range(nd))
    k = tuple(int(rng.choice([1, 2, 3, 9])) for _ in range(nd))
    if kind == 0:     # wrong rank
        x_shape = (N, C) + spatial + (2,) * int(rng.integers(1, 3))
    elif kind == 1:   # unbatched
        x_shape = (C,) + spatial
    else:
        x_shape = (N, C) + spatial
    w_shape = (int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, C]))) + k
    if kind == 2:
        w_shape = w_shape[:-1]
    return x_shape, w_shape


def _array(shape, dtype=np.float32):
    return np.broadcast_to(np.ones((), dtype), shape)


def _fuzz_calls(seed=0, n_random=400):
    """(description, callable) pairs; each callable makes one cyconv call."""
    rng = np.random.default_rng(seed)
    calls = []
    for op, nd, names in _OPS:
        fn = getattr(cyconv, op)
        x, w = _array((2, 4) + (5,) * nd), _array((4, 2) + (3,) * nd)
        for name in names:
            for value in GARBAGE:
                calls.append((f"{op}({name}={value!r})",
                              lambda fn=fn, x=x, w=w, name=name, value=value:
                              fn(x, w, **{name: value})))
    for i in range(n_random):
        op, nd, names = _OPS[rng.integers(len(_OPS))]
        x_shape, w_shape = _shapes(rng, nd, op.startswith("conv_t"))
        kwargs = {}
        for name in names:
            if rng.integers(3):
                kwargs[name] = GARBAGE[rng.integers(len(GARBAGE))]
        dtype = [np.float32, np.float64, np.float16, np.int32][rng.integers(4)]
        calls.append((f"{op} x{x_shape} w{w_shape} {np.dtype(dtype).name} {kwargs!r}",
                      lambda fn=getattr(cyconv, op), xs=x_shape, ws=w_shape, kw=kwargs, dt=dtype:
                      fn(_array(xs, dt), _array(ws, dt), **kw)))
    # gradient functions: garbage sizes and arguments
    for nd in (1, 2, 3):
        x, w = _array((2, 4) + (5,) * nd), _array((4, 2) + (3,) * nd)
        gy = _array((2, 4) + (3,) * nd)
        gi = getattr(cyconv.grad, f"conv{nd}d_input")
        gw = getattr(cyconv.grad, f"conv{nd}d_weight")
        for value in GARBAGE:
            size = (2, 4) + ((value,) + (5,) * (nd - 1) if not isinstance(value, tuple)
                             else tuple(value))
            calls.append((f"conv{nd}d_input(input_size={size!r})",
                          lambda gi=gi, size=size, w=w, gy=gy: gi(size, w, gy, groups=2)))
            calls.append((f"conv{nd}d_weight(weight_size=(4, {value!r}, ...))",
                          lambda gw=gw, value=value, x=x, gy=gy, nd=nd:
                          gw(x, (4, value) + (3,) * nd, gy, groups=2)))
            calls.append((f"conv{nd}d_input(stride={value!r})",
                          lambda gi=gi, value=value, x=x, w=w, gy=gy:
                          gi(x.shape, w, gy, stride=value, groups=2)))
    return calls


def _fuzz_main():
    """Child-process entry point: run every fuzz call, print the unexpected outcomes."""
    cyconv.set_num_threads(2)
    bad = []
    for what, call in _fuzz_calls():
        try:
            out = call()
        except _ALLOWED:
            continue
        except Exception as exc:  # noqa: BLE001 - this is what the test looks for
            bad.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(out, np.ndarray):
            bad.append(f"{what}: returned {type(out).__name__}")
    print(json.dumps(bad))


def test_fuzz_garbage_arguments_never_crash():
    """Only ValueError/TypeError/MemoryError, no crash, no hang (run in a child process)."""
    proc = run_python([os.path.abspath(__file__), "--fuzz"], timeout=240)
    assert proc.returncode == 0, (
        f"the fuzz run crashed with return code {proc.returncode}:\n{proc.stderr[-4000:]}")
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad, f"{len(bad)} calls raised something else:\n" + "\n".join(bad[:30])


_HUGE_GEOMETRY = r"""
import sys
import numpy as np, cyconv, reference
e, algorithm = int(sys.argv[1]), sys.argv[2]
big = 2**e
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (2, 3, 6, 7))
w = rng.uniform(-1, 1, (4, 3, 3, 3))
gy = rng.uniform(-1, 1, (2, 4, 6, 7))
# padding = dilation = big: taps 0 and 2 land `big` pixels away, in the padding, so only
# the centre tap reads x and the op is a 1x1 convolution with w[:, :, 1, 1]
centre = w[:, :, 1:2, 1:2]
y = cyconv.conv2d(x, w, padding=big, dilation=big, algorithm=algorithm)
assert np.allclose(y, reference.conv(x, centre), rtol=1e-12, atol=1e-12), "forward"
gx = cyconv.grad.conv2d_input(x.shape, w, gy, padding=big, dilation=big, algorithm=algorithm)
assert np.allclose(gx, reference.conv_input_grad(x.shape, centre, gy), rtol=1e-12,
                   atol=1e-12), "input gradient"
gw = cyconv.grad.conv2d_weight(x, w.shape, gy, padding=big, dilation=big, algorithm=algorithm)
expected = np.zeros(w.shape)
expected[:, :, 1:2, 1:2] = reference.conv_weight_grad(x, centre.shape, gy)
assert np.allclose(gw, expected, rtol=1e-12, atol=1e-12), "weight gradient"
# stride = padding = big along H: three output rows, only the middle one reads x
y = cyconv.conv2d(x, w, stride=(big, 1), padding=(big, 1), algorithm=algorithm)
assert y.shape == (2, 4, 3, 7), y.shape
assert not y[:, :, 0].any() and not y[:, :, 2].any(), "rows in the padding"
middle = reference.conv(x[:, :, :3], w, None, 1, ((0, 0), (1, 1)))[:, :, 0]
assert np.allclose(y[:, :, 1], middle, rtol=1e-12, atol=1e-12), "middle row"
print("ok")
"""


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("exponent", [8, 20, 31, 40])
def test_huge_padding_dilation_and_stride_are_computed(exponent, algorithm):
    """Valid ops whose taps reach 2**k pixels into the padding have small outputs and must
    be computed exactly (offsets in 64 bits, no workspace sized by the padded input), in
    a child process so a crash or hang fails only this test."""
    proc = run_python(["-c", _HUGE_GEOMETRY, str(exponent), algorithm], timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"padding/dilation/stride 2**{exponent}, {algorithm}: return code {proc.returncode}\n"
        + "\n".join(line for line in proc.stderr.splitlines()
                     if not line.startswith("Extension modules"))[-3000:])


if __name__ == "__main__" and "--fuzz" in sys.argv:
    _fuzz_main()
