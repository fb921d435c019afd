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
from typing import NamedTuple

import numpy as np

INT32_MAX = 2**31 - 1
_ALGORITHMS = ("auto", "im2col", "direct", "winograd")
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


def check_winograd(op: str, p) -> None:
    """``algorithm='winograd'`` needs a dense layer (groups=1) with 3 taps per spatial
    dim, stride 1 and dilation 1 (the transposed convolutions and input gradients of
    such layers included, since they are the same convolution flipped)."""
    bad = []
    if p.G != 1:
        bad.append(f"groups={p.G}")
    if any(k != 3 for k in p.kernel_size):
        bad.append(f"kernel {p.kernel_size}")
    if any(s != 1 for s in p.stride):
        bad.append(f"stride {p.stride}")
    if any(d != 1 for d in p.dilation):
        bad.append(f"dilation {p.dilation}")
    if bad:
        raise ValueError(f"{op}: algorithm='winograd' needs groups=1, 3 taps per dim, "
                         f"stride 1 and dilation 1; got {', '.join(bad)}")


def conv_out_size(n_in: int, k: int, s: int, pads: tuple, d: int) -> int:
    """One spatial dim of a convolution's output: floor((in + pb + pa - d*(k-1) - 1) / s)
    + 1 (PyTorch's ``conv_output_size``); the one formula :mod:`cyconv` uses."""
    return (n_in + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def conv_transpose_out_size(n_in: int, k: int, s: int, pads: tuple, d: int,
                            output_padding: int = 0) -> int:
    """One spatial dim of a transposed convolution's output:
    (in - 1)*s - pb - pa + d*(k-1) + output_padding + 1."""
    return (n_in - 1) * s - pads[0] - pads[1] + d * (k - 1) + output_padding + 1


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


class Geometry(NamedTuple):
    """A convolution in conv view, padded to 3 spatial dims (leading unit dims): the
    image side (a convolution's input, a transposed convolution's output), the column
    side, and per-dim (D, H, W) triples.  ``pad`` is the padding *before* each dim."""
    G: int
    C_img: int
    C_col: int
    img: tuple
    col: tuple
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple

    def flat(self) -> tuple:
        """(G, C_img, C_col, D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW, DD,
        DH, DW): the plain tuple the kernels take (``make_geom`` in ``_geom.pxd``,
        ``CYC_GEOM_PARAMS`` in ``common.cuh``)."""
        return ((self.G, self.C_img, self.C_col) + self.img + self.col + self.kernel
                + self.stride + self.pad + self.dilation)


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

    @property
    def geom(self) -> "Geometry":
        """The conv view padded to 3 spatial dims, with named fields (see
        :class:`Geometry`).  Computed once per instance."""
        cached = self.__dict__.get("_geom")
        if cached is None:
            lead = 3 - self.nd
            cached = Geometry(
                self.G, self.img_channels, self.col_channels,
                img=(1,) * lead + self.img_size, col=(1,) * lead + self.col_size,
                kernel=(1,) * lead + self.kernel_size, stride=(1,) * lead + self.stride,
                pad=(0,) * lead + tuple(pb for pb, _ in self.padding),
                dilation=(1,) * lead + self.dilation)
            object.__setattr__(self, "_geom", cached)    # frozen: not a field, no eq/hash
        return cached

    def geometry(self) -> tuple:
        """:attr:`geom` as the flat 21-tuple the kernels read (:meth:`Geometry.flat`).
        Computed once per instance."""
        cached = self.__dict__.get("_geometry")
        if cached is None:
            cached = self.geom.flat()
            object.__setattr__(self, "_geometry", cached)
        return cached


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
        computed = tuple(conv_transpose_out_size(i, k, s, pair, d, o)
                         for i, s, pair, d, k, o in zip(in_size, stride, pairs, dilation,
                                                        kernel_size, output_padding))
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
            out.append(conv_out_size(n_in, k, s, (pb, pa), d))
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
    # compared by kind and size (dtype.name builds a string: slow on every call)
    sizes = (2, 4, 8) if xp_name == "cupy" else (4, 8)
    first_name = first = None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = np.dtype(a.dtype)
        if dt.kind != "f" or dt.itemsize not in sizes:
            allowed = [f"float{8 * n}" for n in sizes]
            if dt == np.float16:
                raise TypeError(f"{op}: {name} is float16; float16 is supported for CuPy (GPU) "
                                f"arrays only; use float32 on the CPU")
            raise TypeError(f"{op}: {name} has unsupported dtype {dt.name}; expected one of "
                            f"{', '.join(allowed)}")
        if first is None:
            first_name, first = name, dt.newbyteorder("=")
        elif dt.itemsize != first.itemsize:
            raise TypeError(f"{op}: {first_name} is {first.name} but {name} is {dt.name}; "
                            f"convert with {name}.astype(np.{first.name})")
    return first


def array_module_name(op: str, **arrays) -> str:
    """'numpy' or 'cupy' for the named arrays; anything else (None included) raises
    TypeError naming the argument, and so does mixing the two."""
    kinds = set()
    for name, a in arrays.items():
        if isinstance(a, np.ndarray):
            kinds.add("numpy")
        elif type(a).__module__.split(".")[0] == "cupy":
            kinds.add("cupy")
        else:
            raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got "
                            f"{type(a).__name__}")
    if len(kinds) > 1:
        raise TypeError(f"{op}: arrays mix NumPy (CPU) and CuPy (GPU); move them to one "
                        f"device first (cupy.asarray / cupy.asnumpy)")
    return kinds.pop() if kinds else "numpy"


