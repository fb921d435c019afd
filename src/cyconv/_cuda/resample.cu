// interpolate, one spatial dim per pass, and its adjoint: the twins of
// cyconv/_ext/resample.pyx.
//
// A pass views its input as (A, n_in, B) and its output as (A, n_out, B).  Forward:
// y[a, o, b] = w0[o] * x[a, i0[o], b] + w1[o] * x[a, i1[o], b], or x[a, i0[o], b] when w0
// is null (nearest).  Backward, a gather through the transposed map in CSR form:
// gx[a, i, b] = sum over k in [ptr[i], ptr[i + 1]) of wt[k] * gy[a, src[k], b], in k order.
// One thread per output element, no atomics: deterministic.
#include "common.cuh"

template <typename T, typename I>
__global__ void resample_forward(const T* __restrict__ x, T* __restrict__ y,
                                 const long long* __restrict__ i0,
                                 const long long* __restrict__ i1,
                                 const typename Acc<T>::type* __restrict__ w0,
                                 const typename Acc<T>::type* __restrict__ w1,
                                 const I A_, const I n_in, const I n_out, const I B) {
    CYC_GRID_STRIDE(t, A_ * n_out * B) {
        const I b = t % B;
        const I r = t / B;
        const I o = r % n_out;
        const T* xa = x + (r / n_out) * n_in * B + b;
        if (w0 == nullptr) {
            y[t] = xa[(I)i0[o] * B];
        } else {
            y[t] = from_acc<T>(w0[o] * to_acc(xa[(I)i0[o] * B]) +
                               w1[o] * to_acc(xa[(I)i1[o] * B]));
        }
    }
}

template <typename T, typename I>
__global__ void resample_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                  const long long* __restrict__ ptr,
                                  const long long* __restrict__ src,
                                  const typename Acc<T>::type* __restrict__ wt,
                                  const I A_, const I n_in, const I n_out, const I B) {
    typedef typename Acc<T>::type A;
    CYC_GRID_STRIDE(t, A_ * n_in * B) {
        const I b = t % B;
        const I r = t / B;
        const I i = r % n_in;
        const T* ga = gy + (r / n_in) * n_out * B + b;
        A s = A(0);
        for (long long k = ptr[i]; k < ptr[i + 1]; ++k) s += wt[k] * to_acc(ga[(I)src[k] * B]);
        gx[t] = from_acc<T>(s);
    }
}
