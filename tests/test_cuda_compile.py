"""The CUDA kernels, checked on a machine without a GPU.

Three layers, none of which needs a GPU or CuPy:

1. Host logic of the loader (:mod:`cyconv._cuda`) and the planner of :mod:`cyconv._gpu`:
   template-ids, index-type choice, grid sizes, argument conversion, reduction splits,
   chunk plans, and the argument lists of :data:`cyconv._cuda.SIGNATURES` against the
   kernel declarations in the ``.cu`` sources (CuPy checks none of this at launch).
2. Compilation: every ``.cu`` source, exactly as the loader hands it to NVRTC, is compiled
   with ``nvcc -std=c++17 -arch=sm_90`` with every (dtype, index type) instantiation the
   loader asks for.  Skipped when ``nvcc`` is not on PATH.
3. Host emulation: the same sources are compiled for the CPU with g++ (``__global__`` as
   a plain function, the threads of a block run in turn, as fibers where the kernel has
   ``__syncthreads``; binary16 through ``_Float16``) and the whole GPU backend (:mod:`cyconv._gpu`,
   with NumPy standing in for CuPy and these kernels for the GPU's) runs the public API
   against the float64 reference: every conv op and gradient, both algorithms, float16,
   float32 and float64, 32- and 64-bit indices, chunked workspaces.  Skipped when g++
   cannot build it.  This checks the kernels' index arithmetic and the backend's
   layouts and launches; it cannot check CuPy, cuBLAS, NVRTC or the hardware, which
   ``tests/test_gpu.py`` does on a GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cyconv
from cyconv import _activation, _cuda, _dispatch, _gpu, _params, _pool, _runtime
from cyconv._params import conv_params
from conftest import (SPECIAL_CONV_CASES, ConvCase, ConvTransposeCase, assert_close,
                      conv_grid, ref_conv, ref_conv_input_grad, ref_conv_transpose,
                      ref_conv_transpose_input_grad, ref_conv_transpose_weight_grad,
                      ref_conv_weight_grad)

FAMILIES = list(_cuda.SIGNATURES)
CUDA_DIR = os.path.dirname(_cuda.__file__)


# == 1. host logic ===========================================================================

def test_importing_cyconv_does_not_import_cupy():
    code = "import sys, cyconv, cyconv._gpu, cyconv._cuda; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_require_cupy_without_cupy_names_the_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # makes `import cupy` fail
    monkeypatch.setitem(_cuda._usable, "cupy", None)
    with pytest.raises(ImportError, match=r"pip install 'cyconv\[cuda12\]' \(CUDA 12\) or "
                                          r"pip install 'cyconv\[cuda13\]'"):
        _gpu.require_cupy()


def test_require_cupy_without_a_device(monkeypatch):
    class Runtime:
        @staticmethod
        def getDeviceCount():
            return 0

    fake = type(sys)("cupy")
    fake.__version__ = "0"
    fake.cuda = type(sys)("cupy.cuda")
    fake.cuda.runtime = Runtime
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(_cuda._usable, "cupy", None)
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        _gpu.require_cupy()


def test_name_expressions_cover_every_kernel_dtype_and_index_type():
    names = _cuda.name_expressions("im2col")
    assert "im2col_nd<float, int>" in names
    assert "col2im_nd<cyc_half, long long>" in names
    assert "chunk_to_batch<double, int>" in names
    for fam in FAMILIES:
        assert len(_cuda.name_expressions(fam)) == len(_cuda.SIGNATURES[fam]) * 3 * 2


def test_index_dtype_is_32_bit_only_well_below_2_31():
    assert _cuda.index_dtype(10, 2**20) == np.int32
    assert _cuda.index_dtype() == np.int32
    assert _cuda.index_dtype(2**31 - 1) == np.int64
    # the grid-stride slack: i + stride must not overflow int
    assert _cuda.index_dtype(2**31 - _cuda.MAX_GRID * _cuda.BLOCK) == np.int64
    assert _cuda.index_dtype(2**31 - _cuda.MAX_GRID * _cuda.BLOCK - 1) == np.int32
    assert _cuda.index_dtype(2**40, 3) == np.int64


def test_grid_size_is_bounded_and_positive():
    assert _cuda.grid_size(1) == 1
    assert _cuda.grid_size(256) == 1
    assert _cuda.grid_size(257) == 2
    assert _cuda.grid_size(2**40) == _cuda.MAX_GRID
    assert _cuda.MAX_GRID <= 2**31 - 1      # 1-D grid limit


def test_convert_args_types_every_scalar_exactly():
    sig = ("const T*", "const T*?", "T*", "I", "A*")
    x = np.zeros(3, np.float16)
    acc = np.zeros(2, np.float32)
    out = _cuda.convert_args("k", sig, (x, None, x, 7, acc), np.float16, np.int32)
    assert out[0] is x and out[2] is x and out[4] is acc
    assert type(out[1]) is np.uint64 and out[1] == 0        # null pointer, 8 bytes
    assert type(out[3]) is np.int32 and out[3] == 7
    out = _cuda.convert_args("k", sig, (x, x, x, np.int64(2**40), acc), np.float16, np.int64)
    assert type(out[3]) is np.int64 and out[3] == 2**40


@pytest.mark.parametrize("bad, match", [
    ((np.zeros(3, np.float32), None, np.zeros(3, np.float32), 1), "must be a float64 array"),
    ((np.zeros(3), np.zeros(3), np.zeros(3), 1.0), "must be an integer"),
    ((np.zeros(3), np.zeros(3), np.zeros(3), True), "must be an integer"),
    ((np.zeros(3), np.zeros(3), np.zeros(3), 2**31), "does not fit int32"),
    ((None, None, np.zeros(3), 1), "may not be null"),
    ((np.zeros((3, 4))[:, ::2], None, np.zeros(3), 1), "C-contiguous"),
    ((np.zeros(3), None, np.zeros(3)), "expected 4 arguments"),
])
def test_convert_args_refuses_what_cupy_would_misread(bad, match):
    sig = ("const T*", "const T*?", "T*", "I")
    with pytest.raises((TypeError, ValueError), match=match):
        _cuda.convert_args("k", sig, bad, np.float64, np.int32)


@pytest.mark.parametrize("n_out, length", [(1, 1), (9, 200_000), (36864, 200_704),
                                           (5, 10**9), (10**6, 7), (3, 4097)])
def test_split_reduction_covers_the_range_with_nonempty_slices(n_out, length):
    S, chunk = _cuda.split_reduction(n_out, length)
    assert S >= 1 and chunk >= 1
    assert (S - 1) * chunk < length <= S * chunk     # every slice non-empty, all covered
    assert n_out * S <= max(n_out, 4096 + n_out)      # bounded partial buffer


def test_plan_chunk():
    # fits entirely
    assert _gpu.plan_chunk(64, 100, 0, 10**6, 10) == 64
    # 64 samples, 10 fit: 7 chunks of at most 10, evened to ceil(64 / 7) = 10
    assert _gpu.plan_chunk(64, 100, 0, 1000, 10) == 10
    # 17 samples, 16 fit: 2 chunks of 9 rather than 16 + 1
    assert _gpu.plan_chunk(17, 100, 0, 1600, 10) == 9
    # not even one sample fits: one at a time
    assert _gpu.plan_chunk(5, 100, 0, 50, 10) == 1
    assert _gpu.plan_chunk(5, 100, 10**6, 10**6, 10) == 1
    # nb * P stays a valid 32-bit GEMM dimension
    assert _gpu.plan_chunk(10**6, 1, 0, 10**12, 2**20) * 2**20 <= 2**31 - 1


def test_pointwise_detection():
    p = conv_params("conv2d", 2, (2, 4, 5, 5), (6, 4, 1, 1))
    assert _gpu.is_pointwise(p)
    for kw in (dict(stride=2), dict(padding=1), dict(padding=((0, 1), (0, 0)))):
        assert not _gpu.is_pointwise(conv_params("conv2d", 2, (2, 4, 5, 5), (6, 4, 1, 1), **kw))
    assert not _gpu.is_pointwise(conv_params("conv2d", 2, (2, 4, 5, 5), (6, 4, 3, 1)))


def test_workspace_limit_setting(monkeypatch):
    monkeypatch.setitem(_runtime._state["workspace"], "cuda", None)
    monkeypatch.setenv("CYCONV_GPU_WORKSPACE_MB", "2")
    assert _gpu.get_workspace_limit() == 2 * 2**20
    _gpu.set_workspace_limit(12345)
    assert _gpu.get_workspace_limit() == 12345
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            _gpu.set_workspace_limit(bad)
    monkeypatch.setitem(_runtime._state["workspace"], "cuda", None)
    monkeypatch.setenv("CYCONV_GPU_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match="CYCONV_GPU_WORKSPACE_MB"):
        _gpu.get_workspace_limit()


# -- the .cu declarations against SIGNATURES ----------------------------------------------------

def _kernel_decls(text):
    """{name: [parameter strings]} of every __global__ function in ``text``."""
    decls = {}
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        params = " ".join(text[m.end():i - 1].split())
        decls[m.group(1)] = [q.strip() for q in params.split(",")]
    return decls


def _param_kind(param):
    macros = {"CYC_GEOM_PARAMS": 21, "CYC_POOL_PARAMS": 18, "CYC_SHAPE_PARAMS": 6}
    if param in macros:
        return ("I",) * macros[param]
    param = param.replace("__restrict__", "").split()
    param = " ".join(param[:-1])       # drop the parameter name
    kinds = {"const T*": "const T*", "T*": "T*", "const I": "I", "I": "I",
             "typename Acc<T>::type*": "A*", "const typename Acc<T>::type*": "const A*",
             "long long*": "i64*", "const long long*": "const i64*"}
    return (kinds[param.replace(" *", "*")],)


@pytest.mark.parametrize("family", FAMILIES)
def test_signatures_match_the_kernel_declarations(family):
    decls = _kernel_decls(_cuda.source(family))
    assert set(decls) == set(_cuda.SIGNATURES[family])
    for name, params in decls.items():
        kinds = sum((_param_kind(q) for q in params), ())
        declared = tuple(k.rstrip("?") for k in _cuda.SIGNATURES[family][name])
        assert kinds == declared, name


def test_reduce_block_matches_the_source():
    m = re.search(r"#define CYC_REDUCE_BLOCK (\d+)", _cuda.source("direct"))
    assert int(m.group(1)) == _cuda.REDUCE_BLOCK
    m = re.search(r"#define CYC_NORM_BLOCK (\d+)", _cuda.source("norm"))
    assert int(m.group(1)) == _cuda.REDUCE_BLOCK
    assert _cuda.REDUCE_BLOCK & (_cuda.REDUCE_BLOCK - 1) == 0     # a power of two


def test_source_is_self_contained():
    for fam in FAMILIES:
        src = _cuda.source(fam)
        assert not re.search(r"^\s*#\s*include", src, re.M)   # NVRTC gets no include path
        assert "cyc_half" in src and "CYC_GRID_STRIDE" in src


# == 2. nvcc ====================================================================================

NVCC = shutil.which("nvcc")


def _instantiation_unit(family):
    """The loader's source plus a table that takes the address of every instantiation the
    loader asks NVRTC for (which makes nvcc compile each one)."""
    table = ",\n".join(f"    (void*)&{e}" for e in _cuda.name_expressions(family))
    return f"{_cuda.source(family)}\n\nvoid* cyconv_instantiations[] = {{\n{table}\n}};\n"


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_compile_with_nvcc(family, tmp_path):
    src = tmp_path / f"{family}.cu"
    src.write_text(_instantiation_unit(family))
    res = subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", "-Werror", "all-warnings", "-c",
                          str(src), "-o", str(tmp_path / f"{family}.o")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr


# == 3. host emulation ==========================================================================

_PRELUDE = r"""
#include <ucontext.h>
#include <cstring>
#include <functional>
#include <vector>
#define CYC_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define __shared__ static   /* blocks run one at a time */
struct cyc_dim3 { unsigned int x, y, z; };
static cyc_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static cyc_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