# ---- pooling, padding, linear ----
#
# Pooling follows PyTorch's ``pooling_output_shape`` and ``pool2d_shape_check``:
#   out = floor((in + 2 * padding - dilation * (kernel - 1) - 1 [+ stride - 1]) / stride) + 1
# where the bracket is added in ceil mode, and in ceil mode the last window is dropped when
# it would start in the right padding: ``if (out - 1) * stride >= in + padding: out -= 1``.
# padding <= kernel_size // 2 in every dim.

_POOL_FAMILY = {"max": "max_pool", "avg": "avg_pool", "adaptive_avg": "adaptive_avg_pool"}


def _pool_tuple(op: str, name: str, value, nd: int) -> tuple:
    """An int, or a tuple of 1 or ``nd`` ints (PyTorch broadcasts a 1-tuple) -> ``nd`` ints."""
    if isinstance(value, (tuple, list)) and len(value) == 1 and nd > 1 and is_int(value[0]):
        return (int(value[0]),) * nd
    return int_tuple(op, name, value, nd)


def size_tuple(op: str, name: str, size) -> tuple:
    """A shape argument (tuple, list or torch.Size of ints) -> a tuple of Python ints."""
    if (isinstance(size, (tuple, list)) or type(size).__name__ == "Size") and all(
            is_int(v) for v in size):
        out = tuple(int(v) for v in size)
        if all(v >= 0 for v in out):
            return out
    raise ValueError(f"{op}: {name} must be a tuple of non-negative ints, got {size!r}")


def _pool_input(op: str, nd: int, x_shape, what: str):
    """(batched, N, C, in_size) of a pooling input of shape (N, C, *in) or (C, *in)."""
    x_shape = _shape(x_shape)
    if len(x_shape) not in (nd + 1, nd + 2):
        raise ValueError(
            f"{op} expects {what} of {nd + 1}-D {_UNBATCHED_NAMES[nd]} or {nd + 2}-D "
            f"{_DIM_NAMES[nd]} shape, got {len(x_shape)}-D {x_shape}")
    batched = len(x_shape) == nd + 2
    if any(v < 1 for v in x_shape[-nd - 1:]):
        raise ValueError(f"{op}: {what} {x_shape} has an empty channel or spatial dimension; "
                         f"only the batch dimension may be 0")
    return batched, (x_shape[0] if batched else 1), x_shape[-nd - 1], x_shape[-nd:]


