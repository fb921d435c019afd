// Pooling kernels: max, average and adaptive average pooling, forward and backward.
//
// Every array is a stack of `planes` = N * C independent planes, C-contiguous.  The
// geometry is cyconv._params.PoolParams.geometry() (18 sizes, padded to 3 spatial dims)
// or PoolShape.geometry() (6 sizes).  Semantics are those of cyconv/_ext/pool.pyx and
// PyTorch: windows scanned in (kd, kh, kw) order, the first maximum wins and a NaN
// always wins; average divisors follow count_include_pad / divisor_override.
//
// Forward kernels and the average-pooling gradients are gathers, one thread per output
// element, so no two threads write the same address and the results do not depend on
// the launch configuration.  The max-pooling gradient, whose windows are known only
// through the indices, scatters plane by plane (one thread per plane), which keeps it
// free of atomics and deterministic.
#include "common.cuh"

#define CYC_POOL_PARAMS                                                             \
    const I D, const I H, const I W, const I OD, const I OH, const I OW,            \
    const I KD, const I KH, const I KW, const I SD, const I SH, const I SW,         \
    const I PD, const I PH, const I PW, const I DD, const I DH, const I DW

#define CYC_SHAPE_PARAMS const I D, const I H, const I W, const I OD, const I OH, const I OW

template <typename A> __device__ __forceinline__ A negative_infinity();
template <> __device__ __forceinline__ float negative_infinity<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double negative_infinity<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

// The first in-bounds input index of window o along one dim (PyTorch's initial argmax);
// a window with nothing in bounds (dilation > 1) gets n - 1, so it stays in the plane.
template <typename I>
__device__ __forceinline__ I first_tap(I o, I s, I p, I d, I n) {
    I i = o * s - p;
    if (i < 0) i += ceil_div<I>(-i, d) * d;
    if (i >= n) i = n - 1;
    return i;
}

// max_pool_forward: y (planes, OD, OH, OW) = window maxima of x (planes, D, H, W);
// idx (or null) = the flat plane index of each maximum.
template <typename T, typename I>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 long long* __restrict__ idx, const I planes,
                                 CYC_POOL_PARAMS) {
    typedef typename Acc<T>::type A;
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * OP) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD;
        const I pl = t / OD;
        const T* xp = x + pl * IP;
        A m = negative_infinity<A>();
        T best = from_acc<T>(m);
        I arg = (first_tap<I>(od, SD, PD, DD, D) * H + first_tap<I>(oh, SH, PH, DH, H)) * W
                + first_tap<I>(ow, SW, PW, DW, W);
        for (I kd = 0; kd < KD; ++kd) {
            const I id = od * SD - PD + kd * DD;
            if (id < 0 || id >= D) continue;
            for (I kh = 0; kh < KH; ++kh) {
                const I ih = oh * SH - PH + kh * DH;
                if (ih < 0 || ih >= H) continue;
                for (I kw = 0; kw < KW; ++kw) {
                    const I iw = ow * SW - PW + kw * DW;
                    if (iw < 0 || iw >= W) continue;
                    const I k = (id * H + ih) * W + iw;
                    const T raw = xp[k];
                    const A v = to_acc(raw);
                    if (v > m || v != v) {        // strict: the first maximum; NaN wins
                        m = v;
                        best = raw;
                        arg = k;
                    }
                }
            }
        }
        y[i] = best;
        if (idx != nullptr) idx[i] = (long long)arg;
    }
}

// max_pool_backward: gx (planes, plane) += gy (planes, n_out) at idx, one thread per plane
// in output order (gx must be zero on entry).  Indices outside [0, plane) are skipped;
// the host rejects them before the launch.
template <typename T, typename I>
__global__ void max_pool_backward(const T* __restrict__ gy, const long long* __restrict__ idx,
                                  T* __restrict__ gx, const I planes, const I n_out,
                                  const I plane) {
    CYC_GRID_STRIDE(pl, planes) {
        const T* g = gy + pl * n_out;
        const long long* ix = idx + pl * n_out;
        T* out = gx + pl * plane;
        for (I o = 0; o < n_out; ++o) {
            const long long k = ix[o];
            if (k < 0 || k >= (long long)plane) continue;
            out[k] = from_acc<T>(to_acc(out[k]) + to_acc(g[o]));
        }
    }
}

