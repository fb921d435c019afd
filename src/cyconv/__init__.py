"""cyconv: fast, correct convolutions (forward and backward) on NumPy and CuPy arrays.

Importing cyconv never imports CuPy; CuPy arrays are handled when they arrive.
"""
from . import grad
from ._dispatch import plan
from ._info import info
from ._plan import Plan
from ._runtime import (get_num_threads, get_workspace_limit, set_num_threads,
                       set_workspace_limit)
from .functional import (conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d,
                         conv_transpose3d)

__version__ = "0.1.0"
from . import nn, optim  # noqa: E402  (layers and optimizers: cyconv.nn, cyconv.optim)
from ._random import manual_seed  # noqa: E402
from .functional import (adaptive_avg_pool1d, adaptive_avg_pool2d,  # noqa: E402
                         adaptive_avg_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, linear,
                         max_pool1d, max_pool2d, max_pool3d, pad, relu)
from .functional import (adaptive_max_pool1d, adaptive_max_pool2d,  # noqa: E402
                         adaptive_max_pool3d, batch_norm, dropout, gelu, interpolate,
                         leaky_relu, log_softmax, sigmoid, silu, softmax, tanh)