class _PlaneShapes:
    """Shapes of a per-plane op (N, C, in_size) -> (N, C, out_size), batched or not."""

    @property
    def x_shape(self) -> tuple:
        return ((self.N,) if self.batched else ()) + (self.C,) + self.in_size

    @property
    def y_shape(self) -> tuple:
        return ((self.N,) if self.batched else ()) + (self.C,) + self.out_size


@dataclass(frozen=True)
class PoolParams(_PlaneShapes):
    """A checked max or average pooling.

    ``padding`` holds one (symmetric) amount per spatial dim, as in PyTorch;
    ``divisor_override`` is None or a non-zero int (average pooling only).
    """
    op: str
    nd: int
    kind: str                # "max" or "avg"
    batched: bool
    N: int
    C: int
    in_size: tuple
    out_size: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool
    count_include_pad: bool = True
    divisor_override: object = None

    def geometry(self) -> tuple:
        """The pooling padded to 3 spatial dims, as the kernels read it.

        (D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW, DD, DH, DW).
        Computed once per instance (cached plans call it on every call).
        """
        cached = self.__dict__.get("_geometry")
        if cached is None:
            lead = 3 - self.nd
            cached = ((1,) * lead + self.in_size + (1,) * lead + self.out_size
                      + (1,) * lead + self.kernel_size + (1,) * lead + self.stride
                      + (0,) * lead + self.padding + (1,) * lead + self.dilation)
            object.__setattr__(self, "_geometry", cached)   # frozen: not a field
        return cached


def pool_params(op: str, nd: int, kind: str, x_shape, kernel_size, stride=None, padding=0,
                dilation=1, ceil_mode=False, count_include_pad=True, divisor_override=None,
                what: str = "input") -> PoolParams:
    """Check and normalise the arguments of ``max_pool{nd}d`` / ``avg_pool{nd}d``.

    ``x_shape`` is the pooling input's shape (batched or not); ``what`` names it in
    messages ("input", or "input_size" for a gradient).
    """
    batched, N, C, in_size = _pool_input(op, nd, x_shape, what)
    x_shape = _shape(x_shape)
    k = _pool_tuple(op, "kernel_size", kernel_size, nd)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        s = k
    else:
        s = _pool_tuple(op, "stride", stride, nd)
    p = _pool_tuple(op, "padding", padding, nd)
    d = _pool_tuple(op, "dilation", dilation, nd)
    if any(v < 1 for v in k):
        raise ValueError(f"{op}: kernel_size must be positive, got {k} ({what} {x_shape})")
    if any(v < 1 for v in s):
        raise ValueError(f"{op}: stride must be positive, got {s} ({what} {x_shape})")
    if any(v < 1 for v in d):
        raise ValueError(f"{op}: dilation must be positive, got {d} ({what} {x_shape})")
    if any(v < 0 for v in p):
        raise ValueError(f"{op}: padding must be non-negative, got {p} ({what} {x_shape})")
    if any(pv > kv // 2 for pv, kv in zip(p, k)):
        raise ValueError(f"{op}: padding {p} must be at most half of kernel_size {k} "
                         f"(padding <= kernel_size // 2 in every dim; {what} {x_shape})")
    if divisor_override is not None and (not is_int(divisor_override)
                                         or int(divisor_override) == 0):
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, "
                         f"got {divisor_override!r}")
    ceil_mode = bool(ceil_mode)
    out = []
    for n_in, kv, sv, pv, dv in zip(in_size, k, s, p, d):
        span = n_in + 2 * pv - dv * (kv - 1) - 1
        o = (span + (sv - 1 if ceil_mode else 0)) // sv + 1
        if ceil_mode and (o - 1) * sv >= n_in + pv:
            o -= 1
        out.append(o)
    out = tuple(out)
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: output size {out} is too small for {what} {x_shape} (kernel_size {k}, "
            f"stride {s}, padding {p}, dilation {d}, ceil_mode={ceil_mode}); per dim, "
            f"out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1 "
            f"must be >= 1")
    return PoolParams(op=op, nd=nd, kind=kind, batched=batched, N=N, C=C, in_size=in_size,
                      out_size=out, kernel_size=k, stride=s, padding=p, dilation=d,
                      ceil_mode=ceil_mode, count_include_pad=bool(count_include_pad),
                      divisor_override=None if divisor_override is None
                      else int(divisor_override))


