"""The 'auto' algorithm choice (``cyconv/_plan.py``): a pure function of the shapes,
the dtype's size, the thread count and the device, never of the data or of earlier calls.
The timing evidence behind each rule is in its docstring and in benchmarks/results/."""
from __future__ import annotations

import pytest

from cyconv import _ext, _params
from cyconv._plan import DIRECTIONS, select_algorithm

avx2 = pytest.mark.skipif(_ext.ISA != "avx2", reason="the rule is for the AVX2 kernels")


def _p(x_shape, w_shape, **kw):
    nd = len(x_shape) - 2
    return _params.conv_params(f"conv{nd}d", nd, x_shape, w_shape, **kw)


def test_choice_is_a_function_of_the_shapes():
    p = _p((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    for direction in DIRECTIONS:
        picks = {select_algorithm(_p((8, 64, 56, 56), (64, 64, 3, 3), padding=1), direction,
                                  4, 2) for _ in range(3)}
        assert len(picks) == 1
        assert select_algorithm(p, direction, 4, 2) in picks


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_depthwise_and_thin_groups_go_direct(direction):
    assert select_algorithm(_p((8, 256, 28, 28), (256, 1, 3, 3), padding=1, groups=256),
                            direction, 4, 2) == "direct"
    assert select_algorithm(_p((8, 128, 28, 28), (128, 4, 3, 3), padding=1, groups=32),
                            direction, 4, 2) == "direct"


@avx2
@pytest.mark.parametrize("x_shape, w_shape, expected", [
    ((2, 16, 16, 32, 32), (16, 16, 3, 3, 3), "direct"),     # 16 output channels
    ((8, 16, 112, 112), (16, 16, 3, 3), "direct"),
    ((2, 32, 16, 32, 32), (32, 32, 3, 3, 3), "direct"),     # 32 channels, 27 taps
    ((8, 32, 56, 56), (32, 32, 3, 3), "im2col"),            # 32 channels, 9 taps
    ((8, 64, 56, 56), (64, 64, 3, 3), "im2col"),
    ((2, 64, 8, 28, 28), (64, 64, 3, 3, 3), "im2col"),
])
def test_dense_weight_gradient_goes_direct_only_for_thin_gemms(x_shape, w_shape, expected):
    p = _p(x_shape, w_shape, padding=1)
    assert select_algorithm(p, "backward_weight", 4, 2) == expected


@avx2
@pytest.mark.parametrize("direction", ("forward", "backward_input"))
@pytest.mark.parametrize("x_shape, w_shape, expected", [
    ((8, 256, 28, 28), (256, 256, 3, 3), "direct"),         # k = 2304
    ((8, 256, 7, 7), (256, 256, 3, 3), "direct"),
    ((8, 384, 14, 14), (384, 384, 3, 3), "direct"),         # k = 3456
    ((8, 64, 7, 7), (64, 64, 3, 3), "direct"),
    ((8, 512, 7, 7), (512, 512, 3, 3), "im2col"),           # k = 4608
    ((8, 512, 28, 28), (512, 512, 3, 3), "im2col"),
    ((8, 256, 28, 28), (128, 256, 1, 1), "im2col"),         # 1 tap
])
def test_long_channel_reductions_stay_on_im2col(x_shape, w_shape, expected, direction):
    """The blocked kernel's rule (most of these 3x3 layers go to Winograd first)."""
    p = _p(x_shape, w_shape, padding=w_shape[-1] // 2)
    assert select_algorithm(p, direction, 4, 2, winograd=False) == expected


@avx2
@pytest.mark.parametrize("x_shape, w_shape, stride, expected", [
    ((8, 128, 28, 28), (256, 128, 3, 3), 2, "direct"),      # ResNet downsampling
    ((16, 128, 16, 16), (256, 128, 4, 4), 2, "direct"),     # DCGAN's input gradient
    ((8, 512, 14, 14), (512, 512, 3, 3), 2, "im2col"),      # k = 4608
    ((8, 256, 28, 28), (256, 256, 1, 1), 2, "im2col"),      # 1 tap
    ((8, 96, 56, 56), (192, 96, 2, 2), 2, "im2col"),        # windows do not overlap
    ((8, 64, 56, 56), (64, 64, 4, 4), 4, "im2col"),
])
def test_strided_forward(x_shape, w_shape, stride, expected):
    p = _p(x_shape, w_shape, stride=stride, padding=1 if w_shape[-1] > 1 else 0)
    assert select_algorithm(p, "forward", 4, 2) == expected
    # the strided input gradient has no blocked kernel
    assert select_algorithm(p, "backward_input", 4, 2) == "im2col"
