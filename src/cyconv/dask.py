"""Convolutions and pooling on Dask arrays, chunk by chunk, equal to the in-memory ops.

Dask is optional (``pip install cyconv[dask]``): importing :mod:`cyconv` never imports
it, and importing this module without it raises an ``ImportError`` that says how to
install it.

The ops take a ``dask.array.Array`` input (weights and bias are NumPy arrays) and return
a lazy ``dask.array.Array``; each output chunk is computed by the in-memory cyconv op on
the exact piece of the input it reads.  So a volume larger than memory is convolved one
chunk at a time, with the local schedulers (threads, processes, synchronous) or with a
``dask.distributed`` cluster, and the result is the in-memory result.

How chunks are handled
----------------------
- **Batch**: each batch chunk maps to its own output chunk.
- **Channels**: a convolution needs the channel dim in one chunk (it mixes every input
  channel of a group into every output channel), so an input chunked along it is
  rechunked first; pooling keeps the channel chunks.
- **Spatial dims**: the output is chunked like the input (an input chunk boundary
  ``c`` becomes the output boundary of the first output whose window is centred at or
  after ``c``, so a stride-1 'same' convolution keeps the chunks exactly, stride 2
  halves them, a stride-2 transposed convolution doubles them).  For every output chunk
  the exact input interval it reads is computed from the kernel size, dilation, stride
  and the (before, after) padding (``'same'`` for any stride included), clipped to the
  input; what falls outside the input becomes that chunk's own padding.  Only the
  halo slices of neighbouring chunks travel to the task that needs them.

Results equal the in-memory op's: every output element is computed by the same kernel
from the same input values, with the same algorithm (for ``algorithm='auto'``, the one
the in-memory op picks for the whole array).  Max pooling is bit-identical.  Sums may
differ in the last bits where a kernel orders a sum's terms by the element's position
in its chunk (a SIMD tail, a narrower BLAS matrix), exactly as they may between two
in-memory calls on arrays of different widths.

Threads: cyconv's kernels run OpenMP threads in every task.  With Dask's threaded
scheduler several tasks run at once, so set ``cyconv.set_num_threads(1)`` (or run one
Dask thread per worker process and give cyconv that worker's cores) to avoid
oversubscribing the cores.

Examples
--------
>>> import numpy as np, dask.array as da, cyconv.dask
>>> x = da.random.random((1, 16, 256, 256, 256), chunks=(1, 16, 64, 64, 64)).astype("f4")
>>> w = np.random.rand(16, 16, 3, 3, 3).astype("f4")
>>> y = cyconv.dask.conv3d(x, w, padding="same")        # lazy, chunks (1, 16, 64, 64, 64)
>>> y.to_zarr("out.zarr")                               # doctest: +SKIP
"""
from __future__ import annotations

import functools
import importlib
import itertools
import operator

import numpy as np

import cyconv
from cyconv import _dispatch
from cyconv._params import check_algorithm, check_dtypes, conv_params, pool_params
from cyconv._plan import im2col_feasible


def _import_dask():
    """``(dask.array, dask.base.tokenize, HighLevelGraph)``, or an ImportError with a hint."""
    try:
        da = importlib.import_module("dask.array")
        tokenize = importlib.import_module("dask.base").tokenize
        hlg = importlib.import_module("dask.highlevelgraph").HighLevelGraph
    except ImportError as exc:
        raise ImportError(
            "cyconv.dask needs Dask, which is not installed: install it with "
            "'pip install cyconv[dask]' (or 'pip install \"dask[array,distributed]\"'). "
            "cyconv itself works without it.") from exc
    return da, tokenize, hlg


_da, _tokenize, _HighLevelGraph = _import_dask()

__all__ = ([f"conv{nd}d" for nd in (1, 2, 3)] + [f"conv_transpose{nd}d" for nd in (1, 2, 3)]
           + [f"max_pool{nd}d" for nd in (1, 2, 3)] + [f"avg_pool{nd}d" for nd in (1, 2, 3)])


# -- planning: which input interval each output chunk reads ------------------------------------

