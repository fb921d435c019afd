"""GPU backend: the CuPy mirror of :mod:`cyconv._cpu` and :mod:`cyconv._cpu_pool`.

Same functions, same conv view (see :mod:`cyconv._params`): ``conv_forward`` (column side
from image side), ``conv_backward_input`` (image side from column side: a convolution's
input gradient or a transposed convolution's output), ``conv_backward_weight`` and
``bias_grad``.  Arrays are batched ``(N, C, *spatial)`` CuPy arrays whose shapes the
caller has checked; float16 is accepted here (and only here), accumulating in float32.

Algorithms
----------
``'im2col'``
    :func:`cyconv._cuda` ``im2col_nd`` builds the column matrix of a chunk of samples in
    the layout ``(G, C_img/G * KK, nb * P)``; one batched cuBLAS GEMM over the groups
    (``cupy.matmul``) does the arithmetic; ``col2im_nd`` (a gather, no atomics) folds the
    input gradient / transposed convolution back.  The chunk size ``nb`` keeps the
    scratch memory under :func:`get_workspace_limit`; a layer of which not even one
    sample fits (or whose buffers cannot be allocated) runs the direct kernels instead.
    1×1 stride-1 unpadded layers skip im2col and call ``cupy.matmul`` on the input.
``'direct'``
    The kernels of ``direct.cu``: one thread per output element, and a deterministic
    two-pass split reduction for the weight gradient.  Every variant is supported.

Notes
-----
- Every launch and every CuPy call runs on the input's device (``with x.device:``) and
  on the current CuPy stream; nothing here synchronises with the host.
- GEMMs are always called with 3-D or 4-D operands, so CuPy uses
  ``cublasGemm(Strided)BatchedEx`` with an FP32 compute type for float16/float32:
  float32 stays float32 even when ``CUPY_TF32=1`` (which only affects CuPy's 2-D path).
- Weight gradients are deterministic: cuBLAS GEMMs are, chunk partials are summed in a
  fixed order, and the direct kernel splits its reduction by shape alone.  Only an
  out-of-memory retry (which halves the chunk) can change the summation order.
- Pooling (``pool.cu``) mirrors :mod:`cyconv._cpu_pool`: gathers for every forward op
  and the average-pooling gradients, a deterministic per-plane scatter for the max-pool
  gradient.  ``pad`` and ``relu`` are CuPy gathers/selects, ``linear`` one batched GEMM.
- Batch norm (``norm.cu``: block-per-channel reductions with a fixed tree, then
  element-wise passes), activations and softmax (``eltwise.cu``), interpolate
  (``resample.cu``: one gather pass per dim, the adjoint through a CSR map) and adaptive
  max pooling (``pool.cu``) mirror :mod:`cyconv._cpu_layers`; dropout draws its samples
  from a CuPy generator seeded from cyconv's and applies the mask with CuPy expressions.
  The max-pool gradient reads one count back to raise ``ValueError`` for an index
  outside the plane: the one host synchronisation of this module.
- CuPy compiles RawModules with ``-ftz=true``, so float32 denormals flush to zero in
  the custom kernels (cuBLAS keeps them).
"""
from __future__ import annotations

import math

import numpy as np

from . import _cuda, _runtime
from ._cuda import ACC_DTYPES, REDUCE_BLOCK, launch

#: dtype in which the weight-gradient partials of successive chunks are summed
_CHUNK_SUM_DTYPES = {"float16": "float32", "float32": "float64", "float64": "float64"}


# -- CuPy, devices, workspace ----------------------------------------------------------------

require_cupy = _cuda.require_cupy


def _xp():
    """The array module the backend computes with (CuPy)."""
    return require_cupy()


def _on_device(a):
    """Context that makes ``a``'s device current."""
    return a.device


def _device_id(a):
    return a.device.id


def _oom_errors():
    return (_xp().cuda.memory.OutOfMemoryError,)


def get_workspace_limit() -> int:
    """Bytes of GPU scratch memory (column buffers) one im2col op may allocate
    (:func:`cyconv._runtime.get_workspace_limit` for 'cuda': default 1 GiB, or
    ``CYCONV_GPU_WORKSPACE_MB``).  The batch is processed in chunks that fit; a smaller
    cap only means more, smaller GEMMs."""
    return _runtime.get_workspace_limit("cuda")


def set_workspace_limit(nbytes: int) -> None:
    """Cap the GPU scratch memory of one im2col op (see :func:`get_workspace_limit`)."""
    _runtime.set_workspace_limit(nbytes, "cuda")