// Kernels with barriers run each CUDA thread of a block as a fiber; __syncthreads()
// hands control back to the scheduler, which resumes every fiber of the block in turn,
// so each round of the scheduler is one barrier phase.
static ucontext_t cyc_main;
static std::vector<ucontext_t> cyc_fiber;
static std::vector<char> cyc_stack;
static std::vector<char> cyc_done;
static std::function<void()> cyc_body;
static unsigned cyc_current = 0;
static const size_t CYC_STACK = 1 << 16;

static inline void __syncthreads() { swapcontext(&cyc_fiber[cyc_current], &cyc_main); }
static inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
static inline double __longlong_as_double(long long v) {
    double d; std::memcpy(&d, &v, 8); return d;
}
static void cyc_entry() { cyc_body(); cyc_done[cyc_current] = 1; }

template <class F>
static void cyc_launch(unsigned grid, unsigned block, bool fibers, F f) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        if (!fibers) {
            for (unsigned t = 0; t < block; ++t) {
                threadIdx = {t, 0, 0};
                f();
            }
            continue;
        }
        cyc_body = f;
        cyc_fiber.assign(block, ucontext_t());
        cyc_stack.resize(block * CYC_STACK);
        cyc_done.assign(block, 0);
        for (unsigned t = 0; t < block; ++t) {
            getcontext(&cyc_fiber[t]);
            cyc_fiber[t].uc_stack.ss_sp = &cyc_stack[t * CYC_STACK];
            cyc_fiber[t].uc_stack.ss_size = CYC_STACK;
            cyc_fiber[t].uc_link = &cyc_main;
            makecontext(&cyc_fiber[t], cyc_entry, 0);
        }
        for (bool running = true; running;) {
            running = false;
            for (unsigned t = 0; t < block; ++t) {
                if (cyc_done[t]) continue;
                cyc_current = t;
                threadIdx = {t, 0, 0};
                swapcontext(&cyc_main, &cyc_fiber[t]);
                running = running || !cyc_done[t];
            }
        }
    }
}
"""

_CAST = {"const T*": "*(const T* const*)", "const T*?": "*(const T* const*)",
         "T*": "*(T* const*)", "A*": "*(A* const*)", "const A*": "*(const A* const*)",
         "const A*?": "*(const A* const*)",
         "i64*": "*(long long* const*)", "i64*?": "*(long long* const*)",
         "const i64*": "*(const long long* const*)", "I": "*(const I*)"}
#: the emulator runs at most this many blocks: the kernels are grid-size agnostic
EMU_MAX_GRID = 2


def _bodies_with_barriers(text):
    out = set()
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(", text):
        start = text.index("{", m.end())
        depth, i = 1, start + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if "__syncthreads" in text[start:i]:
            out.add(m.group(1))
    return out


def _emulation_unit(family):
    src = _cuda.source(family)
    barriers = _bodies_with_barriers(src)
    wrappers = []
    for kernel, sig in _cuda.SIGNATURES[family].items():
        for tname, ctype in _cuda.CTYPES.items():
            for iname, itype in _cuda.INDEX_CTYPES.items():
                args = ", ".join(f"{_CAST[k]}args[{j}]" for j, k in enumerate(sig))
                wrappers.append(
                    f'extern "C" void emu_{kernel}_{tname}_{iname}(unsigned g, unsigned b, '
                    f"void** args) {{\n  using T = {ctype}; using I = {itype}; "
                    f"using A = typename Acc<T>::type; (void)sizeof(A);\n"
                    f"  cyc_launch(g, b, {str(kernel in barriers).lower()}, [&] {{ "
                    f"{kernel}<T, I>({args}); }});\n}}\n")
    return _PRELUDE + src + "\n" + "".join(wrappers)


@pytest.fixture(scope="session")
def emulated_kernels(tmp_path_factory):
    """{family: ctypes.CDLL} of the CUDA sources built for the CPU."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not on PATH")
    out = tmp_path_factory.mktemp("cuda_emulation")
    libs = {}
    for fam in FAMILIES:
        src = out / f"{fam}.cpp"
        src.write_text(_emulation_unit(fam))
        so = out / f"{fam}.so"
        res = subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC",
                              "-Wall", "-Wno-unused-variable", str(src), "-o", str(so)],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0 and "_Float16" in res.stderr:
            pytest.skip("this g++ has no _Float16")
        assert res.returncode == 0, res.stderr[-4000:]
        libs[fam] = ctypes.CDLL(str(so))
    return libs