def _ceil_div(a, b):
    return -((-a) // b)


def _output_chunks(in_chunks, n_out, boundary):
    """Output chunk sizes of one spatial dim: input boundary ``c`` -> ``boundary(c)``.

    ``boundary`` is non-decreasing; it is clamped to [0, n_out] and empty chunks are
    dropped, so the sizes are positive and add up to ``n_out``.
    """
    bounds, pos = [0], 0
    for c in in_chunks[:-1]:
        pos += c
        bounds.append(min(max(boundary(pos), bounds[-1]), n_out))
    bounds.append(n_out)
    return tuple(b - a for a, b in zip(bounds, bounds[1:]) if b > a)


def _pieces(in_chunks, i0, i1):
    """The input chunks the interval [i0, i1) overlaps: ``(chunk index, local slice)``."""
    out, start = [], 0
    for idx, size in enumerate(in_chunks):
        lo, hi = max(i0, start), min(i1, start + size)
        if lo < hi:
            out.append((idx, slice(lo - start, hi - start)))
        start += size
    return out


def _conv_dim_plan(n_in, in_chunks, n_out, k, s, pad, d):
    """Per output chunk of a convolution: (size, (i0, i1), the chunk's (before, after)).

    Output ``o`` reads padded positions ``o*s .. o*s + d*(k-1)``, i.e. input positions
    ``o*s - pb`` to ``o*s - pb + d*(k-1)``; a chunk [o0, o1) reads
    [o0*s - pb, (o1-1)*s - pb + d*(k-1) + 1), and what lies outside [0, n_in) is its own
    padding.  Its output size is then exactly o1 - o0.
    """
    pb, _ = pad
    eff = d * (k - 1) + 1
    chunks = _output_chunks(in_chunks, n_out,
                            lambda c: _ceil_div(2 * c + 2 * pb - (eff - 1), 2 * s))
    plan, o0 = [], 0
    for size in chunks:
        o1 = o0 + size
        start, stop = o0 * s - pb, (o1 - 1) * s - pb + eff
        i0, i1 = min(max(start, 0), n_in), min(max(stop, 0), n_in)
        plan.append((size, (i0, i1), (i0 - start, stop - i1)))
        o0 = o1
    return plan


def _conv_transpose_dim_plan(n_in, in_chunks, n_out, k, s, pad, d):
    """Per output chunk of a transposed convolution: (size, (i0, i1), (dst0, dst1, src0)).

    Input ``i`` adds into outputs ``i*s - p + t*d`` (t < k), so output chunk [o0, o1)
    receives from inputs ceil((o0 + p - d*(k-1)) / s) .. floor((o1 - 1 + p) / s).  The
    chunk runs an unpadded transposed convolution on them, whose output starts at global
    output ``g0 = i0*s - p``, and copies its rows [src0, src0 + dst1 - dst0) to the
    chunk's rows [dst0, dst1); rows no input reaches hold the bias (or 0).
    """
    p = pad[0]
    eff = d * (k - 1) + 1
    chunks = _output_chunks(in_chunks, n_out,
                            lambda c: _ceil_div(2 * c * s - 2 * p + eff - s, 2))
    plan, o0 = [], 0
    for size in chunks:
        o1 = o0 + size
        i0 = max(0, _ceil_div(o0 + p - (eff - 1), s))
        i1 = min(n_in, (o1 - 1 + p) // s + 1)
        if i1 <= i0:
            plan.append((size, (0, 0), None))
        else:
            g0 = i0 * s - p
            full = (i1 - i0 - 1) * s + eff
            lo, hi = max(o0, g0), min(o1, g0 + full)
            plan.append((size, (i0, i1), (lo - o0, hi - o0, lo - g0)))
        o0 = o1
    return plan


def _pool_dim_plan(n_in, in_chunks, n_out, k, s, p, d):
    """Per output chunk of a pooling: (size, (b0, b1), the rows to keep (r0, r1)).

    The chunk pools the input [b0, b1) with the op's own arguments and keeps its
    outputs [r0, r1).  Pooling padding is symmetric and bounded by k // 2, so a chunk
    cannot be given its own padding; instead it starts ``b0 = r*s`` early enough that
    the windows it keeps never reach the (fictitious) padding before ``b0`` (``r`` =
    ``o0 - ceil(p / s)``, or 0 at the start of the input, where the padding is real),
    and ends where its last window ends, or at the end of the input (where the padding,
    ceil_mode and the average's divisor rules are the whole input's).
    """
    eff = d * (k - 1) + 1
    m = _ceil_div(p, s)
    chunks = _output_chunks(in_chunks, n_out,
                            lambda c: _ceil_div(2 * c + 2 * p - (eff - 1), 2 * s))
    plan, o0 = [], 0
    for size in chunks:
        o1 = o0 + size
        r = max(0, o0 - m)
        b1 = min(n_in, (o1 - 1) * s - p + eff)
        plan.append((size, (r * s, b1), (o0 - r, o1 - r)))
        o0 = o1
    return plan


# -- the tasks ---------------------------------------------------------------------------------

def _assemble(pieces, nd):
    """One array from a nested list (one level per spatial dim) of neighbouring pieces."""
    one = pieces
    for _ in range(nd):
        if len(one) != 1:
            return np.block(pieces)
        one = one[0]
    return one


def _filled(shape, dtype, b):
    """An array of ``shape`` (N, C, ...) holding the bias (or zeros) in every pixel."""
    if b is None:
        return np.zeros(shape, dtype)
    out = np.empty(shape, dtype)
    out[...] = b.reshape((1, -1) + (1,) * (len(shape) - 2))
    return out


def _cropped(y, index):
    """``y[index]``, as a copy unless it is all of ``y`` (a view would pin all of y)."""
    part = y[index]
    return y if part.shape == y.shape else part.copy()


def _conv_task(op, nd, kwargs, padding, out_shape, pieces, w, b):
    """One output chunk of a convolution: the in-memory op on its input piece, padded
    with the chunk's own (before, after) amounts."""
    if pieces is None:        # every window of the chunk lies in the padding
        return _filled(out_shape, w.dtype, b)
    return getattr(cyconv, op)(_assemble(pieces, nd), w, b, padding=padding, **kwargs)


def _conv_transpose_task(op, nd, kwargs, windows, out_shape, pieces, w, b):
    """One output chunk of a transposed convolution (see _conv_transpose_dim_plan)."""
    if pieces is None:        # no input reaches the chunk
        return _filled(out_shape, w.dtype, b)
    full = getattr(cyconv, op)(_assemble(pieces, nd), w, b, padding=0, output_padding=0,
                               **kwargs)
    src = (slice(None),) * 2 + tuple(slice(s0, s0 + d1 - d0) for d0, d1, s0 in windows)
    if all(d0 == 0 and d1 == n for (d0, d1, _), n in zip(windows, out_shape[2:])):
        return _cropped(full, src)
    out = _filled(out_shape, full.dtype, b)
    out[(slice(None),) * 2 + tuple(slice(d0, d1) for d0, d1, _ in windows)] = full[src]
    return out


def _pool_task(op, nd, kwargs, keep, out_shape, pieces):
    """One output chunk of a pooling: the in-memory op on its piece, cropped."""
    y = getattr(cyconv, op)(_assemble(pieces, nd), **kwargs)
    return _cropped(y, (slice(None),) * 2 + tuple(slice(r0, r1) for r0, r1 in keep))


# -- the graph -----------------------------------------------------------------------------------

def _as_dask(op, input):
    if not isinstance(input, _da.Array):
        raise TypeError(
            f"{op}: input must be a dask.array.Array, got {type(input).__name__}; use "
            f"cyconv.{op} for in-memory arrays, or wrap with dask.array.from_array(x, "
            f"chunks=...)")
    if not isinstance(input._meta, np.ndarray):
        meta = type(input._meta)
        raise TypeError(f"{op}: input chunks must be NumPy arrays, got "
                        f"{meta.__module__}.{meta.__name__} chunks")
    if any(np.isnan(c) for dim in input.chunks for c in dim):
        raise ValueError(f"{op}: input has unknown chunk sizes {input.chunks}; call "
                         f"input.compute_chunk_sizes() first")
    return input


def _batched(x, batched, one_channel_chunk):
    """(N, C, ...), with the channel dim in one chunk if asked (rechunked if it was not)."""
    if not batched:
        x = x[None]
    if one_channel_chunk and x.numblocks[1] != 1:
        x = x.rechunk({1: -1})
    return x


def _check_weights(op, w, b):
    for name, a in (("weight", w), ("bias", b)):
        if a is not None and not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {name} must be a NumPy array, got {type(a).__name__}"
                            + ("; call .compute() first" if isinstance(a, _da.Array) else ""))


def _whole_array_algorithm(op, p, direction, dtype, algorithm):
    """The algorithm every chunk runs: for 'auto', the in-memory op's choice for the
    whole array, so that the chunks compute what it computes.  Where the whole array is
    too large for the in-memory im2col path, each chunk chooses for itself."""
    check_algorithm(op, algorithm)
    if algorithm != "auto" or not im2col_feasible(p):
        return algorithm
    public = {"forward": "forward", "backward_input": "input", "backward_weight": "weight"}
    return _dispatch.plan_for(op, p, direction, public[direction], dtype, algorithm,
                              "cpu").algorithm


def _build(op, nd, x, plans, task, kwargs, consts, out_channels, dtype):
    """The output array: one task per output chunk, fed with its halo pieces.

    ``out_channels`` is the output's channel chunking: ``(C_out,)`` for a convolution
    (whose input has one channel chunk), the input's own for a pooling.

    ``plans[i]`` lists, per output chunk of spatial dim i, its size, the input interval
    it reads and the per-chunk argument of ``task``.  ``consts`` (weight, bias) are
    stored once in the graph and passed to every task after its pieces.  Each task is
    ``(partial(task, op, nd, kwargs, chunk_args, out_shape), pieces, *consts)``, where
    ``pieces`` nests one list level per spatial dim; an element is an input chunk's key,
    or the key of a halo task slicing the part needed out of an input chunk (so only
    that part travels between workers).
    """
    token = _tokenize(op, x.name, kwargs, plans, consts)
    name, halo = f"cyconv-{op}-{token}", f"cyconv-{op}-halo-{token}"
    dsk, const_keys = {}, []
    for i, a in enumerate(consts):
        key = None
        if a is not None:
            key = f"cyconv-{op}-const{i}-{token}"
            dsk[key] = a
        const_keys.append(key)
    dim_pieces = [[_pieces(ch, *iv) if iv[1] > iv[0] else None for _, iv, _ in plan]
                  for plan, ch in zip(plans, x.chunks[2:])]
    lead = itertools.product(enumerate(x.chunks[0]), enumerate(out_channels))
    for (bn, n_size), (bc, c_size) in lead:
        for js in itertools.product(*(range(len(plan)) for plan in plans)):
            per_dim = [dim_pieces[i][j] for i, j in enumerate(js)]
            out_shape = (n_size, c_size) + tuple(plans[i][j][0] for i, j in enumerate(js))
            chunk_args = tuple(plans[i][j][2] for i, j in enumerate(js))
            pieces = None
            if all(p is not None for p in per_dim):
                in_lead = (bn, bc if len(out_channels) > 1 else 0)
                pieces = _nested_pieces(x, in_lead, per_dim, (halo, bn, bc) + js, dsk)
            fn = functools.partial(task, op, nd, kwargs, chunk_args, out_shape)
            dsk[(name, bn, bc) + js] = (fn, pieces, *const_keys)
    graph = _HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    chunks = (x.chunks[0], tuple(out_channels)) + tuple(
        tuple(size for size, _, _ in plan) for plan in plans)
    return _da.Array(graph, name, chunks, meta=np.empty((0,) * (nd + 2), dtype))


def _nested_pieces(x, in_lead, per_dim, halo_prefix, dsk):
    """Nested lists (one level per spatial dim) of input chunk keys or halo slices;
    ``in_lead`` is the (batch, channel) block index of the input chunks."""
    def build(level, idx, slices):
        if level == len(per_dim):
            key = (x.name,) + in_lead + idx
            if all(sl.start == 0 and sl.stop == x.chunks[2 + i][c]
                   for i, (c, sl) in enumerate(zip(idx, slices))):
                return key          # the whole input chunk
            hkey = halo_prefix + idx
            dsk[hkey] = (operator.getitem, key, (slice(None), slice(None)) + slices)
            return hkey
        return [build(level + 1, idx + (c,), slices + (sl,)) for c, sl in per_dim[level]]
    return build(0, (), ())


# -- public ops ----------------------------------------------------------------------------------

def _conv(nd, input, weight, bias, stride, padding, dilation, groups, algorithm):
    op = f"conv{nd}d"
    _check_weights(op, weight, bias)
    x = _as_dask(op, input)
    dtype = check_dtypes(op, "numpy", input=x, weight=weight, bias=bias)
    p = conv_params(op, nd, x.shape, weight.shape, stride=stride, padding=padding,
                    dilation=dilation, groups=groups,
                    b_shape=None if bias is None else bias.shape)
    alg = _whole_array_algorithm(op, p, "forward", dtype, algorithm)
    x = _batched(x, p.batched, True)
    plans = [_conv_dim_plan(n, ch, o, k, s, pad, d) for n, ch, o, k, s, pad, d in zip(
        p.in_size, x.chunks[2:], p.out_size, p.kernel_size, p.stride, p.padding, p.dilation)]
    kwargs = dict(stride=p.stride, dilation=p.dilation, groups=p.G, algorithm=alg)
    y = _build(op, nd, x, plans, _conv_task, kwargs, (weight, bias), (p.C_out,), dtype)
    return y if p.batched else y[0]


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation, algorithm):
    op = f"conv_transpose{nd}d"
    _check_weights(op, weight, bias)
    x = _as_dask(op, input)
    dtype = check_dtypes(op, "numpy", input=x, weight=weight, bias=bias)
    p = conv_params(op, nd, x.shape, weight.shape, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, output_padding=output_padding,
                    transposed=True, b_shape=None if bias is None else bias.shape)
    alg = _whole_array_algorithm(op, p, "backward_input", dtype, algorithm)
    x = _batched(x, p.batched, True)
    plans = [_conv_transpose_dim_plan(n, ch, o, k, s, pad, d) for n, ch, o, k, s, pad, d in
             zip(p.in_size, x.chunks[2:], p.out_size, p.kernel_size, p.stride, p.padding,
                 p.dilation)]
    kwargs = dict(stride=p.stride, groups=p.G, dilation=p.dilation, algorithm=alg)
    y = _build(op, nd, x, plans, _conv_transpose_task, kwargs, (weight, bias), (p.C_out,),
               dtype)
    return y if p.batched else y[0]


