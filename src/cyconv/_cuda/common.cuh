// Shared definitions of cyconv's CUDA kernels (im2col.cu, direct.cu, pool.cu).
//
// Compiled by NVRTC through cupy.RawModule (the loader in cyconv/_cuda/__init__.py pastes
// this file in place of the include line), and by nvcc and (as host code, with
// CYC_HOST_EMULATION) by g++ in tests/test_cuda_compile.py.  It includes no header at
// all, so it needs neither the CUDA toolkit's include directory nor the C++ standard
// library at run time.
//
// Every kernel is `template <typename T, typename I>`:
//   T  the element type: float, double or cyc_half (IEEE binary16 bits);
//   I  the index type: int when the host has checked that every extent (plus the
//      grid-stride slack) is below 2**31, long long otherwise.
// Arithmetic runs in Acc<T>::type: float for cyc_half and float, double for double.
#pragma once

// binary16 storage.  Conversions use the PTX cvt instructions that cuda_fp16.h uses,
// so results are identical to __half2float / __float2half_rn.
struct __align__(2) cyc_half {
    unsigned short bits;
};

template <typename T> struct Acc { typedef T type; };
template <> struct Acc<cyc_half> { typedef float type; };

template <typename T>
__device__ __forceinline__ typename Acc<T>::type to_acc(T v) { return v; }

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type v) { return v; }

#if defined(CYC_HOST_EMULATION)
// tests/test_cuda_compile.py runs these kernels on the CPU (g++, _Float16) to check their
// index arithmetic on machines without a GPU; the conversions round the same way.
template <>
inline float to_acc<cyc_half>(cyc_half v) {
    _Float16 h;
    __builtin_memcpy(&h, &v.bits, 2);
    return (float)h;
}

template <>
inline cyc_half from_acc<cyc_half>(float v) {
    const _Float16 h = (_Float16)v;
    cyc_half r;
    __builtin_memcpy(&r.bits, &h, 2);
    return r;
}
#else
template <>
__device__ __forceinline__ float to_acc<cyc_half>(cyc_half v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

template <>
__device__ __forceinline__ cyc_half from_acc<cyc_half>(float v) {
    cyc_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
    return h;
}
#endif

// ceil(a / b) for b > 0 and a of any sign (C++ division truncates toward zero).
template <typename I>
__device__ __forceinline__ I ceil_div(I a, I b) {
    return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

// [lo, hi): the j in [0, n) with 0 <= off + j * step < size (step > 0).
template <typename I>
__device__ __forceinline__ void valid_range(I off, I step, I size, I n, I& lo, I& hi) {
    I a = ceil_div<I>(-off, step);
    I b = ceil_div<I>(size - off, step);
    lo = a < 0 ? I(0) : a;
    hi = b > n ? n : b;
    if (hi < lo) hi = lo;
}

// Guarded grid-stride loop over [0, total) on a 1-D grid.  The host launches at most
// 2**24 threads and picks I = int only when total + 2**24 < 2**31, so `i += stride`
// never overflows.
#define CYC_GRID_STRIDE(i, total)                                                   \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (I)(total);      \
         i += (I)blockDim.x * (I)gridDim.x)

// The convolution geometry in conv view, padded to three spatial dims; the argument
// order is cyconv._params.ConvParams.geometry()'s.  The image side is a convolution's
// input (a transposed convolution's output), the column side the other one.
#define CYC_GEOM_PARAMS                                                             \
    const I G, const I C_img, const I C_col, const I D, const I H, const I W,       \
    const I OD, const I OH, const I OW, const I KD, const I KH, const I KW,          \
    const I SD, const I SH, const I SW, const I PD, const I PH, const I PW,         \
    const I DD, const I DH, const I DW

// Derived sizes every conv kernel uses.
#define CYC_GEOM_DERIVED                                                            \
    const I Cg = C_img / G;          /* image channels per group */                 \
    const I Kg = C_col / G;          /* column channels per group */                \
    const I KK = KD * KH * KW;       /* taps per channel */                         \
    const I P = OD * OH * OW;        /* column-side pixels per channel */           \
    const I IMG = D * H * W;         /* image-side pixels per channel */            \
    (void)Cg; (void)Kg; (void)KK; (void)P; (void)IMG