class Emulator:
    """Stands in for cyconv._cuda.launch: checks what CuPy would pass, then runs the
    CPU build of the kernel."""

    def __init__(self, libs):
        self.libs = libs
        self.calls = []

    def launch(self, family, kernel, dtype, idx_dtype, args, *, total=None, grid=None,
               block=_cuda.BLOCK):
        if grid is None:
            if total <= 0:
                return
            grid = _cuda.grid_size(total, block)
        assert 1 <= grid <= _cuda.MAX_GRID and block in (_cuda.BLOCK, _cuda.REDUCE_BLOCK)
        sig = _cuda.SIGNATURES[family][kernel]
        cargs = _cuda.convert_args(f"{family}.{kernel}", sig, args, dtype, idx_dtype)
        acc = np.dtype(_cuda.ACC_DTYPES[np.dtype(dtype).name])
        keep, ptrs = [], []
        for kind, a in zip(sig, cargs):
            # what the GPU reads: a pointer (8 bytes) or the scalar's exact bytes
            if kind == "I":
                assert type(a) is np.dtype(idx_dtype).type, (kernel, type(a))
                buf = ctypes.create_string_buffer(a.tobytes(), a.nbytes)
            else:
                if isinstance(a, np.uint64):
                    assert kind.endswith("?") and a == 0
                    ptr = 0
                else:
                    want = {"T": np.dtype(dtype), "A": acc, "i": np.dtype(np.int64)}[
                        kind.replace("const ", "")[0]]
                    assert isinstance(a, np.ndarray) and a.dtype == want, (kernel, kind)
                    ptr = a.ctypes.data
                buf = ctypes.c_uint64(ptr)
            keep.append(buf)
            ptrs.append(ctypes.addressof(buf))
        argv = (ctypes.c_void_p * len(ptrs))(*ptrs)
        fn = getattr(self.libs[family], f"emu_{kernel}_{np.dtype(dtype).name}_"
                                        f"{np.dtype(idx_dtype).name}")
        self.calls.append((kernel, np.dtype(idx_dtype).name))
        fn(ctypes.c_uint(min(grid, EMU_MAX_GRID)), ctypes.c_uint(block), argv)