// PyTorch's divisor of one window: divisor_override when non-zero, else the product of
// the per-dim extents clipped to [-p, n + p) (count_include_pad) or to [0, n).
template <typename I>
__device__ __forceinline__ I avg_extent(I o, I s, I p, I k, I n, I include_pad) {
    I start = o * s - p;
    I end = start + k;
    if (end > n + p) end = n + p;
    if (!include_pad) {
        if (start < 0) start = 0;
        if (end > n) end = n;
    }
    return end - start;
}

// avg_pool_forward: y = window sums of x / divisor (dilation 1).
template <typename T, typename I>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, const I planes,
                                 const I include_pad, const I divisor, CYC_POOL_PARAMS) {
    typedef typename Acc<T>::type A;
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * OP) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD;
        const I pl = t / OD;
        const T* xp = x + pl * IP;
        const I d0 = od * SD - PD, h0 = oh * SH - PH, w0 = ow * SW - PW;
        const I d1 = d0 + KD < D ? d0 + KD : D;
        const I h1 = h0 + KH < H ? h0 + KH : H;
        const I w1 = w0 + KW < W ? w0 + KW : W;
        A s = A(0);
        for (I id = d0 < 0 ? 0 : d0; id < d1; ++id)
            for (I ih = h0 < 0 ? 0 : h0; ih < h1; ++ih)
                for (I iw = w0 < 0 ? 0 : w0; iw < w1; ++iw)
                    s += to_acc(xp[(id * H + ih) * W + iw]);
        const A div = divisor != 0 ? A(divisor)
            : A(avg_extent<I>(od, SD, PD, KD, D, include_pad)) *
              A(avg_extent<I>(oh, SH, PH, KH, H, include_pad)) *
              A(avg_extent<I>(ow, SW, PW, KW, W, include_pad));
        y[i] = from_acc<T>(s / div);
    }
}

// [lo, hi]: the outputs o of one dim whose window [o * s - p, o * s - p + k) holds i.
template <typename I>
__device__ __forceinline__ void windows_of(I i, I s, I p, I k, I n_out, I& lo, I& hi) {
    lo = ceil_div<I>(i + p - k + 1, s);
    if (lo < 0) lo = 0;
    hi = (i + p) / s;                 // i + p >= 0
    if (hi > n_out - 1) hi = n_out - 1;
}

// avg_pool_backward: gx (planes, D, H, W) as a gather of gy / divisor over the windows
// that hold each input element.
template <typename T, typename I>
__global__ void avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                  const I planes, const I include_pad, const I divisor,
                                  CYC_POOL_PARAMS) {
    typedef typename Acc<T>::type A;
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * IP) {
        I t = i;
        const I xw = t % W; t /= W;
        const I xh = t % H; t /= H;
        const I xd = t % D;
        const I pl = t / D;
        const T* g = gy + pl * OP;
        I d0, d1, h0, h1, w0, w1;
        windows_of<I>(xd, SD, PD, KD, OD, d0, d1);
        windows_of<I>(xh, SH, PH, KH, OH, h0, h1);
        windows_of<I>(xw, SW, PW, KW, OW, w0, w1);
        A s = A(0);
        for (I od = d0; od <= d1; ++od) {
            const A cd = A(avg_extent<I>(od, SD, PD, KD, D, include_pad));
            for (I oh = h0; oh <= h1; ++oh) {
                const A ch = A(avg_extent<I>(oh, SH, PH, KH, H, include_pad));
                for (I ow = w0; ow <= w1; ++ow) {
                    const A div = divisor != 0 ? A(divisor)
                        : cd * ch * A(avg_extent<I>(ow, SW, PW, KW, W, include_pad));
                    s += to_acc(g[(od * OH + oh) * OW + ow]) / div;
                }
            }
        }
        gx[i] = from_acc<T>(s);
    }
}

// Adaptive windows: output o of a dim averages [floor(o * n / m), ceil((o + 1) * n / m)),
// computed in 64 bits (o * n can pass 2**31 even when both fit int).
__device__ __forceinline__ long long adaptive_start(long long o, long long n, long long m) {
    return (o * n) / m;
}
__device__ __forceinline__ long long adaptive_end(long long o, long long n, long long m) {
    return ((o + 1) * n + m - 1) / m;
}