def _prepare(p, first, *others):
    """C-contiguous copies/views of the arrays (None passes), all on ``first``'s device."""
    cp = _xp()
    dev = _device_id(first)
    out = []
    for a in (first,) + others:
        if a is None:
            out.append(None)
            continue
        if _device_id(a) != dev:
            raise ValueError(f"{p.op}: arrays are on different GPUs ({dev} and "
                             f"{_device_id(a)}); move them to one device first")
        out.append(cp.ascontiguousarray(a))
    return out


# -- planning (pure functions of the shapes) -------------------------------------------------

def conv_sizes(p) -> dict:
    """Per-group sizes of the conv view: G, Cg, Kg, KK, CKK, P (column side), IMG."""
    G, C_img, C_col = p.G, p.img_channels, p.col_channels
    KK = math.prod(p.kernel_size)
    return {"G": G, "C_img": C_img, "C_col": C_col, "Cg": C_img // G, "Kg": C_col // G,
            "KK": KK, "CKK": C_img // G * KK, "P": math.prod(p.col_size),
            "IMG": math.prod(p.img_size)}


def is_pointwise(p) -> bool:
    """1×1 kernel, stride 1, no padding: the column matrix is the image itself."""
    return (all(k == 1 for k in p.kernel_size) and all(s == 1 for s in p.stride)
            and all(pb == 0 and pa == 0 for pb, pa in p.padding))