@pytest.fixture
def emulated_gpu(emulated_kernels, monkeypatch):
    """The public API with NumPy arrays routed through the GPU backend and the emulated
    kernels (float16 accepted, as for CuPy arrays)."""
    emu = Emulator(emulated_kernels)
    monkeypatch.setattr(_gpu, "launch", emu.launch)
    monkeypatch.setattr(_gpu, "_xp", lambda: np)
    monkeypatch.setattr(_gpu, "_on_device", lambda a: contextlib.nullcontext())
    monkeypatch.setattr(_gpu, "_device_id", lambda a: 0)
    monkeypatch.setattr(_gpu, "_oom_errors", lambda: (MemoryError,))
    monkeypatch.setattr(_dispatch, "array_module_name", lambda op, **arrays: "cupy")
    monkeypatch.setattr(_pool, "array_module_name", lambda op, **arrays: "cupy")
    monkeypatch.setattr(_pool, "_CPU_DTYPES", frozenset())   # no NumPy fast path
    monkeypatch.setattr(_activation, "_CPU_DTYPES", frozenset())
    _dispatch.clear_cache()         # plans made for the CPU must not be reused here
    yield emu
    _dispatch.clear_cache()


@contextlib.contextmanager
def on_cpu(monkeypatch):
    """Inside an emulated test: route NumPy arrays to the CPU backend again."""
    with monkeypatch.context() as m:
        m.setattr(_dispatch, "array_module_name", _params.array_module_name)
        m.setattr(_pool, "array_module_name", _params.array_module_name)
        _dispatch.clear_cache()
        yield
        _dispatch.clear_cache()


EMU_DTYPES = [np.float16, np.float32, np.float64]
EMU_CONV_CASES = conv_grid()[::3] + SPECIAL_CONV_CASES
EMU_CONVT_CASES = [
    ConvTransposeCase(1, 2, 4, 6, 2, (7,), (3,), stride=2, padding=1, output_padding=1,
                      bias=True),
    ConvTransposeCase(2, 2, 3, 4, 1, (5, 4), (3, 2), stride=(2, 3), padding=(1, 0),
                      output_padding=(1, 2), dilation=1, bias=True),
    ConvTransposeCase(2, None, 4, 4, 4, (5, 6), (3, 3), stride=2, padding=1, dilation=2,
                      output_padding=1),
    ConvTransposeCase(3, 1, 4, 2, 2, (3, 4, 3), (2, 3, 2), stride=(1, 2, 2), padding=(0, 1, 1),
                      dilation=(2, 1, 1), bias=True),
    ConvTransposeCase(2, 2, 6, 3, 1, (4, 5), (1, 1), bias=True),               # 1x1
    ConvTransposeCase(2, 0, 4, 6, 2, (4, 5), (3, 3), stride=2, bias=True),     # N = 0
]


def _tol_inputs(a, dtype):
    """The float64 values of an array as rounded to ``dtype``."""
    return None if a is None else np.asarray(a, dtype).astype(np.float64)


def _check(actual, expected, dtype, what):
    if np.dtype(dtype) == np.float16:
        # fp16 output rounding (2**-11 relative) plus fp16 GEMM partials
        actual = np.asarray(actual)
        assert actual.dtype == np.float16, what
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
        np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=2e-3,
                                   atol=2e-3 * scale, err_msg=what)
    else:
        assert_close(actual, expected, dtype, what=what)


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", EMU_CONV_CASES, ids=[c.id for c in EMU_CONV_CASES])
def test_emulated_conv_and_gradients(case, dtype, algorithm, emulated_gpu):
    x, w, b = case.arrays(np, dtype)
    gy = case.grad_output(dtype)
    x64, w64, b64, gy64 = (_tol_inputs(a, dtype) for a in (x, w, b, gy))
    nd = case.nd
    kw = case.kwargs
    y = getattr(cyconv, case.op)(x, w, b, **kw, algorithm=algorithm)
    _check(y, ref_conv(case, x64, w64, b64), dtype, f"{case.id} forward")
    grad = cyconv.grad
    gx = getattr(grad, f"conv{nd}d_input")(case.x_shape, w, gy, **kw, algorithm=algorithm)
    _check(gx, ref_conv_input_grad(case, w64, gy64), dtype, f"{case.id} input grad")
    gw = getattr(grad, f"conv{nd}d_weight")(x, case.w_shape, gy, **kw, algorithm=algorithm)
    _check(gw, ref_conv_weight_grad(case, x64, gy64), dtype, f"{case.id} weight grad")
    if b is not None:
        gb = grad.bias(gy, channel_axis=1 if case.batched else 0)
        axes = tuple(a for a in range(gy64.ndim) if a != (1 if case.batched else 0))
        _check(gb, gy64.sum(axis=axes), dtype, f"{case.id} bias grad")


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", EMU_CONVT_CASES, ids=[c.id for c in EMU_CONVT_CASES])
def test_emulated_conv_transpose_and_gradients(case, dtype, algorithm, emulated_gpu):
    x, w, b = case.arrays(np, dtype)
    gy = case.grad_output(dtype)
    x64, w64, b64, gy64 = (_tol_inputs(a, dtype) for a in (x, w, b, gy))
    nd = case.nd
    kw = case.kwargs
    y = getattr(cyconv, case.op)(x, w, b, **kw, algorithm=algorithm)
    _check(y, ref_conv_transpose(case, x64, w64, b64), dtype, f"{case.id} forward")
    gx = getattr(cyconv.grad, f"conv_transpose{nd}d_input")(case.x_shape, w, gy, **kw,
                                                            algorithm=algorithm)
    _check(gx, ref_conv_transpose_input_grad(case, w64, gy64), dtype, f"{case.id} input grad")
    gw = getattr(cyconv.grad, f"conv_transpose{nd}d_weight")(x, case.w_shape, gy, **kw,
                                                             algorithm=algorithm)
    _check(gw, ref_conv_transpose_weight_grad(case, x64, gy64), dtype,
           f"{case.id} weight grad")


