// Direct convolution kernels: no column buffer, one thread per output element.
//
// They serve every variant (any groups, stride, padding, dilation, 1-D/2-D/3-D) and are
// the fast path where a GEMM has little to reuse: depthwise and thin groups, and layers
// with few input channels.  For a depthwise layer the forward kernel is what PyTorch's
// conv_depthwise2d_forward_kernel does: one output per thread, the taps in registers
// and L1.
//
// Assumptions (checked on the host): C-contiguous arrays on the launching device, extents
// that fit I, bias null or of the right length.  Weights are in conv view,
// (C_col, C_img / G, KD, KH, KW).  Every sum runs in Acc<T>::type in a fixed order, so
// results do not depend on the launch configuration.
//
// The 2-D forward in NumPy (one group, one sample):
//
//     xp = np.pad(x, ((0, 0), (PH, PH'), (PW, PW')))
//     y[k, oh, ow] = b[k] + sum_{c, kh, kw} w[k, c, kh, kw] * xp[c, oh*SH + kh*DH, ow*SW + kw*DW]
#include "common.cuh"

// Threads per block of conv_direct_backward_weight; its tree reduction assumes exactly
// this block size (cyconv._gpu launches it so).
#define CYC_REDUCE_BLOCK 256

// conv_direct_forward: y (N, C_col, OD, OH, OW) from x (N, C_img, D, H, W).
template <typename T, typename I>
__global__ void conv_direct_forward(const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ bias, T* __restrict__ y,
                                    const I N, CYC_GEOM_PARAMS) {
    typedef typename Acc<T>::type A;
    CYC_GEOM_DERIVED;
    CYC_GRID_STRIDE(i, N * C_col * P) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD; t /= OD;
        const I k = t % C_col;
        const I n = t / C_col;
        const I g = k / Kg;
        const I d0 = od * SD - PD, h0 = oh * SH - PH, w0 = ow * SW - PW;
        I kd0, kd1, kh0, kh1, kw0, kw1;
        valid_range<I>(d0, DD, D, KD, kd0, kd1);
        valid_range<I>(h0, DH, H, KH, kh0, kh1);
        valid_range<I>(w0, DW, W, KW, kw0, kw1);
        A acc = A(0);
        const T* xn = x + (n * C_img + g * Cg) * IMG;
        const T* wk = w + k * Cg * KK;
        for (I ci = 0; ci < Cg; ++ci) {
            const T* xc = xn + ci * IMG;
            const T* wc = wk + ci * KK;
            for (I kd = kd0; kd < kd1; ++kd) {
                const T* xd = xc + (d0 + kd * DD) * H * W;
                for (I kh = kh0; kh < kh1; ++kh) {
                    const T* xh = xd + (h0 + kh * DH) * W + w0;
                    const T* wh = wc + (kd * KH + kh) * KW;
                    for (I kw = kw0; kw < kw1; ++kw) {
                        acc += to_acc(xh[kw * DW]) * to_acc(wh[kw]);
                    }
                }
            }
        }
        if (bias != nullptr) acc += to_acc(bias[k]);
        y[i] = from_acc<T>(acc);
    }
}

// conv_direct_backward_input: gx (N, C_img, D, H, W) from gy (N, C_col, OD, OH, OW), as a
// gather (one thread per image element, no atomics).  With a bias this is the transposed
// convolution's forward.
template <typename T, typename I>
__global__ void conv_direct_backward_input(const T* __restrict__ gy, const T* __restrict__ w,
                                           const T* __restrict__ bias, T* __restrict__ gx,
                                           const I N, CYC_GEOM_PARAMS) {
    typedef typename Acc<T>::type A;
    CYC_GEOM_DERIVED;
    const I wstride = Cg * KK;       // from one column channel's weights to the next
    CYC_GRID_STRIDE(i, N * C_img * IMG) {
        I t = i;
        const I xw = t % W; t /= W;
        const I xh = t % H; t /= H;
        const I xd = t % D; t /= D;
        const I c = t % C_img;
        const I n = t / C_img;
        const I g = c / Cg;
        const I ci = c - g * Cg;
        const T* gyn = gy + (n * C_col + g * Kg) * P;
        const T* wg = w + (g * Kg * Cg + ci) * KK;
        A acc = A(0);
        for (I kd = 0; kd < KD; ++kd) {
            const I td = xd + PD - kd * DD;
            if (td < 0) break;
            if (td % SD != 0) continue;
            const I od = td / SD;
            if (od >= OD) continue;
            for (I kh = 0; kh < KH; ++kh) {
                const I th = xh + PH - kh * DH;
                if (th < 0) break;
                if (th % SH != 0) continue;
                const I oh = th / SH;
                if (oh >= OH) continue;
                for (I kw = 0; kw < KW; ++kw) {
                    const I tw = xw + PW - kw * DW;
                    if (tw < 0) break;
                    if (tw % SW != 0) continue;
                    const I ow = tw / SW;
                    if (ow >= OW) continue;
                    const T* gyo = gyn + (od * OH + oh) * OW + ow;
                    const T* wt = wg + (kd * KH + kh) * KW + kw;
                    for (I kq = 0; kq < Kg; ++kq) {
                        acc += to_acc(gyo[kq * P]) * to_acc(wt[kq * wstride]);
                    }
                }
            }
        }
        if (bias != nullptr) acc += to_acc(bias[c]);
        gx[i] = from_acc<T>(acc);
    }
}

