"""Argument normalisation and checking: the only place user arguments are read.

Every public op turns its arguments into a frozen parameter object here, once, and the
rest of the package trusts it.  Errors are ``ValueError``/``TypeError`` whose messages
name the op, the argument and the shapes involved (see ``shared/API.md``).

The convolution geometry is described in *conv view*: the image side (the input of a
convolution, the output of a transposed convolution) and the column side (the output of
a convolution, the input of a transposed convolution).  Kernels only ever see the conv
view, so a transposed convolution is literally the input gradient of a convolution.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

INT32_MAX = 2**31 - 1
_ALGORITHMS = ("auto", "im2col", "direct")
_DIM_NAMES = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_UNBATCHED_NAMES = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def _shape(s):
    return tuple(int(v) for v in s)


def is_int(v) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def int_tuple(op: str, name: str, value, nd: int) -> tuple:
    """Normalise an int-or-tuple argument to a tuple of ``nd`` Python ints."""
    if is_int(value):
        return (int(value),) * nd
    if isinstance(value, (tuple, list)) and len(value) == nd and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(
        f"{op}: {name} must be an int or a tuple of {nd} ints, got {value!r}")


def check_algorithm(op: str, algorithm) -> str:
    if algorithm not in _ALGORITHMS:
        raise ValueError(
            f"{op}: unknown algorithm {algorithm!r}; expected one of {', '.join(map(repr, _ALGORITHMS))}")
    return algorithm


def same_padding(in_size: int, k: int, s: int, d: int) -> tuple:
    """TensorFlow's "same" rule: output ceil(in / s), the odd unit of padding after.

    total = max(0, (ceil(in / s) - 1) * s + d * (k - 1) + 1 - in)
    """
    total = max(0, (-(-in_size // s) - 1) * s + d * (k - 1) + 1 - in_size)
    return (total // 2, total - total // 2)


def _padding_pairs(op, padding, nd, in_size, kernel_size, stride, dilation, transposed):
    """Every accepted padding form -> a tuple of ``nd`` (before, after) pairs."""
    if isinstance(padding, str):
        if transposed:
            raise ValueError(
                f"{op}: padding={padding!r} is not supported by transposed convolutions; "
                f"use an int or a tuple of {nd} ints")
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return tuple(same_padding(i, k, s, d)
                         for i, k, s, d in zip(in_size, kernel_size, stride, dilation))
        raise ValueError(
            f"{op}: unknown padding {padding!r}; expected an int, a tuple, 'valid' or 'same'")
    if is_int(padding):
        pairs = ((int(padding), int(padding)),) * nd
    elif isinstance(padding, (tuple, list)) and len(padding) == nd:
        pairs = []
        for p in padding:
            if is_int(p):
                pairs.append((int(p), int(p)))
            elif (not transposed and isinstance(p, (tuple, list)) and len(p) == 2
                  and all(is_int(v) for v in p)):
                pairs.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            pairs = tuple(pairs)
        if not isinstance(pairs, tuple):
            pairs = None
    else:
        pairs = None
    if pairs is None:
        forms = (f"an int or a tuple of {nd} ints" if transposed else
                 f"an int, a tuple of {nd} ints or (before, after) pairs, 'valid' or 'same'")
        raise ValueError(f"{op}: padding must be {forms}, got {padding!r}")
    for pb, pa in pairs:
        if pb < 0 or pa < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return pairs


@dataclass(frozen=True)
class ConvParams:
    """A checked convolution or transposed convolution.

    ``in_size``/``out_size`` are the spatial sizes of the op's input and output;
    ``padding`` is always a tuple of (before, after) pairs.
    """
    op: str
    nd: int
    transposed: bool
    batched: bool
    N: int
    C_in: int
    C_out: int
    G: int
    in_size: tuple
    out_size: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple

    @property
    def x_shape(self) -> tuple:
        return ((self.N,) if self.batched else ()) + (self.C_in,) + self.in_size

    @property
    def y_shape(self) -> tuple:
        return ((self.N,) if self.batched else ()) + (self.C_out,) + self.out_size

    @property
    def w_shape(self) -> tuple:
        if self.transposed:
            return (self.C_in, self.C_out // self.G) + self.kernel_size
        return (self.C_out, self.C_in // self.G) + self.kernel_size

    # -- conv view --------------------------------------------------------------
    @property
    def img_channels(self) -> int:
        return self.C_out if self.transposed else self.C_in

    @property
    def col_channels(self) -> int:
        return self.C_in if self.transposed else self.C_out

    @property
    def img_size(self) -> tuple:
        return self.out_size if self.transposed else self.in_size

    @property
    def col_size(self) -> tuple:
        return self.in_size if self.transposed else self.out_size

    @property
    def gemm_k(self) -> int:
        """Rows of one group's column matrix: C_img/G * prod(kernel)."""
        return self.img_channels // self.G * math.prod(self.kernel_size)

    @property
    def pixels(self) -> int:
        """Columns of one sample's column matrix: prod(col_size)."""
        return math.prod(self.col_size)

    @property
    def flops(self) -> int:
        """Multiply-adds times two of the whole op (forward or either gradient)."""
        return 2 * self.N * self.col_channels * self.pixels * self.gemm_k

    def geometry(self) -> tuple:
        """The conv view padded to 3 spatial dims, as the kernels read it.

        (G, C_img, C_col, D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW,
        DD, DH, DW) where P* is the *before* padding.
        """
        lead = 3 - self.nd
        img = (1,) * lead + self.img_size
        col = (1,) * lead + self.col_size
        k = (1,) * lead + self.kernel_size
        s = (1,) * lead + self.stride
        p = (0,) * lead + tuple(pb for pb, _ in self.padding)
        d = (1,) * lead + self.dilation
        return (self.G, self.img_channels, self.col_channels) + img + col + k + s + p + d