LONG_CASES = [
    ConvCase(2, 3, 4, 6, 2, (7, 9), (3, 2), stride=(2, 1), padding=((0, 1), (2, 0)),
             dilation=(1, 2), bias=True),
    ConvCase(3, 2, 3, 3, 3, (5, 6, 7), (3, 3, 3), padding=1, bias=True),
    ConvCase(1, 2, 2, 4, 1, (17,), (1,), bias=True),
]


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("case", LONG_CASES, ids=[c.id for c in LONG_CASES])
def test_emulated_64_bit_indices(case, algorithm, emulated_gpu, monkeypatch):
    """The `long long` instantiations compute the same as the `int` ones."""
    x, w, b = case.arrays(np, np.float64)
    gy = case.grad_output(np.float64)
    fns = (lambda: getattr(cyconv, case.op)(x, w, b, **case.kwargs, algorithm=algorithm),
           lambda: getattr(cyconv.grad, f"conv{case.nd}d_input")(
               case.x_shape, w, gy, **case.kwargs, algorithm=algorithm),
           lambda: getattr(cyconv.grad, f"conv{case.nd}d_weight")(
               x, case.w_shape, gy, **case.kwargs, algorithm=algorithm))
    short = [f() for f in fns]
    assert {i for _, i in emulated_gpu.calls} == {"int32"}
    monkeypatch.setattr(_cuda, "index_dtype", lambda *extents: np.dtype(np.int64))
    emulated_gpu.calls.clear()
    long = [f() for f in fns]
    assert {i for _, i in emulated_gpu.calls} == {"int64"}
    for a, c in zip(short, long):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("case", LONG_CASES[:2] + [
    ConvCase(2, 5, 4, 6, 1, (6, 5), (1, 1), bias=True)], ids=lambda c: c.id)
def test_emulated_workspace_chunks(case, emulated_gpu, monkeypatch):
    """Caps that fit one or two samples' columns change only the GEMM shapes (and so the
    rounding); a cap below one sample runs the direct kernels.  Every result agrees with
    the single-chunk one and with the reference."""
    case = dataclasses.replace(case, N=5)
    x, w, b = case.numpy_arrays(np.float64)
    gy = case.grad_output(np.float64)
    kw = case.kwargs
    p = conv_params(case.op, case.nd, x.shape, w.shape, **kw)
    s = _gpu.conv_sizes(p)
    per_sample = (s["C_img"] * s["KK"] + s["C_col"]) * s["P"] * 8
    fixed = s["G"] * s["CKK"] * s["Kg"] * 16

    def run():
        emulated_gpu.calls.clear()
        out = (getattr(cyconv, case.op)(x, w, b, **kw, algorithm="im2col"),
               getattr(cyconv.grad, f"conv{case.nd}d_input")(x.shape, w, gy, **kw,
                                                             algorithm="im2col"),
               getattr(cyconv.grad, f"conv{case.nd}d_weight")(x, w.shape, gy, **kw,
                                                              algorithm="im2col"))
        return out, [k for k, _ in emulated_gpu.calls]

    monkeypatch.setitem(_runtime._state["workspace"], "cuda", 1 << 30)
    whole, _ = run()
    for cap in (per_sample + fixed, 2 * per_sample + fixed, 1):
        monkeypatch.setitem(_runtime._state["workspace"], "cuda", cap)
        part, kernels = run()
        direct = "conv_direct_forward" in kernels
        assert direct == (cap == 1 and not _gpu.is_pointwise(p)), (cap, kernels)
        if cap == per_sample + fixed:      # one sample per chunk in all three ops
            assert kernels.count("batch_to_chunk_t") == 5, kernels
        for a, c, what in zip(part, whole, ("forward", "input grad", "weight grad")):
            assert_close(a, c, np.float64, kind="parity", what=f"cap {cap} {what}")
        assert_close(part[2], ref_conv_weight_grad(case, x, gy), np.float64,
                     what=f"cap {cap} weight grad vs reference")


def test_emulated_out_of_memory_halves_then_falls_back(emulated_gpu, monkeypatch):
    """Column buffers that cannot be allocated: smaller chunks, then the direct kernels."""
    case = ConvCase(2, 4, 3, 4, 1, (7, 9), (3, 3), padding=1, bias=True)
    x, w, b = case.numpy_arrays(np.float64)
    expected = ref_conv(case, x, w, b)
    col_per_sample = 3 * 9 * 7 * 9

    class TightNumpy:
        def __init__(self, limit):
            self.limit = limit

        def __getattr__(self, name):
            return getattr(np, name)

        def empty(self, shape, dtype=float):
            if int(np.prod(shape)) > self.limit:
                raise MemoryError("emulated out of memory")
            return np.empty(shape, dtype)

    for limit, kernels in ((2 * col_per_sample, {"im2col_nd"}),
                           (col_per_sample - 1, {"conv_direct_forward"})):
        monkeypatch.setattr(_gpu, "_xp", lambda limit=limit: TightNumpy(limit))
        emulated_gpu.calls.clear()
        y = cyconv.conv2d(x, w, b, padding=1, algorithm="im2col")
        assert_close(y, expected, np.float64, what=f"limit {limit}")
        assert kernels <= {k for k, _ in emulated_gpu.calls}