// adaptive_avg_pool_forward: y (planes, OD, OH, OW) = window means of x (sums in double,
// as on the CPU).
template <typename T, typename I>
__global__ void adaptive_avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                          const I planes, CYC_SHAPE_PARAMS) {
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * OP) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD;
        const I pl = t / OD;
        const T* xp = x + pl * IP;
        const I d0 = (I)adaptive_start(od, D, OD), d1 = (I)adaptive_end(od, D, OD);
        const I h0 = (I)adaptive_start(oh, H, OH), h1 = (I)adaptive_end(oh, H, OH);
        const I w0 = (I)adaptive_start(ow, W, OW), w1 = (I)adaptive_end(ow, W, OW);
        double s = 0;
        for (I id = d0; id < d1; ++id)
            for (I ih = h0; ih < h1; ++ih)
                for (I iw = w0; iw < w1; ++iw)
                    s += (double)to_acc(xp[(id * H + ih) * W + iw]);
        const double count = (double)(d1 - d0) * (double)(h1 - h0) * (double)(w1 - w0);
        y[i] = from_acc<T>((typename Acc<T>::type)(s / count));
    }
}

// The outputs o of one dim whose adaptive window holds input i:
// o in [floor(i * m / n), ceil((i + 1) * m / n) - 1], clipped to [0, m).
template <typename I>
__device__ __forceinline__ void adaptive_windows_of(I i, I n, I m, I& lo, I& hi) {
    lo = (I)(((long long)i * m) / n);
    hi = (I)((((long long)i + 1) * m + n - 1) / n) - 1;
    if (hi > m - 1) hi = m - 1;
}

// adaptive_avg_pool_backward: gx = sum over the windows holding each element of
// gy / window size (a gather; every output size must be >= 1).
template <typename T, typename I>
__global__ void adaptive_avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                           const I planes, CYC_SHAPE_PARAMS) {
    typedef typename Acc<T>::type A;
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * IP) {
        I t = i;
        const I xw = t % W; t /= W;
        const I xh = t % H; t /= H;
        const I xd = t % D;
        const I pl = t / D;
        const T* g = gy + pl * OP;
        I d0, d1, h0, h1, w0, w1;
        adaptive_windows_of<I>(xd, D, OD, d0, d1);
        adaptive_windows_of<I>(xh, H, OH, h0, h1);
        adaptive_windows_of<I>(xw, W, OW, w0, w1);
        A s = A(0);
        for (I od = d0; od <= d1; ++od) {
            const long long sd = adaptive_start(od, D, OD), ed = adaptive_end(od, D, OD);
            if (xd < sd || xd >= ed) continue;
            for (I oh = h0; oh <= h1; ++oh) {
                const long long sh = adaptive_start(oh, H, OH), eh = adaptive_end(oh, H, OH);
                if (xh < sh || xh >= eh) continue;
                for (I ow = w0; ow <= w1; ++ow) {
                    const long long sw = adaptive_start(ow, W, OW),
                                    ew = adaptive_end(ow, W, OW);
                    if (xw < sw || xw >= ew) continue;
                    const A count = A((ed - sd) * (eh - sh)) * A(ew - sw);
                    s += to_acc(g[(od * OH + oh) * OW + ow]) / count;
                }
            }
        }
        gx[i] = from_acc<T>(s);
    }
}

// adaptive_max_pool_forward: y (planes, OD, OH, OW) = the maximum of each adaptive window
// of x, scanned in (d, h, w) order (the first maximum wins, a NaN always wins); idx = its
// flat plane index (the window's first element for an all -inf window).
template <typename T, typename I>
__global__ void adaptive_max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                          long long* __restrict__ idx, const I planes,
                                          CYC_SHAPE_PARAMS) {
    typedef typename Acc<T>::type A;
    const I OP = OD * OH * OW, IP = D * H * W;
    CYC_GRID_STRIDE(i, planes * OP) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD;
        const I pl = t / OD;
        const T* xp = x + pl * IP;
        const I d0 = (I)adaptive_start(od, D, OD), d1 = (I)adaptive_end(od, D, OD);
        const I h0 = (I)adaptive_start(oh, H, OH), h1 = (I)adaptive_end(oh, H, OH);
        const I w0 = (I)adaptive_start(ow, W, OW), w1 = (I)adaptive_end(ow, W, OW);
        A m = negative_infinity<A>();
        T best = from_acc<T>(m);
        I arg = (d0 * H + h0) * W + w0;
        for (I id = d0; id < d1; ++id)
            for (I ih = h0; ih < h1; ++ih)
                for (I iw = w0; iw < w1; ++iw) {
                    const I k = (id * H + ih) * W + iw;
                    const T raw = xp[k];
                    const A v = to_acc(raw);
                    if (v > m || v != v) {
                        m = v;
                        best = raw;
                        arg = k;
                    }
                }
        y[i] = best;
        idx[i] = arg;
    }
}