@dataclass(frozen=True)
class PoolShape(_PlaneShapes):
    """The (N, C, in_size) -> (N, C, out_size) shape of a pooling without a kernel
    geometry: an adaptive average pooling (output cell ``o`` of a dim averages the input
    range [floor(o * in / out), ceil((o + 1) * in / out))), or a max-pool gradient, whose
    windows are given by the indices."""
    op: str
    nd: int
    batched: bool
    N: int
    C: int
    in_size: tuple
    out_size: tuple

    def geometry(self) -> tuple:
        """(D, H, W, OD, OH, OW): the sizes padded to 3 spatial dims."""
        lead = 3 - self.nd
        return (1,) * lead + self.in_size + (1,) * lead + self.out_size


def adaptive_pool_params(op: str, nd: int, x_shape, output_size,
                         what: str = "input") -> PoolShape:
    """Check ``output_size`` (an int, or a tuple of ``nd`` ints or None) of an adaptive
    pooling; None keeps that input size, 0 gives an empty output."""
    batched, N, C, in_size = _pool_input(op, nd, x_shape, what)
    if is_int(output_size):
        out = (int(output_size),) * nd
    elif (isinstance(output_size, (tuple, list)) and len(output_size) == nd
          and all(v is None or is_int(v) for v in output_size)):
        out = tuple(i if v is None else int(v) for v, i in zip(output_size, in_size))
    else:
        raise ValueError(f"{op}: output_size must be an int or a tuple of {nd} ints or None, "
                         f"got {output_size!r}")
    if any(v < 0 for v in out):
        raise ValueError(f"{op}: output_size must be non-negative, got {output_size!r} "
                         f"({what} {_shape(x_shape)})")
    return PoolShape(op=op, nd=nd, batched=batched, N=N, C=C, in_size=in_size, out_size=out)


def pool_grad_shape(op: str, nd: int, input_size, grad_output_shape) -> PoolShape:
    """The shape of a pooling gradient whose output size is read from ``grad_output``
    (max-pool and adaptive-pool gradients): grad_output must be (N, C, *out) for an
    ``input_size`` of (N, C, *in), or (C, *out) for (C, *in)."""
    input_size = size_tuple(op, "input_size", input_size)
    batched, N, C, in_size = _pool_input(op, nd, input_size, "input_size")
    gy_shape = _shape(grad_output_shape)
    if len(gy_shape) != len(input_size) or gy_shape[:-nd] != input_size[:-nd]:
        lead = "(N, C)" if batched else "(C,)"
        raise ValueError(f"{op}: grad_output has shape {gy_shape}, expected {len(input_size)} "
                         f"dims with the {lead} of input_size {input_size}")
    return PoolShape(op=op, nd=nd, batched=batched, N=N, C=C, in_size=in_size,
                     out_size=gy_shape[-nd:])