def test_emulated_direct_weight_grad_is_deterministic_and_grid_agnostic(emulated_gpu,
                                                                          monkeypatch):
    # depthwise; R = N * P = 2523 terms per weight, cut into 2 uneven slices
    case = ConvCase(2, 3, 8, 8, 8, (29, 29), (3, 3), padding=1)
    assert _cuda.split_reduction(72, 2523) == (2, 1262)
    x, _, _ = case.numpy_arrays(np.float32)
    gy = case.grad_output(np.float32)
    gw = [cyconv.grad.conv2d_weight(x, case.w_shape, gy, padding=1, groups=8,
                                    algorithm="direct") for _ in range(2)]
    monkeypatch.setattr(sys.modules[__name__], "EMU_MAX_GRID", 1)
    gw.append(cyconv.grad.conv2d_weight(x, case.w_shape, gy, padding=1, groups=8,
                                        algorithm="direct"))
    assert gw[0].tobytes() == gw[1].tobytes() == gw[2].tobytes()
    assert_close(gw[0], ref_conv_weight_grad(case, x.astype(np.float64),
                                             gy.astype(np.float64)), np.float32)


@pytest.mark.parametrize("case", LONG_CASES + EMU_CONV_CASES[:6], ids=lambda c: c.id)
def test_emulated_direct_weight_grad_with_many_uneven_slices(case, emulated_gpu,
                                                             monkeypatch):
    split = _cuda.split_reduction
    monkeypatch.setattr(_cuda, "split_reduction",
                        lambda n, length: split(n, length, target_items=10**6, min_chunk=50))
    x, w, b = case.arrays(np, np.float64)
    gy = case.grad_output(np.float64)
    gw = getattr(cyconv.grad, f"conv{case.nd}d_weight")(x, case.w_shape, gy, **case.kwargs,
                                                        algorithm="direct")
    assert_close(gw, ref_conv_weight_grad(case, x, gy), np.float64, what=case.id)



# -- pooling, pad, ReLU, linear through the emulated GPU backend ------------------------------

POOL_CASES = [
    # nd, x shape, kernel, stride, padding, dilation, ceil_mode
    (1, (2, 3, 17), 3, 2, 1, 1, False),
    (1, (1, 2, 10), 4, 3, 2, 2, True),
    (2, (2, 3, 9, 11), (3, 2), (2, 1), (1, 0), 1, True),
    (2, (3, 10, 12), 2, None, 0, 1, False),                 # unbatched, stride = kernel
    (2, (2, 2, 8, 7), 3, 1, 1, (2, 1), False),
    (3, (1, 2, 5, 6, 7), (2, 3, 2), (2, 2, 1), (1, 1, 0), 1, True),
    (2, (0, 3, 6, 6), 2, 2, 0, 1, False),                   # N = 0
]


def _pool_id(c):
    return f"{c[0]}d-x{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-ceil{c[6]}".replace(" ", "")


def _rounded(shape, dtype, seed, nan=False):
    x = np.random.default_rng(seed).uniform(-2, 2, shape).astype(dtype)
    if nan and x.size > 4:
        x.reshape(-1)[[1, x.size // 2]] = np.nan
    return x


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", POOL_CASES, ids=[_pool_id(c) for c in POOL_CASES])
def test_emulated_max_pool(case, dtype, emulated_gpu, monkeypatch):
    nd, shape, k, s, p, d, ceil = case
    x = _rounded(shape, dtype, 0, nan=True)
    fn = getattr(cyconv, f"max_pool{nd}d")
    gfn = getattr(cyconv.grad, f"max_pool{nd}d")
    y, idx = fn(x, k, s, p, d, ceil, return_indices=True)
    gy = _rounded(y.shape, dtype, 1)
    gx = gfn(gy, idx, x.shape)
    with on_cpu(monkeypatch):
        y64, idx64 = fn(x.astype(np.float64), k, s, p, d, ceil, return_indices=True)
        gx64 = gfn(gy.astype(np.float64), idx64, x.shape)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx64)
    np.testing.assert_array_equal(y.astype(np.float64), y64)      # a max is exact
    _check(gx, gx64, dtype, "max_pool grad")
    bad = idx.copy()
    if bad.size:
        bad.reshape(-1)[0] = np.prod(shape[-nd:])
        with pytest.raises(ValueError, match="outside the input plane"):
            gfn(gy, bad, x.shape)


AVG_OPTIONS = [dict(count_include_pad=True), dict(count_include_pad=False),
               dict(divisor_override=3), dict(divisor_override=-2)]


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[5] == 1],
                         ids=[_pool_id(c) for c in POOL_CASES if c[5] == 1])
def test_emulated_avg_pool(case, dtype, emulated_gpu, monkeypatch):
    nd, shape, k, s, p, _, ceil = case
    x = _rounded(shape, dtype, 2)
    for opts in AVG_OPTIONS:
        if nd == 1 and "divisor_override" in opts:
            continue
        y = getattr(cyconv, f"avg_pool{nd}d")(x, k, s, p, ceil, **opts)
        gy = _rounded(y.shape, dtype, 3)
        gx = getattr(cyconv.grad, f"avg_pool{nd}d")(gy, x.shape, k, s, p, ceil, **opts)
        with on_cpu(monkeypatch):
            y64 = getattr(cyconv, f"avg_pool{nd}d")(x.astype(np.float64), k, s, p, ceil,
                                                   **opts)
            gx64 = getattr(cyconv.grad, f"avg_pool{nd}d")(gy.astype(np.float64), x.shape, k,
                                                         s, p, ceil, **opts)
        _check(y, y64, dtype, f"avg_pool {opts}")
        _check(gx, gx64, dtype, f"avg_pool grad {opts}")