// conv_direct_backward_weight: deterministic split reduction, pass 1.
//
// The weight gradient gw[k, ci, kd, kh, kw] (n_w = C_col * Cg * KK entries) is a sum over
// the R = N * P (sample, output pixel) pairs.  R is cut into S slices of `chunk` pairs
// (the host picks S and chunk from the shapes alone); work item j * S + s, handled by one
// block of CYC_REDUCE_BLOCK threads, sums slice s of entry j: each thread a strided
// subset, then a fixed shared-memory tree.  partial (n_w, S) holds the results.  No
// atomics, so the result is bit-identical from run to run and for any grid size.
template <typename T, typename I>
__global__ void conv_direct_backward_weight(const T* __restrict__ x, const T* __restrict__ gy,
                                            typename Acc<T>::type* __restrict__ partial,
                                            const I N, const I S, const I chunk,
                                            CYC_GEOM_PARAMS) {
    typedef typename Acc<T>::type A;
    __shared__ A sbuf[CYC_REDUCE_BLOCK];
    CYC_GEOM_DERIVED;
    if (blockDim.x != CYC_REDUCE_BLOCK) return;   // the host never launches it otherwise
    const I R = N * P;
    const I items = C_col * Cg * KK * S;
    for (I item = (I)blockIdx.x; item < items; item += (I)gridDim.x) {
        const I j = item / S;
        const I s = item - j * S;
        I t = j;
        const I kw = t % KW; t /= KW;
        const I kh = t % KH; t /= KH;
        const I kd = t % KD; t /= KD;
        const I ci = t % Cg;
        const I k = t / Cg;
        const I c = (k / Kg) * Cg + ci;
        const I r0 = s * chunk;
        const I r1 = (R - r0 < chunk) ? R : r0 + chunk;
        A acc = A(0);
        for (I r = r0 + (I)threadIdx.x; r < r1; r += (I)blockDim.x) {
            const I o = r % P;
            const I n = r / P;
            const I ow = o % OW;
            const I oh = (o / OW) % OH;
            const I od = o / (OW * OH);
            const I id = od * SD - PD + kd * DD;
            const I ih = oh * SH - PH + kh * DH;
            const I iw = ow * SW - PW + kw * DW;
            if (id >= 0 && id < D && ih >= 0 && ih < H && iw >= 0 && iw < W) {
                acc += to_acc(gy[(n * C_col + k) * P + o]) *
                       to_acc(x[(((n * C_img + c) * D + id) * H + ih) * W + iw]);
            }
        }
        sbuf[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned int off = CYC_REDUCE_BLOCK / 2; off > 0; off >>= 1) {
            if (threadIdx.x < off) sbuf[threadIdx.x] += sbuf[threadIdx.x + off];
            __syncthreads();
        }
        if (threadIdx.x == 0) partial[item] = sbuf[0];
        __syncthreads();             // sbuf is reused by the next item
    }
}

// reduce_partials: pass 2, out[j] = sum_s partial[j, s] in the order s = 0, 1, ...
template <typename T, typename I>
__global__ void reduce_partials(const typename Acc<T>::type* __restrict__ partial,
                                T* __restrict__ out, const I n, const I S) {
    typedef typename Acc<T>::type A;
    CYC_GRID_STRIDE(j, n) {
        A acc = A(0);
        const typename Acc<T>::type* pj = partial + j * S;
        for (I s = 0; s < S; ++s) acc += pj[s];
        out[j] = from_acc<T>(acc);
    }
}