def check_indices(op: str, indices, grad_output_shape) -> None:
    """The ``indices`` of a max-pool gradient: an integer array shaped like grad_output."""
    dt = np.dtype(indices.dtype)
    if dt.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer array (int64, as returned by "
                        f"return_indices=True), got {dt.name}")
    if tuple(indices.shape) != tuple(grad_output_shape):
        raise ValueError(f"{op}: indices has shape {tuple(indices.shape)}, but grad_output "
                         f"has shape {tuple(grad_output_shape)}")


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class PadParams:
    """A checked ``pad``: ``pairs[i]`` is the (before, after) amount of input dim ``i``
    (all dims, zeros where the pad tuple does not reach), negative amounts crop."""
    op: str
    mode: str
    value: float
    in_shape: tuple
    out_shape: tuple
    pairs: tuple

    @property
    def padded_dims(self) -> tuple:
        """The dims whose size or content the op changes, innermost last."""
        return tuple(i for i, pr in enumerate(self.pairs) if pr != (0, 0))

    def source_map(self, dim: int) -> np.ndarray:
        """int64 array of length ``out_shape[dim]``: the input index each output index of
        ``dim`` reads, or -1 where it holds the constant ``value``.

        constant: i = o - before, -1 outside [0, in); replicate: clamp(i, 0, in - 1);
        reflect: -i below 0, 2 * (in - 1) - i above; circular: crop the negative amounts
        first, then wrap around the cropped range (PyTorch's order).
        """
        n_in = self.in_shape[dim]
        before, after = self.pairs[dim]
        i = np.arange(self.out_shape[dim], dtype=np.int64) - before
        if self.mode == "constant":
            return np.where((i >= 0) & (i < n_in), i, -1)
        if self.mode == "replicate":
            return np.clip(i, 0, n_in - 1)
        if self.mode == "reflect":
            i = np.abs(i)
            return np.where(i >= n_in, 2 * (n_in - 1) - i, i)
        lo = max(0, -before)                            # circular
        kept = n_in - lo - max(0, -after)
        return lo + np.mod(np.arange(self.out_shape[dim], dtype=np.int64) - max(0, before),
                           kept)


def pad_params(op: str, x_shape, pad, mode="constant", value=0.0,
               what: str = "input") -> PadParams:
    """Check the arguments of ``pad`` (``F.pad``'s: the pad tuple runs from the last dim
    backwards, two amounts per dim)."""
    x_shape = _shape(x_shape)
    if mode not in _PAD_MODES:
        raise ValueError(f"{op}: unknown mode {mode!r}; expected one of "
                         f"{', '.join(map(repr, _PAD_MODES))}")
    if not (isinstance(pad, (tuple, list)) and len(pad) % 2 == 0
            and all(is_int(v) for v in pad)):
        raise ValueError(f"{op}: pad must be a tuple of an even number of ints "
                         f"(before, after for the last dim first), got {pad!r}")
    if len(pad) // 2 > len(x_shape):
        raise ValueError(f"{op}: pad {tuple(pad)} has {len(pad) // 2} (before, after) pairs, "
                         f"but {what} {x_shape} has only {len(x_shape)} dims")
    if mode != "constant" and value is not None and value != 0:
        raise ValueError(f"{op}: mode {mode!r} takes no value argument, got value={value!r}")
    try:
        value = 0.0 if value is None else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: value must be a number, got {value!r}") from None
    pairs = [(0, 0)] * len(x_shape)
    for j in range(len(pad) // 2):
        pairs[len(x_shape) - 1 - j] = (int(pad[2 * j]), int(pad[2 * j + 1]))
    out = []
    for dim, (n_in, pr) in enumerate(zip(x_shape, pairs)):
        o = n_in + pr[0] + pr[1]
        if pr != (0, 0) and mode != "constant":
            if n_in < 1:
                raise ValueError(f"{op}: {mode} padding {pr} on dim {dim} needs a non-empty "
                                 f"{what} dim, got {what} {x_shape}")
            if mode == "reflect" and (pr[0] >= n_in or pr[1] >= n_in):
                raise ValueError(f"{op}: reflect padding {pr} on dim {dim} must be < "
                                 f"input size {n_in}")
            if mode == "circular":
                kept = n_in - max(0, -pr[0]) - max(0, -pr[1])
                if kept < 1:
                    raise ValueError(f"{op}: circular padding {pr} on dim {dim} crops away "
                                     f"all of input size {n_in}")
                if pr[0] > kept or pr[1] > kept:
                    size = (f"input size {n_in}" if kept == n_in
                            else f"the cropped input size {kept}")
                    raise ValueError(f"{op}: circular padding {pr} on dim {dim} must be <= "
                                     f"{size}")
            if o < 1:
                raise ValueError(f"{op}: {mode} padding {pr} on dim {dim} leaves no element "
                                 f"of {what} {x_shape}")
        if o < 0:
            raise ValueError(f"{op}: padding {pr} on dim {dim} gives a negative size "
                             f"{o} for {what} {x_shape}")
        out.append(o)
    return PadParams(op=op, mode=mode, value=value, in_shape=x_shape, out_shape=tuple(out),
                     pairs=tuple(pairs))


@dataclass(frozen=True)
class LinearParams:
    """A checked ``linear``: input (*, in_features), weight (out_features, in_features)."""
    op: str
    lead_shape: tuple
    in_features: int
    out_features: int

    @property
    def y_shape(self) -> tuple:
        return self.lead_shape + (self.out_features,)


def linear_params(op: str, x_shape, w_shape, b_shape=None) -> LinearParams:
    """Check the shapes of ``linear(input, weight, bias)``."""
    x_shape, w_shape = _shape(x_shape), _shape(w_shape)
    if len(w_shape) != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got "
                         f"{len(w_shape)}-D {w_shape} (input {x_shape})")
    if len(x_shape) < 1:
        raise ValueError(f"{op}: input must have at least 1 dim (*, in_features), got shape "
                         f"{x_shape}")
    if x_shape[-1] != w_shape[1]:
        raise ValueError(f"{op}: input {x_shape} has {x_shape[-1]} features in its last dim, "
                         f"but weight {w_shape} expects {w_shape[1]}")
    if b_shape is not None and _shape(b_shape) != (w_shape[0],):
        raise ValueError(f"{op}: bias must have shape ({w_shape[0]},), got {_shape(b_shape)} "
                         f"(weight {w_shape})")
    return LinearParams(op=op, lead_shape=x_shape[:-1], in_features=w_shape[1],
                        out_features=w_shape[0])