def _pool(nd, kind, input, kernel_size, stride, padding, dilation, ceil_mode,
          count_include_pad=True, divisor_override=None):
    op = f"{kind}_pool{nd}d"
    x = _as_dask(op, input)
    dtype = check_dtypes(op, "numpy", input=x)
    p = pool_params(op, nd, kind, x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                    count_include_pad, divisor_override)
    x = _batched(x, p.batched, False)
    plans = [_pool_dim_plan(n, ch, o, k, s, pad, d) for n, ch, o, k, s, pad, d in zip(
        p.in_size, x.chunks[2:], p.out_size, p.kernel_size, p.stride, p.padding, p.dilation)]
    kwargs = dict(kernel_size=p.kernel_size, stride=p.stride, padding=p.padding,
                  ceil_mode=p.ceil_mode)
    if kind == "max":
        kwargs["dilation"] = p.dilation
    else:
        kwargs["count_include_pad"] = p.count_include_pad
        if nd > 1:
            kwargs["divisor_override"] = p.divisor_override
    y = _build(op, nd, x, plans, _pool_task, kwargs, (), x.chunks[1], dtype)
    return y if p.batched else y[0]


_SHAPES = {1: ("(N, C_in, L)", "(C_in, L)", "k"),
           2: ("(N, C_in, H, W)", "(C_in, H, W)", "kH, kW"),
           3: ("(N, C_in, D, H, W)", "(C_in, D, H, W)", "kD, kH, kW")}