def _rank_error(op, nd, what, shape):
    hint = ""
    if len(shape) == nd + 3 and nd < 3:
        hint = f"; use conv{nd + 1}d for {nd + 1}-D data"
    elif len(shape) == nd + 1 and nd > 1:
        hint = f"; use conv{nd - 1}d for {nd - 1}-D data"
    return ValueError(
        f"{op} expects {what} of {nd + 1}-D {_UNBATCHED_NAMES[nd]} or {nd + 2}-D "
        f"{_DIM_NAMES[nd]} shape, got {len(shape)}-D {shape}{hint}")


def conv_params(op: str, nd: int, x_shape, w_shape, *, stride=1, padding=0, dilation=1,
                groups=1, output_padding=0, transposed=False, b_shape=None,
                out_size=None) -> ConvParams:
    """Check and normalise the arguments of a convolution (or transposed convolution).

    ``x_shape`` is the op's input shape (batched or not).  For a transposed convolution
    whose output size is known (its input gradient, a layer's ``output_size``),
    ``out_size`` may be passed to check it instead of computing it.
    """
    x_shape = _shape(x_shape)
    w_shape = _shape(w_shape)
    if len(x_shape) not in (nd + 1, nd + 2):
        raise _rank_error(op, nd, "input", x_shape)
    if len(w_shape) != nd + 2:
        raise ValueError(
            f"{op}: weight must be {nd + 2}-D (out_channels, in_channels/groups, *kernel), "
            f"got {len(w_shape)}-D {w_shape} (input {x_shape})")
    batched = len(x_shape) == nd + 2
    N = x_shape[0] if batched else 1
    C_in = x_shape[-nd - 1]
    in_size = x_shape[-nd:]
    kernel_size = w_shape[2:]
    shapes = f"(input {x_shape}, weight {w_shape})"

    if not is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r} {shapes}")
    G = int(groups)
    stride = int_tuple(op, "stride", stride, nd)
    dilation = int_tuple(op, "dilation", dilation, nd)
    if any(s < 1 for s in stride):
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    if any(d < 1 for d in dilation):
        raise ValueError(f"{op}: dilation must be positive, got {dilation}")
    if any(k < 1 for k in kernel_size) or w_shape[0] < 1 or w_shape[1] < 1:
        raise ValueError(f"{op}: weight {w_shape} has an empty dimension (input {x_shape})")
    if any(i < 1 for i in in_size):
        raise ValueError(f"{op}: input {x_shape} has an empty spatial dimension")
    if C_in < 1:
        raise ValueError(f"{op}: input {x_shape} has no channels")

    if transposed:
        if C_in != w_shape[0]:
            raise ValueError(
                f"{op}: input {x_shape} has {C_in} channels, but weight {w_shape} expects "
                f"{w_shape[0]} (transposed weights are (in_channels, out_channels/groups, *kernel))")
        if C_in % G:
            raise ValueError(f"{op}: groups={G} does not divide in_channels={C_in} {shapes}")
        C_out = w_shape[1] * G
        output_padding = int_tuple(op, "output_padding", output_padding, nd)
        for i, (op_, s, d) in enumerate(zip(output_padding, stride, dilation)):
            if op_ < 0 or op_ >= max(s, d):
                raise ValueError(
                    f"{op}: output_padding={output_padding} must be non-negative and smaller "
                    f"than max(stride, dilation) in every dim; dim {i} has stride {s}, "
                    f"dilation {d} (output = (in - 1) * stride - 2 * padding + dilation * "
                    f"(kernel - 1) + output_padding + 1)")
        pairs = _padding_pairs(op, padding, nd, in_size, kernel_size, stride, dilation, True)
        computed = tuple(
            (i - 1) * s - pb - pa + d * (k - 1) + o + 1
            for i, s, (pb, pa), d, k, o in zip(in_size, stride, pairs, dilation, kernel_size,
                                               output_padding))
        if out_size is not None:
            out_size = _shape(out_size)
            if out_size != computed:
                raise ValueError(
                    f"{op}: output size {out_size} does not match the size {computed} given by "
                    f"input {x_shape}, weight {w_shape}, stride {stride}, padding {padding!r}, "
                    f"output_padding {output_padding}, dilation {dilation}")
        if any(o < 1 for o in computed):
            raise ValueError(
                f"{op}: output size {computed} is not positive for input {x_shape}, weight "
                f"{w_shape}, stride {stride}, padding {padding!r}, dilation {dilation}")
        out_size = computed
    else:
        Cg = w_shape[1]
        if w_shape[0] % G:
            raise ValueError(
                f"{op}: groups={G} does not divide out_channels={w_shape[0]} {shapes}")
        if C_in % G:
            raise ValueError(f"{op}: groups={G} does not divide in_channels={C_in} {shapes}")
        if C_in != Cg * G:
            hint = ""
            if batched and x_shape[-1] == Cg * G and nd >= 1:
                perm = (0, nd + 1) + tuple(range(1, nd + 1))
                hint = (f". The last axis has {x_shape[-1]}: is the input channels-last? "
                        f"Use x.transpose{perm}")
            elif not batched and x_shape[-1] == Cg * G:
                perm = (nd,) + tuple(range(nd))
                hint = (f". The last axis has {x_shape[-1]}: is the input channels-last? "
                        f"Use x.transpose{perm}")
            raise ValueError(
                f"{op}: input {x_shape} has {C_in} channels, weight {w_shape} with "
                f"groups={G} expects {Cg * G}{hint}")
        C_out = w_shape[0]
        output_padding = (0,) * nd
        pairs = _padding_pairs(op, padding, nd, in_size, kernel_size, stride, dilation, False)
        out = []
        for i, (n_in, (pb, pa), k, s, d) in enumerate(
                zip(in_size, pairs, kernel_size, stride, dilation)):
            padded = n_in + pb + pa
            eff = d * (k - 1) + 1
            if padded < eff:
                raise ValueError(
                    f"{op}: kernel larger than the padded input in spatial dim {i}: padded "
                    f"size {padded} (= {n_in} + {pb} + {pa}) < effective kernel {eff} "
                    f"(= dilation {d} * (kernel {k} - 1) + 1) {shapes}")
            out.append((padded - eff) // s + 1)
        out_size = tuple(out)

    if b_shape is not None:
        b_shape = _shape(b_shape)
        if b_shape != (C_out,):
            raise ValueError(f"{op}: bias must have shape ({C_out},), got {b_shape} "
                             f"(weight {w_shape})")
    p = ConvParams(op=op, nd=nd, transposed=transposed, batched=batched, N=N, C_in=C_in,
                   C_out=C_out, G=G, in_size=in_size, out_size=out_size,
                   kernel_size=kernel_size, stride=stride, padding=pairs, dilation=dilation,
                   output_padding=output_padding)
    if p.gemm_k > INT32_MAX or p.col_channels // G > INT32_MAX:
        raise ValueError(f"{op}: weight {w_shape} is too large: a group's GEMM dimension "
                         f"exceeds 2**31 - 1")
    return p


def check_dtypes(op: str, xp_name: str, **arrays):
    """Input/weight/bias dtypes: float32 or float64 (float16 on the GPU), all equal."""
    allowed = ("float16", "float32", "float64") if xp_name == "cupy" else ("float32", "float64")
    first_name = first = None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = np.dtype(a.dtype)
        if dt.name not in allowed:
            if dt == np.float16:
                raise TypeError(f"{op}: {name} is float16; float16 is supported for CuPy (GPU) "
                                f"arrays only; use float32 on the CPU")
            raise TypeError(f"{op}: {name} has unsupported dtype {dt.name}; expected one of "
                            f"{', '.join(allowed)}")
        if first is None:
            first_name, first = name, dt
        elif dt != first:
            raise TypeError(f"{op}: {first_name} is {first.name} but {name} is {dt.name}; "
                            f"convert with {name}.astype(np.{first.name})")
    return first


def array_module_name(op: str, *arrays) -> str:
    """'numpy' or 'cupy' for the arrays given; mixing the two raises TypeError."""
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        mod = type(a).__module__.split(".")[0]
        if mod == "cupy":
            kinds.add("cupy")
        elif isinstance(a, np.ndarray):
            kinds.add("numpy")
        else:
            raise TypeError(f"{op}: expected NumPy or CuPy arrays, got {type(a).__name__}")
    if len(kinds) > 1:
        raise TypeError(f"{op}: arrays mix NumPy (CPU) and CuPy (GPU); move them to one "
                        f"device first (cupy.asarray / cupy.asnumpy)")
    return kinds.pop() if kinds else "numpy"