# ---- batch norm, activations, softmax, dropout, interpolate ----

@dataclass(frozen=True)
class NormParams:
    """A checked ``batch_norm``: input (N, C, *spatial) viewed as (N, C, S)."""
    op: str
    x_shape: tuple
    N: int
    C: int
    S: int
    training: bool

    @property
    def count(self) -> int:
        """Values per channel (N * S)."""
        return self.N * self.S


def norm_params(op: str, x_shape, training: bool, **vectors) -> NormParams:
    """Check a batch-norm input (at least 2 dims, channels in dim 1) and its per-channel
    arrays (``running_mean=...``, ``weight=...``: shapes or None), each of shape (C,)."""
    x_shape = _shape(x_shape)
    if len(x_shape) < 2:
        raise ValueError(f"{op}: input must have at least 2 dims (N, C, *), got "
                         f"{len(x_shape)}-D {x_shape}")
    N, C = x_shape[0], x_shape[1]
    for name, shape in vectors.items():
        if shape is not None and _shape(shape) != (C,):
            raise ValueError(f"{op}: {name} has shape {_shape(shape)}, expected ({C},) for "
                             f"input {x_shape} with {C} channels")
    S = math.prod(x_shape[2:])
    training = bool(training)
    if training and N * S == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input {x_shape}")
    return NormParams(op=op, x_shape=x_shape, N=N, C=C, S=S, training=training)


def check_eps_momentum(op: str, eps, momentum) -> tuple:
    """``eps`` a non-negative number, ``momentum`` a number in [0, 1] (or None: the layers
    pass the cumulative average's factor instead)."""
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a non-negative number, got {eps!r}")
    if momentum is not None and (not isinstance(momentum, numbers.Real)
                                 or isinstance(momentum, bool) or not 0 <= momentum <= 1):
        raise ValueError(f"{op}: momentum must be a number in [0, 1] or None, got "
                         f"{momentum!r}")
    return float(eps), None if momentum is None else float(momentum)


def check_dim(op: str, dim, ndim: int) -> int:
    """``dim`` normalised to [0, ndim) (a 0-d array takes -1 and 0, as in PyTorch)."""
    n = max(ndim, 1)
    if not is_int(dim) or not -n <= dim < n:
        raise ValueError(f"{op}: dim={dim!r} is out of range for a {ndim}-D input (expected "
                         f"an int in [{-n}, {n - 1}])")
    return int(dim) % n


