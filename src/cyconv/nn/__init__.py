"""Layers with PyTorch's names, parameters and ``state_dict`` keys, and an explicit
backward pass (``cyconv.nn``).

``y = layer(x)`` computes through cyconv's functional ops; ``layer.backward(gy)``
returns the input gradient of the latest call and accumulates each parameter's
gradient into ``param.grad``.  A PyTorch model's ``state_dict`` converted with
``.numpy()`` loads unchanged into the same architecture built from these layers.
"""
from .activation import (GELU, Dropout, Identity, LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid,
                         Softmax, Tanh)
from .container import Sequential
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d,
                      AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d, AvgPool1d,
                      AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d)
from .residual import Residual, fuse_conv_bn
from .separable import DepthwiseSeparableConv2d, SpatialSeparableConv2d
from .upsampling import Upsample

__all__ = ["Parameter", "Module", "Sequential",
           "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d", "DepthwiseSeparableConv2d", "SpatialSeparableConv2d",
           "ReLU", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
           "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
           "Flatten", "Linear", "CrossEntropyLoss", "MSELoss",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Dropout", "LeakyReLU", "Sigmoid",
           "Tanh", "GELU", "SiLU", "Softmax", "LogSoftmax", "Identity", "Upsample",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "Residual",
           "fuse_conv_bn"]