_CHUNKS_DOC = """
    The batch chunks map to output chunks one to one; the channel dim is rechunked into
    one chunk if it is not (every output channel reads every input channel of its
    group); each spatial dim is chunked like the input, scaled by the stride, and every
    output chunk reads exactly the input interval (halo included) its windows cover."""

_CONV_DOC = """{nd}-D convolution of a Dask array, chunk by chunk (``cyconv.conv{nd}d``).

Parameters
----------
input : dask.array.Array of NumPy chunks, shape {shape} or unbatched {ushape}
    {chunks}
weight : numpy.ndarray, shape (C_out, C_in/groups, {kernel})
bias : numpy.ndarray of shape (C_out,), optional
stride, dilation : int or tuple of {nd} ints
padding : int, tuple of {nd} ints, tuple of {nd} (before, after) pairs, 'valid' or 'same'
    'same' works for every stride (output ceil(in / stride), TensorFlow's rule).
groups : int
algorithm : {{'auto', 'im2col', 'direct'}}
    'auto' runs, in every chunk, the algorithm the in-memory op picks for the whole
    array, so the result is the in-memory result.

Returns
-------
dask.array.Array, shape (N, C_out, {out}) as ``cyconv.conv{nd}d`` gives; lazy.
"""

_CONVT_DOC = """{nd}-D transposed convolution of a Dask array, chunk by chunk
(``cyconv.conv_transpose{nd}d``).

Parameters
----------
input : dask.array.Array of NumPy chunks, shape {shape} or unbatched {ushape}
    {chunks}
weight : numpy.ndarray, shape (C_in, C_out/groups, {kernel})
bias : numpy.ndarray of shape (C_out,), optional
stride, padding, output_padding, dilation : int or tuple of {nd} ints
groups : int
algorithm : {{'auto', 'im2col', 'direct'}}

Returns
-------
dask.array.Array, shape (N, C_out, {out}) as ``cyconv.conv_transpose{nd}d`` gives; lazy.
"""