def softmax_lines(op: str, shape, dim) -> tuple:
    """``(outer, D, inner)``: ``shape`` viewed around the softmax dim ``dim`` (checked);
    a 0-d shape is (1, 1, 1)."""
    shape = _shape(shape)
    d = check_dim(op, dim, len(shape))
    if not shape:
        return 1, 1, 1
    return math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:])


def check_probability(op: str, p) -> float:
    """Dropout's ``p``: a number in [0, 1]."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"{op}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


_INTERPOLATE_MODES = {"nearest": None, "linear": 1, "bilinear": 2, "trilinear": 3}


@dataclass(frozen=True, eq=False)
class DimMap:
    """How one dim of ``interpolate`` reads its input, in PyTorch's index arithmetic.

    Output ``o`` is ``w0[o] * x[i0[o]] + w1[o] * x[i1[o]]`` (``x[i0[o]]`` for nearest,
    where ``w0`` and ``w1`` are None).  The transposed map in CSR form drives the
    gradient: input ``i`` gathers ``wt[k] * gy[src[k]]`` for k in ``ptr[i]:ptr[i + 1]``.
    ``identity``: nearest with equal sizes (the pass is skipped).
    """
    n_in: int
    n_out: int
    identity: bool
    i0: np.ndarray
    i1: np.ndarray
    w0: object
    w1: object
    ptr: np.ndarray
    src: np.ndarray
    wt: np.ndarray


def _dim_map(mode: str, n_in: int, n_out: int, scale, align_corners: bool, dtype) -> DimMap:
    """PyTorch's ``nearest_idx`` (float32 arithmetic for every dtype) and
    ``compute_source_index_and_lambda`` (in the op's math type ``T``: float32 for float16
    and float32, float64 for float64; the weights are stored in it) for one dim;
    ``scale`` is the user's scale factor or None (then in / out)."""
    o = np.arange(n_out, dtype=np.int64)
    T = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    if mode == "nearest":
        if n_out == n_in:
            i0 = o
        elif n_out == 2 * n_in:
            i0 = o >> 1
        else:
            s = np.float32(1.0 / scale) if scale else np.float32(n_in) / np.float32(n_out)
            i0 = np.minimum(np.floor(o.astype(np.float32) * s).astype(np.int64), n_in - 1)
        i1, w0, w1 = i0, None, None
        wt_of = (np.ones(n_out, T),)
        idx, outs = i0, o
    else:
        if n_out == n_in:
            i0 = i1 = o
            lam = np.zeros(n_out, T)
        else:
            if align_corners:
                ratio = T(n_in - 1) / T(n_out - 1) if n_out > 1 else T(0)
                real = ratio * o.astype(T)
            else:
                ratio = T(1.0 / scale) if scale else T(n_in) / T(n_out)
                real = np.maximum(ratio * (o.astype(T) + T(0.5)) - T(0.5), T(0))
            i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
            lam = np.minimum(np.maximum(real - i0.astype(T), T(0)), T(1)).astype(T)
            i1 = i0 + (i0 < n_in - 1)
        w0 = (T(1) - lam).astype(T)
        w1 = lam.astype(T)
        wt_of = (w0, w1)
        idx, outs = np.concatenate([i0, i1]), np.concatenate([o, o])
    wt = np.concatenate(wt_of).astype(T)
    order = np.lexsort((outs, idx))              # by input index, then output; stable
    ptr = np.zeros(n_in + 1, np.int64)
    np.cumsum(np.bincount(idx, minlength=n_in), out=ptr[1:])
    return DimMap(n_in=n_in, n_out=n_out, identity=mode == "nearest" and n_in == n_out,
                  i0=np.ascontiguousarray(i0), i1=np.ascontiguousarray(i1), w0=w0, w1=w1,
                  ptr=ptr, src=np.ascontiguousarray(outs[order]),
                  wt=np.ascontiguousarray(wt[order]))


