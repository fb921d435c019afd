"""Argument normalisation: the 'same' padding table and ``ConvParams`` fields.

'same' follows TensorFlow's closed form (``GetWindowedOutputSizeVerbose``) for every
stride: output ceil(in / stride), total padding
max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - in), the odd unit after.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import cyconv
from cyconv._params import conv_params

IN_SIZES = list(range(1, 41)) + [224]


def tf_same(in_size, k, s, d):
    """TensorFlow's SAME padding and output size, written from its definition."""
    out = math.ceil(in_size / s)
    effective = d * (k - 1) + 1
    needed = max(0, (out - 1) * s + effective - in_size)
    return (needed // 2, needed - needed // 2), out


def test_same_padding_table_matches_tensorflow():
    mismatches = []
    for n in IN_SIZES:
        for k in range(1, 9):
            for s in range(1, 5):
                for d in range(1, 4):
                    pair, out = tf_same(n, k, s, d)
                    p = conv_params("conv1d", 1, (1, 1, n), (1, 1, k), stride=s,
                                    padding="same", dilation=d)
                    if p.padding != (pair,) or p.out_size != (out,):
                        mismatches.append(((n, k, s, d), p.padding, p.out_size, pair, out))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


def test_same_padding_224_k7_s2():
    p = conv_params("conv2d", 2, (1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding="same")
    assert p.padding == ((2, 3), (2, 3))
    assert p.out_size == (112, 112)


def test_same_padding_per_dim_with_mixed_stride_and_dilation():
    p = conv_params("conv3d", 3, (2, 4, 9, 10, 11), (8, 4, 3, 4, 2), stride=(1, 2, 3),
                    padding="same", dilation=(2, 1, 3))
    expected = [tf_same(n, k, s, d) for n, k, s, d in
                zip((9, 10, 11), (3, 4, 2), (1, 2, 3), (2, 1, 3))]
    assert p.padding == tuple(pair for pair, _ in expected)
    assert p.out_size == tuple(out for _, out in expected)


@pytest.mark.parametrize("n, k, s, d", [(224, 7, 2, 1), (7, 4, 3, 2), (1, 8, 4, 3),
                                        (40, 5, 4, 2), (13, 2, 1, 1)])
def test_same_padding_is_what_the_op_computes(n, k, s, d):
    """The op's output shape and values agree with np.pad + 'valid' at TF's pairs."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 2, n)).astype(np.float64)
    w = rng.uniform(-1, 1, (3, 2, k)).astype(np.float64)
    (pb, pa), out = tf_same(n, k, s, d)
    y = cyconv.conv1d(x, w, stride=s, padding="same", dilation=d)
    assert y.shape == (1, 3, out)
    explicit = cyconv.conv1d(np.pad(x, ((0, 0), (0, 0), (pb, pa))), w, stride=s, dilation=d)
    np.testing.assert_allclose(y, explicit, rtol=1e-13, atol=1e-13)


def test_conv_params_fields_conv2d():
    p = conv_params("conv2d", 2, (4, 8, 32, 30), (6, 4, 3, 5), stride=(2, 1), padding="same",
                    dilation=(1, 2), groups=2, b_shape=(6,))
    assert (p.op, p.nd, p.transposed, p.batched) == ("conv2d", 2, False, True)
    assert (p.N, p.C_in, p.C_out, p.G) == (4, 8, 6, 2)
    assert p.in_size == (32, 30) and p.kernel_size == (3, 5)
    assert p.stride == (2, 1) and p.dilation == (1, 2)
    # H: out 16, needed (16-1)*2 + 3 - 32 = 1 -> (0, 1); W: out 30, needed 8 -> (4, 4)
    assert p.padding == ((0, 1), (4, 4))
    assert p.out_size == (16, 30)
    assert p.output_padding == (0, 0)
    assert p.x_shape == (4, 8, 32, 30)
    assert p.y_shape == (4, 6, 16, 30)
    assert p.w_shape == (6, 4, 3, 5)
    assert (p.img_channels, p.col_channels) == (8, 6)
    assert (p.img_size, p.col_size) == ((32, 30), (16, 30))
    assert p.gemm_k == 4 * 3 * 5
    assert p.pixels == 16 * 30
    assert p.flops == 2 * 4 * 6 * 16 * 30 * 60
    assert p.geometry() == (2, 8, 6, 1, 32, 30, 1, 16, 30, 1, 3, 5, 1, 2, 1, 0, 0, 4, 1, 1, 2)


def test_conv_params_fields_unbatched_conv1d_pairs():
    p = conv_params("conv1d", 1, (3, 10), [5, 3, 4], padding=[(0, 2)], stride=np.int64(3))
    assert p.batched is False and p.N == 1
    assert p.padding == ((0, 2),)
    assert p.stride == (3,) and type(p.stride[0]) is int
    assert p.out_size == ((10 + 2 - 4) // 3 + 1,)
    assert p.x_shape == (3, 10) and p.y_shape == (5, 3)


def test_conv_params_fields_valid_and_int_forms():
    a = conv_params("conv2d", 2, (1, 2, 9, 9), (2, 2, 3, 3), padding="valid")
    b = conv_params("conv2d", 2, (1, 2, 9, 9), (2, 2, 3, 3), padding=0)
    c = conv_params("conv2d", 2, (1, 2, 9, 9), (2, 2, 3, 3), padding=(0, 0))
    d = conv_params("conv2d", 2, (1, 2, 9, 9), (2, 2, 3, 3), padding=((0, 0), (0, 0)))
    assert a == b == c == d
    e = conv_params("conv2d", 2, (1, 2, 9, 9), (2, 2, 3, 3), padding=(1, 2))
    assert e.padding == ((1, 1), (2, 2)) and e.out_size == (9, 11)


def test_conv_params_fields_conv_transpose3d():
    p = conv_params("conv_transpose3d", 3, (2, 6, 3, 4, 5), (6, 2, 3, 3, 2), stride=(2, 1, 3),
                    padding=(1, 0, 1), output_padding=(1, 0, 2), dilation=(1, 2, 1),
                    groups=3, transposed=True)
    assert p.transposed and p.batched
    assert (p.N, p.C_in, p.C_out, p.G) == (2, 6, 6, 3)
    # out = (in - 1) * s - 2p + d * (k - 1) + op + 1
    assert p.out_size == ((3 - 1) * 2 - 2 + 2 + 1 + 1, (4 - 1) * 1 - 0 + 4 + 0 + 1,
                          (5 - 1) * 3 - 2 + 1 + 2 + 1)
    assert p.output_padding == (1, 0, 2)
    assert p.padding == ((1, 1), (0, 0), (1, 1))
    assert p.w_shape == (6, 2, 3, 3, 2)
    # conv view: the image side is the transposed op's output
    assert (p.img_channels, p.col_channels) == (6, 6)
    assert p.img_size == p.out_size and p.col_size == (3, 4, 5)
    assert p.gemm_k == 2 * 3 * 3 * 2
    assert p.geometry()[:3] == (3, 6, 6)


def test_conv_transpose_output_size_checked_against_given_size():
    p = conv_params("conv_transpose1d", 1, (1, 2, 5), (2, 3, 3), stride=2, padding=1,
                    output_padding=1, transposed=True, out_size=(10,))
    assert p.out_size == (10,)
    with pytest.raises(ValueError, match=r"output size \(11,\) does not match"):
        conv_params("conv_transpose1d", 1, (1, 2, 5), (2, 3, 3), stride=2, padding=1,
                    output_padding=1, transposed=True, out_size=(11,))


def test_params_are_frozen_and_hashable():
    p = conv_params("conv1d", 1, (1, 1, 5), (1, 1, 3))
    with pytest.raises(Exception):
        p.N = 3
    assert hash(p) == hash(conv_params("conv1d", 1, (1, 1, 5), (1, 1, 3)))