def plan_chunk(N: int, per_sample: int, fixed: int, cap: int, P: int) -> int:
    """Samples per im2col chunk: as many as fit ``cap`` bytes (at least 1), then evened
    out so that the chunks have nearly equal sizes; ``nb * P`` stays a valid GEMM size.
    """
    if N < 1:
        return 1
    room = cap - fixed
    nb = room // per_sample if per_sample > 0 and room > 0 else 1
    nb = max(1, min(N, nb, _cuda.INT32_MAX // max(P, 1)))
    chunks = -(-N // nb)
    return -(-N // chunks)


def _im2col_buffers(p, N, dtype, direction):
    """(nb, col, aux) scratch buffers for the im2col path, or None when one sample's
    columns exceed the workspace cap or GPU memory (the caller then runs the direct
    kernels, which need no workspace).

    ``col`` holds C_img * KK * nb * P elements (None for a 1×1 weight gradient of one
    sample, which reads the input itself); ``aux`` a chunk's grad_output or GEMM result,
    C_col * nb * P elements (None where a chunk of one sample needs none).
    """
    cp = _xp()
    s = conv_sizes(p)
    item = np.dtype(dtype).itemsize
    col_per = s["C_img"] * s["KK"] * s["P"]
    aux_per = s["C_col"] * s["P"]
    fixed = 0
    if direction == "backward_weight":
        # the chunk's GEMM result and the running sum
        fixed = s["G"] * s["CKK"] * s["Kg"] * (item + 8)
    cap = get_workspace_limit()
    pointwise = is_pointwise(p)
    if not pointwise and col_per * item + fixed > cap:
        return None
    nb = plan_chunk(N, (col_per + aux_per) * item, fixed, cap, s["P"])
    while True:
        try:
            col = None if (pointwise and nb == 1) else cp.empty(col_per * nb, dtype)
            need_aux = direction == "backward_weight" or nb > 1
            aux = cp.empty(aux_per * nb, dtype) if need_aux else None
            return nb, col, aux
        except _oom_errors():
            col = aux = None
            if nb == 1:
                return None
            nb = -(-nb // 2)


def _chunks(N, nb):
    for n0 in range(0, N, nb):
        yield n0, min(nb, N - n0)


# -- public backend functions (same signatures as cyconv._cpu): execute a plan -----------------
#
# plan.kernel 'im2col' runs the im2col path, and the direct kernels when one sample's
# columns exceed the workspace limit or an allocation fails (as the plan's reason says);
# 'direct' runs the direct kernels.

def conv_forward(plan, x, w, b):
    """Column side from image side: a convolution's output (+ bias)."""
    p, algorithm = plan.params, plan.kernel
    cp = _xp()
    with _on_device(x):
        x, w, b = _prepare(p, x, w, b)
        N = x.shape[0]
        y = cp.empty((N, p.col_channels) + tuple(p.col_size), x.dtype)
        if y.size == 0:
            return y
        if algorithm == "direct" or not _im2col_forward(p, x, w, b, y):
            _direct(p, "conv_direct_forward", x, w, b, y)
        return y


def conv_backward_input(plan, gy, w, b):
    """Image side from column side: a convolution's input gradient, or a transposed
    convolution's output (+ bias)."""
    p, algorithm = plan.params, plan.kernel
    cp = _xp()
    with _on_device(gy):
        gy, w, b = _prepare(p, gy, w, b)
        N = gy.shape[0]
        gx = cp.empty((N, p.img_channels) + tuple(p.img_size), gy.dtype)
        if gx.size == 0:
            return gx
        if algorithm == "direct" or not _im2col_backward_input(p, gy, w, b, gx):
            _direct(p, "conv_direct_backward_input", gy, w, b, gx)
        return gx


def conv_backward_weight(plan, x, gy):
    """Weight gradient, conv-view shape (C_col, C_img/G, *kernel)."""
    p, algorithm = plan.params, plan.kernel
    cp = _xp()
    with _on_device(x):
        x, gy = _prepare(p, x, gy)
        N = x.shape[0]
        gw = cp.empty((p.col_channels, p.img_channels // p.G) + tuple(p.kernel_size), x.dtype)
        if N == 0:
            gw[...] = 0
            return gw
        if algorithm == "direct" or not _im2col_backward_weight(p, x, gy, gw):
            _direct_backward_weight(p, x, gy, gw)
        return gw


def bias_grad(gy, axes):
    """Sum over ``axes`` in float64, returned in gy's dtype."""
    _xp()
    with _on_device(gy):
        return gy.sum(axis=axes, dtype=np.float64).astype(gy.dtype, copy=False)


# -- direct ------------------------------------------------------------------------------------

def _direct(p, kernel, src, w, b, dst):
    """conv_direct_forward / conv_direct_backward_input: one thread per output element."""
    N = src.shape[0]
    it = _cuda.index_dtype(src.size, dst.size, w.size)
    launch("direct", kernel, src.dtype, it, (src, w, b, dst, N) + p.geometry(),
           total=dst.size)


def _direct_backward_weight(p, x, gy, gw):
    """Deterministic two-pass reduction: per-(weight, slice) block sums, then the slices."""
    cp = _xp()
    s = conv_sizes(p)
    N = x.shape[0]
    n_w = gw.size
    R = N * s["P"]
    S, chunk = _cuda.split_reduction(n_w, R)
    partial = cp.empty(n_w * S, ACC_DTYPES[x.dtype.name])
    it = _cuda.index_dtype(x.size, gy.size, partial.size, R + chunk)
    launch("direct", "conv_direct_backward_weight", x.dtype, it,
           (x, gy, partial, N, S, chunk) + p.geometry(),
           grid=min(n_w * S, _cuda.MAX_GRID), block=REDUCE_BLOCK)
    launch("direct", "reduce_partials", x.dtype, it, (partial, gw, n_w, S), total=n_w)


# -- im2col + GEMM -------------------------------------------------------------------------------

def _im2col_forward(p, x, w, b, y):
    """y = W @ im2col(x) (+ b) per group; False when no workspace could be allocated."""
    cp = _xp()
    s = conv_sizes(p)
    G, Kg, CKK, P, C_col = s["G"], s["Kg"], s["CKK"], s["P"], s["C_col"]
    N = x.shape[0]
    dt = x.dtype
    if is_pointwise(p):
        # y[n, g] = w[g] @ x[n, g]: one batched GEMM, broadcasting w over the batch
        cp.matmul(w.reshape(1, G, Kg, s["Cg"]), x.reshape(N, G, s["Cg"], P),
                  out=y.reshape(N, G, Kg, P))
        if b is not None:
            launch("im2col", "add_bias", dt, _cuda.index_dtype(y.size), (y, b, N, C_col, P),
                   total=y.size)
        return True
    bufs = _im2col_buffers(p, N, dt, "forward")
    if bufs is None:
        return False
    nb, col_buf, tmp_buf = bufs
    w3 = w.reshape(G, Kg, CKK)
    it = _cuda.index_dtype(x.size, y.size, col_buf.size, w.size)
    geom = p.geometry()
    for n0, m in _chunks(N, nb):
        col = col_buf[:s["C_img"] * s["KK"] * m * P]
        launch("im2col", "im2col_nd", dt, it, (x[n0:n0 + m], col, m) + geom, total=col.size)
        col = col.reshape(G, CKK, m * P)
        if m == 1:
            yn = y[n0]
            cp.matmul(w3, col, out=yn.reshape(G, Kg, P))
            if b is not None:
                launch("im2col", "add_bias", dt, it, (yn, b, 1, C_col, P), total=yn.size)
        else:
            tmp = tmp_buf[:C_col * m * P]
            cp.matmul(w3, col, out=tmp.reshape(G, Kg, m * P))
            launch("im2col", "chunk_to_batch", dt, it, (tmp, b, y[n0:n0 + m], m, C_col, P),
                   total=tmp.size)
    return True


def _im2col_backward_input(p, gy, w, b, gx):
    """gx = col2im(W^T @ gy) (+ b) per group; False when no workspace could be allocated."""
    cp = _xp()
    s = conv_sizes(p)
    G, Kg, Cg, CKK, P, C_col = s["G"], s["Kg"], s["Cg"], s["CKK"], s["P"], s["C_col"]
    N = gy.shape[0]
    dt = gy.dtype
    if is_pointwise(p):
        wT = cp.ascontiguousarray(w.reshape(G, Kg, Cg).transpose(0, 2, 1))
        cp.matmul(wT.reshape(1, G, Cg, Kg), gy.reshape(N, G, Kg, P),
                  out=gx.reshape(N, G, Cg, P))
        if b is not None:
            launch("im2col", "add_bias", dt, _cuda.index_dtype(gx.size),
                   (gx, b, N, s["C_img"], s["IMG"]), total=gx.size)
        return True
    bufs = _im2col_buffers(p, N, dt, "backward_input")
    if bufs is None:
        return False
    nb, col_buf, gy_buf = bufs
    wT = cp.ascontiguousarray(w.reshape(G, Kg, CKK).transpose(0, 2, 1))    # (G, CKK, Kg)
    it = _cuda.index_dtype(gy.size, gx.size, col_buf.size, w.size)
    geom = p.geometry()
    for n0, m in _chunks(N, nb):
        gyc = gy[n0:n0 + m]
        if m == 1:
            g3 = gyc.reshape(G, Kg, P)
        else:
            g3 = gy_buf[:C_col * m * P]
            launch("im2col", "batch_to_chunk", dt, it, (gyc, g3, m, C_col, P), total=g3.size)
            g3 = g3.reshape(G, Kg, m * P)
        col = col_buf[:s["C_img"] * s["KK"] * m * P]
        cp.matmul(wT, g3, out=col.reshape(G, CKK, m * P))
        gxc = gx[n0:n0 + m]
        launch("im2col", "col2im_nd", dt, it, (col, b, gxc, m) + geom, total=gxc.size)
    return True


def _im2col_backward_weight(p, x, gy, gw):
    """gw^T = sum over chunks of im2col(x) @ gy^T per group, chunk partials summed in
    order; False when no workspace could be allocated."""
    cp = _xp()
    s = conv_sizes(p)
    G, Kg, CKK, P, C_img, C_col = s["G"], s["Kg"], s["CKK"], s["P"], s["C_img"], s["C_col"]
    N = x.shape[0]
    dt = x.dtype
    bufs = _im2col_buffers(p, N, dt, "backward_weight")
    if bufs is None:
        return False
    nb, col_buf, gyt_buf = bufs
    pointwise = is_pointwise(p)
    part = cp.empty((G, CKK, Kg), dt)
    acc = None
    it = _cuda.index_dtype(x.size, gy.size, 0 if col_buf is None else col_buf.size)
    geom = p.geometry()
    for n0, m in _chunks(N, nb):
        xc = x[n0:n0 + m]
        if pointwise and m == 1:
            col = xc.reshape(G, CKK, P)
        else:
            col = col_buf[:C_img * s["KK"] * m * P]
            if pointwise:
                launch("im2col", "batch_to_chunk", dt, it, (xc, col, m, C_img, P),
                       total=col.size)
            else:
                launch("im2col", "im2col_nd", dt, it, (xc, col, m) + geom, total=col.size)
            col = col.reshape(G, CKK, m * P)
        gyt = gyt_buf[:C_col * m * P]
        launch("im2col", "batch_to_chunk_t", dt, it, (gy[n0:n0 + m], gyt, m, G, Kg, P),
               total=gyt.size)
        cp.matmul(col, gyt.reshape(G, m * P, Kg), out=part)
        if nb >= N:
            acc = part                                  # one chunk: no sum needed
        elif acc is None:
            acc = part.astype(_CHUNK_SUM_DTYPES[dt.name])
        else:
            acc += part
    gw.reshape(G, Kg, CKK)[...] = acc.transpose(0, 2, 1)
    return True




# == pooling, pad, ReLU, linear (the GPU mirror of cyconv._cpu_pool) ==========================

def max_pool_forward(pp, x, return_indices):
    """Max pooling of ``x`` (N, C, *in_size); returns ``(y, indices or None)`` with
    PyTorch's indices (int64 flat index within the input plane)."""
    cp = _xp()
    with _on_device(x):
        x = cp.ascontiguousarray(x)
        y = cp.empty((pp.N, pp.C) + tuple(pp.out_size), x.dtype)
        idx = cp.empty(y.shape, np.int64) if return_indices else None
        it = _cuda.index_dtype(x.size, y.size)
        launch("pool", "max_pool_forward", x.dtype, it,
               (x, y, idx, pp.N * pp.C) + pp.geometry(), total=y.size)
        return y, idx


def max_pool_backward(ps, gy, idx):
    """Gradient of max pooling: ``gy`` (N, C, *out) added into zeros (N, C, *in_size) at
    the flat plane indices ``idx``, plane by plane in output order (deterministic).

    Raises ValueError when an index lies outside the input plane; checking that reads one
    number back from the GPU (the only synchronisation in this module).
    """
    cp = _xp()
    with _on_device(gy):
        gy = cp.ascontiguousarray(gy)
        idx = cp.ascontiguousarray(idx, dtype=np.int64)
        plane = math.prod(ps.in_size)
        gx = cp.zeros((ps.N, ps.C) + tuple(ps.in_size), gy.dtype)
        if gy.size == 0 or gx.size == 0:
            return gx
        bad = int(cp.count_nonzero((idx < 0) | (idx >= plane)))
        if bad:
            raise ValueError(f"{ps.op}: indices hold {bad} value(s) outside the input plane "
                             f"[0, {plane}) of input_size {ps.x_shape}")
        n_out = gy.size // (ps.N * ps.C)
        it = _cuda.index_dtype(gy.size, gx.size)
        launch("pool", "max_pool_backward", gy.dtype, it,
               (gy, idx, gx, ps.N * ps.C, n_out, plane), total=ps.N * ps.C)
        return gx


def _avg_args(pp):
    return int(pp.count_include_pad), int(pp.divisor_override or 0)


def avg_pool_forward(pp, x):
    """Average pooling with PyTorch's divisors (count_include_pad, divisor_override)."""
    cp = _xp()
    with _on_device(x):
        x = cp.ascontiguousarray(x)
        y = cp.empty((pp.N, pp.C) + tuple(pp.out_size), x.dtype)
        inc, div = _avg_args(pp)
        it = _cuda.index_dtype(x.size, y.size, abs(div))
        launch("pool", "avg_pool_forward", x.dtype, it,
               (x, y, pp.N * pp.C, inc, div) + pp.geometry(), total=y.size)
        return y


def avg_pool_backward(pp, gy):
    """Gradient of :func:`avg_pool_forward` (a gather over the windows of each input)."""
    cp = _xp()
    with _on_device(gy):
        gy = cp.ascontiguousarray(gy)
        gx = cp.empty((pp.N, pp.C) + tuple(pp.in_size), gy.dtype)
        inc, div = _avg_args(pp)
        it = _cuda.index_dtype(gy.size, gx.size, abs(div))
        launch("pool", "avg_pool_backward", gy.dtype, it,
               (gy, gx, pp.N * pp.C, inc, div) + pp.geometry(), total=gx.size)
        return gx


def adaptive_avg_pool_forward(ps, x):
    """Adaptive average pooling: output cell o averages [floor(o*in/out), ceil((o+1)*in/out))."""
    cp = _xp()
    with _on_device(x):
        x = cp.ascontiguousarray(x)
        y = cp.empty((ps.N, ps.C) + tuple(ps.out_size), x.dtype)
        it = _cuda.index_dtype(x.size, y.size)
        launch("pool", "adaptive_avg_pool_forward", x.dtype, it,
               (x, y, ps.N * ps.C) + ps.geometry(), total=y.size)
        return y


def adaptive_avg_pool_backward(ps, gy):
    """Gradient of :func:`adaptive_avg_pool_forward` (zero for an empty output size)."""
    cp = _xp()
    with _on_device(gy):
        gy = cp.ascontiguousarray(gy)
        shape = (ps.N, ps.C) + tuple(ps.in_size)
        if gy.size == 0:
            return cp.zeros(shape, gy.dtype)
        gx = cp.empty(shape, gy.dtype)
        it = _cuda.index_dtype(gy.size, gx.size)
        launch("pool", "adaptive_avg_pool_backward", gy.dtype, it,
               (gy, gx, ps.N * ps.C) + ps.geometry(), total=gx.size)
        return gx


def relu_forward(x):
    """max(x, 0) element-wise; NaN and -0.0 pass through, as in PyTorch."""
    cp = _xp()
    with _on_device(x):
        return cp.where(x < 0, cp.zeros((), x.dtype), x)


def relu_backward(gy, y):
    """``gy`` where the ReLU output ``y`` > 0 (or NaN), else 0."""
    cp = _xp()
    with _on_device(gy):
        return cp.where(y <= 0, cp.zeros((), gy.dtype), gy)


def pad_forward(pp, x):
    """``pad`` one padded dim at a time, as a gather through ``pp.source_map``."""
    cp = _xp()
    with _on_device(x):
        cur = cp.ascontiguousarray(x)
        if not pp.padded_dims:
            return cur.copy()
        fill = np.dtype(cur.dtype).type(pp.value)
        for d in pp.padded_dims:
            src = pp.source_map(d)
            shape = list(cur.shape)
            shape[d] = src.shape[0]
            if cur.shape[d] == 0:                 # constant padding of an empty dim
                cur = cp.full(tuple(shape), fill, cur.dtype)
                continue
            valid = src >= 0
            out = cp.take(cur, cp.asarray(np.where(valid, src, 0)), axis=d)
            if not valid.all():
                mshape = [1] * cur.ndim
                mshape[d] = src.shape[0]
                out = cp.where(cp.asarray(valid.reshape(mshape)), out, fill)
            cur = out
        return cp.ascontiguousarray(cur)


def pad_backward(pp, gy):
    """Gradient of :func:`pad_forward`: each input element receives the sum of the
    gradients of the outputs that copy it, in increasing output order (as on the CPU).

    Per padded dim, round r adds every input's r-th reader (a gather through a zero
    slot for inputs with fewer readers), so there are no atomics.
    """
    cp = _xp()
    with _on_device(gy):
        cur = cp.ascontiguousarray(gy)
        for d in pp.padded_dims:
            src = pp.source_map(d)
            n_in = pp.in_shape[d]
            n_out = src.shape[0]
            shape = list(cur.shape)
            shape[d] = n_in
            gx = cp.zeros(tuple(shape), cur.dtype)
            valid = np.flatnonzero(src >= 0)
            if valid.size and gx.size:
                order = valid[np.argsort(src[valid], kind="stable")]
                counts = np.bincount(src[valid], minlength=n_in)
                start = np.concatenate([[0], np.cumsum(counts)[:-1]])
                zshape = list(cur.shape)
                zshape[d] = 1
                padded = cp.concatenate([cur, cp.zeros(tuple(zshape), cur.dtype)], axis=d)
                for r in range(int(counts.max())):
                    pick = np.where(counts > r, order[np.minimum(start + r, order.size - 1)],
                                    n_out)
                    gx += cp.take(padded, cp.asarray(pick), axis=d)
            cur = gx
        return cp.ascontiguousarray(cur)


def linear_forward(lp, x, w, b):
    """``x @ w.T + b`` as one batched GEMM (3-D operands, so float32 stays float32)."""
    cp = _xp()
    with _on_device(x):
        M = math.prod(lp.lead_shape)
        x3 = cp.ascontiguousarray(x).reshape(1, M, lp.in_features)
        wT = cp.ascontiguousarray(cp.asarray(w).T).reshape(1, lp.in_features, lp.out_features)
        y = cp.matmul(x3, wT)
        if b is not None:
            y += b
        return y.reshape(lp.y_shape)


# == batch norm, activations, softmax, dropout, interpolate, adaptive max pooling ==============
# (the GPU mirror of cyconv._cpu_layers; per-channel statistics in the accumulation dtype)

def _acc(dtype):
    return np.dtype(ACC_DTYPES[np.dtype(dtype).name])


def _contiguous(a):
    """``a`` C-contiguous, of its own shape (0-d stays 0-d)."""
    return _xp().ascontiguousarray(a).reshape(a.shape)


def _vec(xp, v, C, fill, acc):
    """A per-channel vector as a contiguous array of the accumulation dtype."""
    if v is None:
        return xp.full(C, fill, acc)
    return xp.ascontiguousarray(v, dtype=acc)


def activation_forward(x, op, alpha):
    """``y = f(x)`` for activation code ``op`` (``eltwise.cu``)."""
    cp = _xp()
    with _on_device(x):
        x = _contiguous(x)
        y = cp.empty_like(x)
        a = cp.asarray([alpha], _acc(x.dtype))
        launch("eltwise", "activation_forward", x.dtype, _cuda.index_dtype(x.size),
               (x, y, a, x.size, op), total=x.size)
        return y


def activation_backward(gy, s, op, alpha):
    """The gradient of activation ``op`` from ``gy`` and ``s`` (input, or output for
    sigmoid and tanh)."""
    cp = _xp()
    with _on_device(gy):
        gy, s = _contiguous(gy), _contiguous(s)
        gx = cp.empty_like(gy)
        a = cp.asarray([alpha], _acc(gy.dtype))
        launch("eltwise", "activation_backward", gy.dtype, _cuda.index_dtype(gy.size),
               (gy, s, gx, a, gy.size, op), total=gy.size)
        return gx


def softmax_forward(x, lines, log):
    """softmax (``log``: log_softmax) over D of ``lines`` = (outer, D, inner), one thread
    per line."""
    cp = _xp()
    with _on_device(x):
        x = _contiguous(x)
        y = cp.empty_like(x)
        outer, D, inner = lines
        launch("eltwise", "softmax_forward", x.dtype, _cuda.index_dtype(x.size),
               (x, y, outer, D, inner, int(log)), total=outer * inner if D else 0)
        return y


def softmax_backward(gy, y, lines, log):
    """The softmax (log_softmax) gradient from its output ``y``."""
    cp = _xp()
    with _on_device(gy):
        gy, y = _contiguous(gy), _contiguous(y)
        gx = cp.empty_like(gy)
        outer, D, inner = lines
        launch("eltwise", "softmax_backward", gy.dtype, _cuda.index_dtype(gy.size),
               (gy, y, gx, outer, D, inner, int(log)), total=outer * inner if D else 0)
        return gx


def dropout_forward(x, p, rng):
    """``(y, mask)`` with CuPy expressions; the samples come from a CuPy generator seeded
    from ``rng`` (cyconv's generator), so masks are reproducible but not the CPU's."""
    cp = _xp()
    with _on_device(x):
        gen = cp.random.default_rng(int(rng.integers(2**63)))
        u = gen.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        mask = u >= p
        scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
        return x * (mask * x.dtype.type(scale)).astype(x.dtype), mask


def dropout_backward(gy, mask, p):
    """``gy * mask / (1 - p)``."""
    with _on_device(gy):
        scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
        return gy * (mask * gy.dtype.type(scale)).astype(gy.dtype)


def _moments(x3):
    """``(mean, var)`` (biased) per channel of ``x3`` (N, C, S), accumulation dtype."""
    cp = _xp()
    with _on_device(x3):
        x3 = _contiguous(x3)
        N, C, S = x3.shape
        acc = _acc(x3.dtype)
        mean, var = cp.zeros(C, acc), cp.zeros(C, acc)
        if C == 0 or N * S == 0:
            return mean, var
        launch("norm", "batch_norm_stats", x3.dtype, _cuda.index_dtype(x3.size),
               (x3, mean, var, N, C, S), grid=min(C, _cuda.MAX_GRID), block=REDUCE_BLOCK)
        return mean, var


def batch_norm_stats(x3, eps):
    """``(mean, invstd)`` per channel of ``x3`` (N, C, S), as the training forward
    computes them."""
    mean, var = _moments(x3)
    with _on_device(x3):
        return mean, 1 / _xp().sqrt(var + eps)


def running_invstd(running_var, eps):
    """``1 / sqrt(running_var + eps)`` in the accumulation dtype."""
    cp = _xp()
    with _on_device(running_var):
        v = running_var.astype(_acc(running_var.dtype))
        return 1 / cp.sqrt(v + eps)


def batch_norm_train(x3, w, b, eps, running_mean=None, running_var=None, momentum=0.0):
    """Training forward: ``(y, mean, invstd)``; the running statistics (or None) are
    updated in place with the unbiased variance."""
    mean, var = _moments(x3)
    with _on_device(x3):
        invstd = 1 / _xp().sqrt(var + eps)
        if running_mean is not None:
            n = x3.shape[0] * x3.shape[2]
            running_mean[...] = momentum * mean + (1 - momentum) * running_mean
            running_var[...] = momentum * (var * (n / (n - 1))) + (1 - momentum) * running_var
        return batch_norm_apply(x3, mean, invstd, w, b), mean, invstd


def batch_norm_apply(x3, mean, invstd, w, b):
    """``(x3 - mean) * invstd * w + b`` per channel."""
    cp = _xp()
    with _on_device(x3):
        x3 = _contiguous(x3)
        N, C, S = x3.shape
        acc = _acc(x3.dtype)
        scale = _vec(cp, invstd, C, 1.0, acc) * _vec(cp, w, C, 1.0, acc)
        y = cp.empty_like(x3)
        launch("norm", "batch_norm_apply", x3.dtype, _cuda.index_dtype(x3.size),
               (x3, y, _vec(cp, mean, C, 0.0, acc), cp.ascontiguousarray(scale),
                _vec(cp, b, C, 0.0, acc), N, C, S), total=x3.size)
        return y


def batch_norm_backward(gy3, x3, mean, invstd, w, train):
    """``(gx, gw, gb)`` of batch norm (see :func:`cyconv._cpu_layers.batch_norm_backward`)."""
    cp = _xp()
    with _on_device(x3):
        gy3, x3 = _contiguous(gy3), _contiguous(x3)
        N, C, S = x3.shape
        acc = _acc(x3.dtype)
        gx = cp.empty_like(gy3)
        if N * S == 0 or C == 0:
            return gx, cp.zeros(C, x3.dtype), cp.zeros(C, x3.dtype)
        m = _vec(cp, mean, C, 0.0, acc)
        inv = _vec(cp, invstd, C, 1.0, acc)
        wv = _vec(cp, w, C, 1.0, acc)
        sg, sgx = cp.empty(C, acc), cp.empty(C, acc)
        it = _cuda.index_dtype(x3.size)
        launch("norm", "batch_norm_backward_reduce", x3.dtype, it,
               (gy3, x3, m, sg, sgx, N, C, S), grid=min(C, _cuda.MAX_GRID), block=REDUCE_BLOCK)
        k1 = wv * inv
        if train:
            k2 = k1 * inv * inv * sgx / (N * S)
            k3 = k1 * sg / (N * S)
        else:
            k2 = k3 = cp.zeros(C, acc)
        launch("norm", "batch_norm_backward_apply", x3.dtype, it,
               (gy3, x3, gx, m, cp.ascontiguousarray(k1, dtype=acc),
                cp.ascontiguousarray(k2, dtype=acc), cp.ascontiguousarray(k3, dtype=acc),
                N, C, S), total=x3.size)
        return gx, (sgx * inv).astype(x3.dtype), sg.astype(x3.dtype)


def _device_maps(m, dev, acc):
    """The arrays of a DimMap on device ``dev`` (copied once per device, then cached)."""
    cache = m.__dict__.setdefault("_gpu", {})
    key = (dev, np.dtype(acc).name)
    got = cache.get(key)
    if got is None:
        cp = _xp()
        w = None if m.w0 is None else (cp.asarray(m.w0, acc), cp.asarray(m.w1, acc))
        got = cache[key] = dict(i0=cp.asarray(m.i0), i1=cp.asarray(m.i1), w=w,
                                ptr=cp.asarray(m.ptr), src=cp.asarray(m.src),
                                wt=cp.asarray(m.wt, acc))
    return got


def interpolate_forward(rp, x):
    """``interpolate`` one dim per pass (``resample.cu``), the last dim first."""
    cp = _xp()
    with _on_device(x):
        cur = _contiguous(x)
        acc = _acc(cur.dtype)
        for d in reversed(range(rp.nd)):
            m = rp.maps[d]
            if m.identity:
                continue
            g = _device_maps(m, _device_id(cur), acc)
            dim = 2 + d
            A, B = math.prod(cur.shape[:dim]), math.prod(cur.shape[dim + 1:])
            y = cp.empty(cur.shape[:dim] + (m.n_out,) + cur.shape[dim + 1:], cur.dtype)
            w0, w1 = g["w"] if g["w"] is not None else (None, None)
            launch("resample", "resample_forward", cur.dtype,
                   _cuda.index_dtype(cur.size, y.size),
                   (cur, y, g["i0"], g["i1"], w0, w1, A, m.n_in, m.n_out, B), total=y.size)
            cur = y
        return cur if cur is not x else cur.copy()


def interpolate_backward(rp, gy):
    """The adjoint of :func:`interpolate_forward` (CSR gathers, the first dim first)."""
    cp = _xp()
    with _on_device(gy):
        cur = _contiguous(gy)
        acc = _acc(cur.dtype)
        for d in range(rp.nd):
            m = rp.maps[d]
            if m.identity:
                continue
            g = _device_maps(m, _device_id(cur), acc)
            dim = 2 + d
            A, B = math.prod(cur.shape[:dim]), math.prod(cur.shape[dim + 1:])
            gx = cp.empty(cur.shape[:dim] + (m.n_in,) + cur.shape[dim + 1:], cur.dtype)
            launch("resample", "resample_backward", cur.dtype,
                   _cuda.index_dtype(cur.size, gx.size),
                   (cur, gx, g["ptr"], g["src"], g["wt"], A, m.n_in, m.n_out, B),
                   total=gx.size)
            cur = gx
        return cur if cur is not gy else cur.copy()


def adaptive_max_pool_forward(ps, x):
    """Adaptive max pooling: ``(y, indices)`` with PyTorch's int64 plane indices."""
    cp = _xp()
    with _on_device(x):
        x = _contiguous(x)
        y = cp.empty((ps.N, ps.C) + tuple(ps.out_size), x.dtype)
        idx = cp.empty(y.shape, np.int64)
        launch("pool", "adaptive_max_pool_forward", x.dtype, _cuda.index_dtype(x.size, y.size),
               (x, y, idx, ps.N * ps.C) + ps.geometry(), total=y.size)
        return y, idx


__all__ = ["require_cupy", "conv_forward", "conv_backward_input", "conv_backward_weight",
           "bias_grad", "get_workspace_limit", "set_workspace_limit", "plan_chunk",
           "is_pointwise", "conv_sizes", "max_pool_forward", "max_pool_backward",
           "avg_pool_forward", "avg_pool_backward", "adaptive_avg_pool_forward",
           "adaptive_avg_pool_backward", "relu_forward", "relu_backward", "pad_forward",
           "pad_backward", "linear_forward", "activation_forward", "activation_backward",
           "softmax_forward", "softmax_backward", "dropout_forward", "dropout_backward",
           "batch_norm_train", "batch_norm_stats", "batch_norm_apply", "batch_norm_backward",
           "running_invstd", "interpolate_forward", "interpolate_backward",
           "adaptive_max_pool_forward"]