@dataclass(frozen=True, eq=False)
class ResampleParams:
    """A checked ``interpolate``: (N, C, *in_size) -> (N, C, *out_size), one
    :class:`DimMap` per spatial dim."""
    op: str
    mode: str
    nd: int
    N: int
    C: int
    in_size: tuple
    out_size: tuple
    maps: tuple

    @property
    def x_shape(self) -> tuple:
        return (self.N, self.C) + self.in_size

    @property
    def y_shape(self) -> tuple:
        return (self.N, self.C) + self.out_size


def _positive_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def interpolate_params(op: str, x_shape, dtype, size=None, scale_factor=None,
                       mode="nearest", align_corners=None,
                       what: str = "input") -> ResampleParams:
    """Check the arguments of ``interpolate`` (PyTorch's ``F.interpolate`` rules: exactly
    one of ``size`` and ``scale_factor``; the output size from a scale factor is
    ``floor(in * scale_factor)``, and the factor itself maps the coordinates)."""
    if not isinstance(mode, str) or mode not in _INTERPOLATE_MODES:
        raise ValueError(f"{op}: mode must be one of 'nearest', 'linear', 'bilinear', "
                         f"'trilinear', got {mode!r}")
    x_shape = _shape(x_shape)
    if len(x_shape) not in (3, 4, 5):
        raise ValueError(f"{op}: {what} must be 3-D (N, C, L), 4-D (N, C, H, W) or 5-D "
                         f"(N, C, D, H, W), got {len(x_shape)}-D {x_shape}")
    nd = len(x_shape) - 2
    need = _INTERPOLATE_MODES[mode]
    if need is not None and need != nd:
        raise ValueError(f"{op}: mode {mode!r} needs a {need + 2}-D input {_DIM_NAMES[need]}, "
                         f"got {len(x_shape)}-D {what} {x_shape}")
    if align_corners is not None and mode == "nearest":
        raise ValueError(f"{op}: align_corners can only be set with the linear modes "
                         f"(linear, bilinear, trilinear), got mode 'nearest'")
    if size is None and scale_factor is None:
        raise ValueError(f"{op}: either size or scale_factor must be given")
    if size is not None and scale_factor is not None:
        raise ValueError(f"{op}: give size or scale_factor, not both (got size={size!r}, "
                         f"scale_factor={scale_factor!r})")
    N, C, in_size = x_shape[0], x_shape[1], x_shape[2:]
    if C < 1 or any(v < 1 for v in in_size):
        raise ValueError(f"{op}: {what} {x_shape} has an empty channel or spatial "
                         f"dimension; only the batch dimension may be 0")
    if size is not None:
        sizes = (size,) * nd if is_int(size) else size
        if not (isinstance(sizes, (tuple, list)) or type(sizes).__name__ == "Size") or \
                len(sizes) != nd or not all(is_int(v) and v >= 1 for v in sizes):
            raise ValueError(f"{op}: size must be a positive int or a tuple of {nd} positive "
                             f"ints, got {size!r} for {what} {x_shape}")
        out = tuple(int(v) for v in sizes)
        scales = (None,) * nd
    else:
        sf = (scale_factor,) * nd if _positive_number(scale_factor) else scale_factor
        if not isinstance(sf, (tuple, list)) or len(sf) != nd or \
                not all(_positive_number(v) for v in sf):
            raise ValueError(f"{op}: scale_factor must be a positive number or a tuple of "
                             f"{nd} positive numbers, got {scale_factor!r} for {what} "
                             f"{x_shape}")
        scales = tuple(float(v) for v in sf)
        out = tuple(math.floor(float(i) * s) for i, s in zip(in_size, scales))
        if any(v < 1 for v in out):
            raise ValueError(f"{op}: scale_factor {scale_factor!r} gives an empty output "
                             f"{out} for {what} {x_shape}")
    maps = tuple(_dim_map(mode, i, o, s, bool(align_corners), dtype)
                 for i, o, s in zip(in_size, out, scales))
    return ResampleParams(op=op, mode=mode, nd=nd, N=N, C=C, in_size=in_size, out_size=out,
                          maps=maps)