ADAPTIVE_CASES = [(1, (2, 3, 17), 5), (1, (1, 2, 4), 7), (2, (2, 3, 9, 11), (4, None)),
                  (2, (3, 10, 12), (1, 1)), (2, (2, 2, 7, 5), (0, 3)),
                  (3, (1, 2, 5, 6, 7), (2, 3, 4))]


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_emulated_adaptive_avg_pool(case, dtype, emulated_gpu, monkeypatch):
    nd, shape, out = case
    x = _rounded(shape, dtype, 4)
    y = getattr(cyconv, f"adaptive_avg_pool{nd}d")(x, out)
    gy = _rounded(y.shape, dtype, 5)
    gx = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")(gy, x.shape)
    with on_cpu(monkeypatch):
        y64 = getattr(cyconv, f"adaptive_avg_pool{nd}d")(x.astype(np.float64), out)
        gx64 = getattr(cyconv.grad, f"adaptive_avg_pool{nd}d")(gy.astype(np.float64),
                                                              x.shape)
    _check(y, y64, dtype, "adaptive forward")
    _check(gx, gx64, dtype, "adaptive grad")


PAD_CASES = [((2, 3, 5, 6), (1, 2, 0, 3)), ((2, 3, 5, 6), (-1, 2, 3, -2)),
             ((3, 4, 5), (2, 2, 1, 1, 1, 0)), ((2, 7), (3, 4)), ((2, 3, 4), (0, 0))]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_emulated_pad(case, mode, emulated_gpu, monkeypatch):
    shape, pad = case
    for dtype in EMU_DTYPES:
        x = _rounded(shape, dtype, 6)
        kw = dict(value=1.5) if mode == "constant" else {}
        if mode == "reflect" and any(v >= n for v, n in zip(pad[::2], shape[::-1])):
            continue
        y = cyconv.pad(x, pad, mode, **kw)
        gy = _rounded(y.shape, dtype, 7)
        gx = cyconv.grad.pad(gy, x.shape, pad, mode)
        with on_cpu(monkeypatch):
            y64 = cyconv.pad(x.astype(np.float64), pad, mode, **kw)
            gx64 = cyconv.grad.pad(gy.astype(np.float64), x.shape, pad, mode)
        np.testing.assert_array_equal(y.astype(np.float64), y64)
        assert y.dtype == dtype
        _check(gx, gx64, dtype, f"pad grad {mode}")


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
def test_emulated_relu_and_linear(dtype, emulated_gpu, monkeypatch):
    x = _rounded((3, 4, 5), dtype, 8, nan=True)
    x.reshape(-1)[2] = -0.0
    y = cyconv.relu(x)
    gy = _rounded(x.shape, dtype, 9)
    gx = cyconv.grad.relu(gy, y)
    w = _rounded((6, 5), dtype, 10)
    b = _rounded((6,), dtype, 11)
    lin = cyconv.linear(x, w, b)
    with on_cpu(monkeypatch):
        y64 = cyconv.relu(x.astype(np.float64))
        gx64 = cyconv.grad.relu(gy.astype(np.float64), y64)
        lin64 = cyconv.linear(*(a.astype(np.float64) for a in (x, w, b)))
    np.testing.assert_array_equal(y.astype(np.float64), y64)
    assert np.signbit(y.reshape(-1)[2])
    np.testing.assert_array_equal(gx.astype(np.float64), gx64)
    assert lin.dtype == dtype and lin.shape == (3, 4, 6)
    _check(lin, lin64, dtype, "linear")


# -- batch norm, activations, softmax, dropout, interpolate, adaptive max pooling ------------

def _emu_check(actual, expected, dtype, what):
    """GPU-backend result against the CPU backend's float64 result; float16 results
    (and the float32 transcendental functions, libm here and SLEEF-free polynomials on the
    CPU) get their dtype's rounding."""
    _check(actual, expected, dtype, what)


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 7), (2, 4, 5, 3), (1, 2, 3, 2, 4)],
                         ids=str)
def test_emulated_batch_norm(shape, dtype, emulated_gpu, monkeypatch):
    C = shape[1]
    x = _rounded(shape, dtype, 20) * 3 + 1
    w, b = _rounded((C,), dtype, 21), _rounded((C,), dtype, 22)
    gy = _rounded(shape, dtype, 23)
    rm, rv = _rounded((C,), dtype, 24), np.abs(_rounded((C,), dtype, 25)) + 0.5
    out = {}
    for training in (True, False):
        rm_, rv_ = rm.copy(), rv.copy()
        y = cyconv.batch_norm(x, rm_, rv_, w, b, training=training, momentum=0.3)
        grads = cyconv.grad.batch_norm(gy, x, rm, rv, w, training=training)
        out[training] = (y, rm_, rv_) + grads
    with on_cpu(monkeypatch):
        x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
        for training in (True, False):
            rm_, rv_ = rm.astype(np.float64), rv.astype(np.float64)
            y = cyconv.batch_norm(x64, rm_, rv_, w64, b64, training=training, momentum=0.3)
            grads = cyconv.grad.batch_norm(gy64, x64, rm.astype(np.float64),
                                           rv.astype(np.float64), w64, training=training)
            want = (y, rm_, rv_) + grads
            for name, a, e in zip(("y", "running_mean", "running_var", "gx", "gw", "gb"),
                                  out[training], want):
                _emu_check(a, e, dtype, f"batch_norm training={training} {name}")


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
def test_emulated_activations(dtype, emulated_gpu, monkeypatch):
    x = _rounded((3, 5, 7), dtype, 30, nan=True) * 3
    gy = _rounded(x.shape, dtype, 31)
    cases = [("leaky_relu", (0.2,), False), ("sigmoid", (), True), ("tanh", (), True),
             ("gelu", ("none",), False), ("gelu", ("tanh",), False), ("silu", (), False)]
    got = []
    for name, args, from_output in cases:
        y = getattr(cyconv, name)(x, *args)
        gx = getattr(cyconv.grad, name)(gy, y if from_output else x, *args)
        got.append((y, gx))
    with on_cpu(monkeypatch):
        x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
        for (name, args, from_output), (y, gx) in zip(cases, got):
            y64 = getattr(cyconv, name)(x64, *args)
            gx64 = getattr(cyconv.grad, name)(gy64, y64 if from_output else x64, *args)
            assert y.dtype == dtype and gx.dtype == dtype
            _emu_check(y, y64, dtype, f"{name}{args} forward")
            _emu_check(gx, gx64, dtype, f"{name}{args} grad")


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, dim", [((2, 5, 3), 1), ((4, 9), -1), ((3, 2, 4), 0),
                                        ((), 0)], ids=str)
