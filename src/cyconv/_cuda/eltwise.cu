// Activations, softmax and log-softmax, forward and backward: the twins of
// cyconv/_ext/eltwise.pyx, with the same formulas (PyTorch's), computed in Acc<T>.
//
// Activation codes (cyconv._cpu_layers.ACTIVATIONS): 0 leaky_relu, 1 sigmoid, 2 tanh,
// 3 gelu, 4 gelu (tanh approximation), 5 silu.  The gradient reads the forward input,
// or its output for sigmoid (1) and tanh (2).  ``alpha`` points at one value: leaky_relu's
// slope.  Softmax runs one thread per (outer, inner) line of an (outer, D, inner) array,
// three passes over its D values (max, sum of exponentials, write).
#include "common.cuh"

#if defined(CYC_HOST_EMULATION)
inline float cyc_exp(float v) { return __builtin_expf(v); }
inline double cyc_exp(double v) { return __builtin_exp(v); }
inline float cyc_log(float v) { return __builtin_logf(v); }
inline double cyc_log(double v) { return __builtin_log(v); }
inline float cyc_tanh(float v) { return __builtin_tanhf(v); }
inline double cyc_tanh(double v) { return __builtin_tanh(v); }
inline float cyc_erf(float v) { return __builtin_erff(v); }
inline double cyc_erf(double v) { return __builtin_erf(v); }
#else
__device__ __forceinline__ float cyc_exp(float v) { return expf(v); }
__device__ __forceinline__ double cyc_exp(double v) { return exp(v); }
__device__ __forceinline__ float cyc_log(float v) { return logf(v); }
__device__ __forceinline__ double cyc_log(double v) { return log(v); }
__device__ __forceinline__ float cyc_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double cyc_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float cyc_erf(float v) { return erff(v); }
__device__ __forceinline__ double cyc_erf(double v) { return erf(v); }
#endif

template <typename A> __device__ __forceinline__ A cyc_negative_infinity();
template <> __device__ __forceinline__ float cyc_negative_infinity<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double cyc_negative_infinity<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

#define CYC_SQRT1_2 0.70710678118654752440
#define CYC_INV_SQRT_2PI 0.39894228040143267794
#define CYC_GELU_BETA 0.79788456080286535588
#define CYC_GELU_KAPPA 0.044715

template <typename A, typename I>
__device__ __forceinline__ A act_value(const A v, const I op, const A alpha) {
    if (op == 0) return v > A(0) ? v : v * alpha;
    if (op == 1) return A(1) / (A(1) + cyc_exp(-v));
    if (op == 2) return cyc_tanh(v);
    if (op == 3) return v * A(0.5) * (A(1) + cyc_erf(v * A(CYC_SQRT1_2)));
    if (op == 4) {
        const A inner = A(CYC_GELU_BETA) * (v + A(CYC_GELU_KAPPA) * v * v * v);
        return A(0.5) * v * (A(1) + cyc_tanh(inner));
    }
    return v / (A(1) + cyc_exp(-v));
}

template <typename A, typename I>
__device__ __forceinline__ A act_grad(const A g, const A s, const I op, const A alpha) {
    if (op == 0) return s > A(0) ? g : g * alpha;
    if (op == 1) return g * (A(1) - s) * s;
    if (op == 2) return g * (A(1) - s * s);
    if (op == 3) {
        const A cdf = A(0.5) * (A(1) + cyc_erf(s * A(CYC_SQRT1_2)));
        const A pdf = cyc_exp(A(-0.5) * s * s) * A(CYC_INV_SQRT_2PI);
        return g * (cdf + s * pdf);
    }
    if (op == 4) {
        const A x2 = s * s;
        const A t = cyc_tanh(A(CYC_GELU_BETA) * (s + A(CYC_GELU_KAPPA) * x2 * s));
        const A dinner = A(CYC_GELU_BETA) * (A(1) + A(3) * A(CYC_GELU_KAPPA) * x2);
        return g * (A(0.5) * (A(1) + t) + A(0.5) * s * (A(1) - t * t) * dinner);
    }
    const A sg = A(1) / (A(1) + cyc_exp(-s));
    return g * sg * (A(1) + s * (A(1) - sg));
}

template <typename T, typename I>
__global__ void activation_forward(const T* __restrict__ x, T* __restrict__ y,
                                   const typename Acc<T>::type* __restrict__ alpha,
                                   const I n, const I op) {
    typedef typename Acc<T>::type A;
    const A a = alpha[0];
    CYC_GRID_STRIDE(i, n) {
        y[i] = from_acc<T>(act_value<A, I>(to_acc(x[i]), op, a));
    }
}

template <typename T, typename I>
__global__ void activation_backward(const T* __restrict__ gy, const T* __restrict__ s,
                                    T* __restrict__ gx,
                                    const typename Acc<T>::type* __restrict__ alpha,
                                    const I n, const I op) {
    typedef typename Acc<T>::type A;
    const A a = alpha[0];
    CYC_GRID_STRIDE(i, n) {
        gx[i] = from_acc<T>(act_grad<A, I>(to_acc(gy[i]), to_acc(s[i]), op, a));
    }
}

// softmax_forward: y = softmax (logsm: log_softmax) of x over D, per (outer, inner) line.
template <typename T, typename I>
__global__ void softmax_forward(const T* __restrict__ x, T* __restrict__ y, const I outer,
                                const I D, const I inner, const I logsm) {
    typedef typename Acc<T>::type A;
    CYC_GRID_STRIDE(t, outer * inner) {
        const I o = t / inner;
        const I off = o * D * inner + (t - o * inner);
        A m = cyc_negative_infinity<A>();
        for (I d = 0; d < D; ++d) {
            const A v = to_acc(x[off + d * inner]);
            m = v > m ? v : m;
        }
        A s = A(0);
        for (I d = 0; d < D; ++d) s += cyc_exp(to_acc(x[off + d * inner]) - m);
        if (logsm) {
            const A c = m + cyc_log(s);
            for (I d = 0; d < D; ++d)
                y[off + d * inner] = from_acc<T>(to_acc(x[off + d * inner]) - c);
        } else {
            const A inv = A(1) / s;
            for (I d = 0; d < D; ++d)
                y[off + d * inner] = from_acc<T>(cyc_exp(to_acc(x[off + d * inner]) - m) * inv);
        }
    }
}

// softmax_backward: gx = y * (gy - sum(gy * y)) (softmax) or gy - exp(y) * sum(gy)
// (log_softmax), the sums over D, from the forward output y.
template <typename T, typename I>
__global__ void softmax_backward(const T* __restrict__ gy, const T* __restrict__ y,
                                 T* __restrict__ gx, const I outer, const I D, const I inner,
                                 const I logsm) {
    typedef typename Acc<T>::type A;
    CYC_GRID_STRIDE(t, outer * inner) {
        const I o = t / inner;
        const I off = o * D * inner + (t - o * inner);
        A s = A(0);
        for (I d = 0; d < D; ++d) {
            const I k = off + d * inner;
            s += logsm ? to_acc(gy[k]) : to_acc(gy[k]) * to_acc(y[k]);
        }
        for (I d = 0; d < D; ++d) {
            const I k = off + d * inner;
            const A g = to_acc(gy[k]), v = to_acc(y[k]);
            gx[k] = from_acc<T>(logsm ? g - cyc_exp(v) * s : v * (g - s));
        }
    }
}