_MAX_DOC = """{nd}-D max pooling of a Dask array, chunk by chunk (``cyconv.max_pool{nd}d``).

Parameters
----------
input : dask.array.Array of NumPy chunks, shape {shape} or unbatched {ushape}
    Batch and channel chunks map to output chunks one to one (pooling keeps channels
    apart); each spatial dim is chunked like the input, scaled by the stride.
kernel_size, stride, padding, dilation, ceil_mode
    As for ``cyconv.max_pool{nd}d``; ``stride`` defaults to ``kernel_size``.

Returns
-------
dask.array.Array, shape (N, C, {out}); lazy.  (The indices of ``return_indices`` are
not offered here.)
"""

_AVG_DOC = """{nd}-D average pooling of a Dask array, chunk by chunk (``cyconv.avg_pool{nd}d``).

Parameters
----------
input : dask.array.Array of NumPy chunks, shape {shape} or unbatched {ushape}
    Batch and channel chunks map to output chunks one to one; each spatial dim is
    chunked like the input, scaled by the stride.
kernel_size, stride, padding, ceil_mode, count_include_pad{override}
    As for ``cyconv.avg_pool{nd}d``: the divisor of every window is the in-memory one.

Returns
-------
dask.array.Array, shape (N, C, {out}); lazy.
"""