def test_emulated_softmax(shape, dim, dtype, emulated_gpu, monkeypatch):
    x = np.asarray(_rounded(shape, dtype, 40) * 4)     # 0-d stays an array
    gy = np.asarray(_rounded(shape, dtype, 41))
    got = {}
    for name in ("softmax", "log_softmax"):
        y = getattr(cyconv, name)(x, dim)
        got[name] = (y, getattr(cyconv.grad, name)(gy, y, dim))
    with on_cpu(monkeypatch):
        for name, (y, gx) in got.items():
            y64 = getattr(cyconv, name)(x.astype(np.float64), dim)
            gx64 = getattr(cyconv.grad, name)(gy.astype(np.float64), y64, dim)
            _emu_check(y, y64, dtype, f"{name} forward")
            _emu_check(gx, gx64, dtype, f"{name} grad")


def test_emulated_dropout_is_seeded_and_scaled(emulated_gpu):
    x = _rounded((4, 50), np.float32, 50)
    cyconv.manual_seed(3)
    y, mask = cyconv.dropout(x, 0.25, return_mask=True)
    cyconv.manual_seed(3)
    y2, mask2 = cyconv.dropout(x, 0.25, return_mask=True)
    np.testing.assert_array_equal(mask, mask2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(y, np.where(mask, x / np.float32(0.75), 0), rtol=1e-6)
    assert 0.5 < mask.mean() < 0.95
    gx = cyconv.grad.dropout(y, mask, 0.25)
    np.testing.assert_allclose(gx, np.where(mask, y / np.float32(0.75), 0), rtol=1e-6)


INTERP_CASES = [((2, 3, 7), dict(size=12, mode="linear")),
                ((2, 3, 7), dict(scale_factor=0.5, mode="nearest")),
                ((1, 2, 5, 6), dict(size=(9, 4), mode="bilinear")),
                ((1, 2, 5, 6), dict(scale_factor=(1.5, 2.0), mode="nearest")),
                ((1, 2, 5, 6), dict(size=(3, 11), mode="bilinear", align_corners=True)),
                ((1, 1, 3, 4, 5), dict(size=(5, 4, 2), mode="trilinear")),
                ((0, 2, 3, 4), dict(size=(6, 8), mode="bilinear"))]


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", INTERP_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_emulated_interpolate(case, dtype, emulated_gpu, monkeypatch):
    shape, kw = case
    x = _rounded(shape, dtype, 60)
    y = cyconv.interpolate(x, **kw)
    gy = _rounded(y.shape, dtype, 61)
    gx = cyconv.grad.interpolate(gy, x.shape, **kw)
    with on_cpu(monkeypatch):
        y64 = cyconv.interpolate(x.astype(np.float64), **kw)
        gx64 = cyconv.grad.interpolate(gy.astype(np.float64), x.shape, **kw)
    _emu_check(y, y64, dtype, "interpolate forward")
    _emu_check(gx, gx64, dtype, "interpolate grad")


@pytest.mark.parametrize("dtype", EMU_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_emulated_adaptive_max_pool(case, dtype, emulated_gpu, monkeypatch):
    nd, shape, out = case
    x = _rounded(shape, dtype, 70, nan=True)
    y, idx = getattr(cyconv, f"adaptive_max_pool{nd}d")(x, out, return_indices=True)
    gy = _rounded(y.shape, dtype, 71)
    gx = getattr(cyconv.grad, f"adaptive_max_pool{nd}d")(gy, idx, x.shape)
    with on_cpu(monkeypatch):
        y64, idx64 = getattr(cyconv, f"adaptive_max_pool{nd}d")(x.astype(np.float64), out,
                                                               return_indices=True)
        gx64 = getattr(cyconv.grad, f"adaptive_max_pool{nd}d")(gy.astype(np.float64), idx64,
                                                              x.shape)
    np.testing.assert_array_equal(idx, idx64)
    np.testing.assert_array_equal(y.astype(np.float64), y64)
    _emu_check(gx, gx64, dtype, "adaptive_max_pool grad")


def test_emulated_new_kernels_with_64_bit_indices(emulated_gpu, monkeypatch):
    """The `long long` instantiations of the new families compute what the `int` ones do."""
    x = _rounded((2, 3, 5, 6), np.float64, 80)
    gy = _rounded(x.shape, np.float64, 81)

    def run():
        emulated_gpu.calls.clear()
        y = cyconv.batch_norm(x, None, None, training=True)
        out = [y, *cyconv.grad.batch_norm(gy, x, None, None, training=True),
               cyconv.gelu(x), cyconv.grad.silu(gy, x), cyconv.softmax(x, 1),
               cyconv.interpolate(x, size=(7, 4), mode="bilinear"),
               cyconv.adaptive_max_pool2d(x, (2, 3))]
        return out, {i for _, i in emulated_gpu.calls}

    short, kinds = run()
    assert kinds == {"int32"}
    monkeypatch.setattr(_cuda, "index_dtype", lambda *extents: np.dtype(np.int64))
    long, kinds = run()
    assert kinds == {"int64"}
    for a, c in zip(short, long):
        np.testing.assert_array_equal(a, c)
