// Batch normalisation: per-channel statistics (block reductions) and element-wise passes,
// the twins of cyconv/_ext/norm.pyx.
//
// Arrays are C-contiguous (N, C, S) (S = the product of the spatial dims); per-channel
// vectors are (C,) in the accumulation type A.  A statistic of channel c is reduced by
// one block of CYC_NORM_BLOCK threads (grid-stride over the channels): each thread sums
// a strided subset in double, then a fixed shared-memory tree adds the partial sums, so
// results are bit-identical from run to run and for any grid size.  The element-wise
// kernels are grid-stride loops, one thread per element.
//
//   batch_norm_stats            mean[c], var[c] (biased), two passes over the channel
//   batch_norm_apply            y = (x - mean[c]) * scale[c] + shift[c]
//   batch_norm_backward_reduce  sum_gy[c] = sum(gy), sum_gyx[c] = sum(gy * (x - mean[c]))
//   batch_norm_backward_apply   gx = gy * k1[c] - (x - mean[c]) * k2[c] - k3[c]
#include "common.cuh"

#define CYC_NORM_BLOCK 256   // equals cyconv._cuda.REDUCE_BLOCK

template <typename T, typename I>
__global__ void batch_norm_stats(const T* __restrict__ x, typename Acc<T>::type* __restrict__ mean,
                                 typename Acc<T>::type* __restrict__ var, const I N, const I C,
                                 const I S) {
    typedef typename Acc<T>::type A;
    __shared__ double sbuf[CYC_NORM_BLOCK];
    if (blockDim.x != CYC_NORM_BLOCK) return;     // the host never launches it otherwise
    const I count = N * S;
    for (I c = (I)blockIdx.x; c < C; c += (I)gridDim.x) {
        double s = 0;
        for (I r = (I)threadIdx.x; r < count; r += (I)blockDim.x) {
            const I n = r / S;
            s += (double)to_acc(x[(n * C + c) * S + (r - n * S)]);
        }
        sbuf[threadIdx.x] = s;
        __syncthreads();
        for (unsigned int off = CYC_NORM_BLOCK / 2; off > 0; off >>= 1) {
            if (threadIdx.x < off) sbuf[threadIdx.x] += sbuf[threadIdx.x + off];
            __syncthreads();
        }
        const double m = sbuf[0] / (double)count;
        __syncthreads();
        double q = 0;
        for (I r = (I)threadIdx.x; r < count; r += (I)blockDim.x) {
            const I n = r / S;
            const double d = (double)to_acc(x[(n * C + c) * S + (r - n * S)]) - m;
            q += d * d;
        }
        sbuf[threadIdx.x] = q;
        __syncthreads();
        for (unsigned int off = CYC_NORM_BLOCK / 2; off > 0; off >>= 1) {
            if (threadIdx.x < off) sbuf[threadIdx.x] += sbuf[threadIdx.x + off];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            mean[c] = (A)m;
            var[c] = (A)(sbuf[0] / (double)count);
        }
        __syncthreads();             // sbuf is reused by the next channel
    }
}

template <typename T, typename I>
__global__ void batch_norm_apply(const T* __restrict__ x, T* __restrict__ y,
                                 const typename Acc<T>::type* __restrict__ mean,
                                 const typename Acc<T>::type* __restrict__ scale,
                                 const typename Acc<T>::type* __restrict__ shift,
                                 const I N, const I C, const I S) {
    CYC_GRID_STRIDE(i, N * C * S) {
        const I c = (i / S) % C;
        y[i] = from_acc<T>((to_acc(x[i]) - mean[c]) * scale[c] + shift[c]);
    }
}

template <typename T, typename I>
__global__ void batch_norm_backward_reduce(const T* __restrict__ gy, const T* __restrict__ x,
                                           const typename Acc<T>::type* __restrict__ mean,
                                           typename Acc<T>::type* __restrict__ sum_gy,
                                           typename Acc<T>::type* __restrict__ sum_gyx,
                                           const I N, const I C, const I S) {
    typedef typename Acc<T>::type A;
    __shared__ double sbuf[CYC_NORM_BLOCK];
    __shared__ double tbuf[CYC_NORM_BLOCK];
    if (blockDim.x != CYC_NORM_BLOCK) return;
    const I count = N * S;
    for (I c = (I)blockIdx.x; c < C; c += (I)gridDim.x) {
        const double m = (double)mean[c];
        double s = 0, t = 0;
        for (I r = (I)threadIdx.x; r < count; r += (I)blockDim.x) {
            const I n = r / S;
            const I k = (n * C + c) * S + (r - n * S);
            const double g = (double)to_acc(gy[k]);
            s += g;
            t += g * ((double)to_acc(x[k]) - m);
        }
        sbuf[threadIdx.x] = s;
        tbuf[threadIdx.x] = t;
        __syncthreads();
        for (unsigned int off = CYC_NORM_BLOCK / 2; off > 0; off >>= 1) {
            if (threadIdx.x < off) {
                sbuf[threadIdx.x] += sbuf[threadIdx.x + off];
                tbuf[threadIdx.x] += tbuf[threadIdx.x + off];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            sum_gy[c] = (A)sbuf[0];
            sum_gyx[c] = (A)tbuf[0];
        }
        __syncthreads();
    }
}

template <typename T, typename I>
__global__ void batch_norm_backward_apply(const T* __restrict__ gy, const T* __restrict__ x,
                                          T* __restrict__ gx,
                                          const typename Acc<T>::type* __restrict__ mean,
                                          const typename Acc<T>::type* __restrict__ k1,
                                          const typename Acc<T>::type* __restrict__ k2,
                                          const typename Acc<T>::type* __restrict__ k3,
                                          const I N, const I C, const I S) {
    CYC_GRID_STRIDE(i, N * C * S) {
        const I c = (i / S) % C;
        gx[i] = from_acc<T>(to_acc(gy[i]) * k1[c] - (to_acc(x[i]) - mean[c]) * k2[c] - k3[c]);
    }
}