def _make(nd):
    shape, ushape, kernel = _SHAPES[nd]
    out = ", ".join(f"{d}_out" for d in ("D", "H", "W")[3 - nd:]) if nd > 1 else "L_out"
    fmt = dict(nd=nd, shape=shape, ushape=ushape, kernel=kernel, out=out,
               chunks=_CHUNKS_DOC.strip())

    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             algorithm="auto"):
        return _conv(nd, input, weight, bias, stride, padding, dilation, groups, algorithm)

    def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1, *, algorithm="auto"):
        return _conv_transpose(nd, input, weight, bias, stride, padding, output_padding,
                               groups, dilation, algorithm)

    def max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        return _pool(nd, "max", input, kernel_size, stride, padding, dilation, ceil_mode)

    if nd == 1:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True):
            return _pool(nd, "avg", input, kernel_size, stride, padding, 1, ceil_mode,
                         count_include_pad)
    else:
        def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
            return _pool(nd, "avg", input, kernel_size, stride, padding, 1, ceil_mode,
                         count_include_pad, divisor_override)

    fns = {f"conv{nd}d": (conv, _CONV_DOC), f"conv_transpose{nd}d": (conv_transpose, _CONVT_DOC),
           f"max_pool{nd}d": (max_pool, _MAX_DOC), f"avg_pool{nd}d": (avg_pool, _AVG_DOC)}
    for name, (fn, doc) in fns.items():
        fn.__name__ = fn.__qualname__ = name
        fn.__module__ = __name__
        fn.__doc__ = doc.format(**fmt, override=", divisor_override" if nd > 1 else "")
    return {name: fn for name, (fn, _) in fns.items()}


for _nd in (1, 2, 3):
    globals().update(_make(_nd))
