// im2col + GEMM family: the gathers around the cuBLAS GEMMs of cyconv._gpu.
//
// Assumptions (checked on the host by cyconv._params and cyconv._gpu): every array is
// C-contiguous and on the launching device, extents fit I, bias is null or has C
// entries.  Kernels run as guarded grid-stride loops on a 1-D grid of any size.
//
// The column matrix of a chunk of nb samples is laid out (G, CKK, nb, P), i.e.
// (C_img * KK, nb, P) with CKK = C_img / G * KK and P = OD * OH * OW, so that one batched
// GEMM over the G groups covers the whole chunk:
//
//     y_g (Kg, nb * P) = w_g (Kg, CKK) @ col_g (CKK, nb * P)          forward
//     gcol_g (CKK, nb * P) = w_g^T @ gy_g (Kg, nb * P)                 input gradient
//     gw_g^T (CKK, Kg) = col_g @ gy_g^T (nb * P, Kg)                   weight gradient
//
// The 2-D form of im2col_nd, for one sample, in NumPy:
//
//     xp = np.pad(x, ((0, 0), (PH, PH'), (PW, PW')))
//     col[c, kh, kw, oh, ow] = xp[c, oh * SH + kh * DH, ow * SW + kw * DW]
#include "common.cuh"

// im2col_nd: col[(c * KK + k) * nb + n, o] = x[n, c, o * S - P + k * Dil] (0 outside).
//
// x: (nb, C_img, D, H, W); col: (C_img * KK, nb, OD * OH * OW).
template <typename T, typename I>
__global__ void im2col_nd(const T* __restrict__ x, T* __restrict__ col, const I nb,
                          CYC_GEOM_PARAMS) {
    CYC_GEOM_DERIVED;
    const T zero = from_acc<T>(typename Acc<T>::type(0));
    CYC_GRID_STRIDE(i, C_img * KK * nb * P) {
        I t = i;
        const I ow = t % OW; t /= OW;
        const I oh = t % OH; t /= OH;
        const I od = t % OD; t /= OD;
        const I n = t % nb;  t /= nb;
        const I kw = t % KW; t /= KW;
        const I kh = t % KH; t /= KH;
        const I kd = t % KD;
        const I c = t / KD;
        const I id = od * SD - PD + kd * DD;
        const I ih = oh * SH - PH + kh * DH;
        const I iw = ow * SW - PW + kw * DW;
        T v = zero;
        if (id >= 0 && id < D && ih >= 0 && ih < H && iw >= 0 && iw < W) {
            v = x[(((n * C_img + c) * D + id) * H + ih) * W + iw];
        }
        col[i] = v;
    }
}

// col2im_nd: the adjoint of im2col_nd written as a gather, one thread per image element,
// so no two threads write the same address and no atomics are needed:
//
//     x[n, c, d, h, w] = bias[c] + sum over taps k with d = o * S - P + k * Dil for an
//                        output position o inside the column side of col[(c*KK+k)*nb+n, o]
//
// col: (C_img * KK, nb, P); x: (nb, C_img, D, H, W); bias: null or (C_img,).
// Used by the input gradient of a convolution and by the transposed convolution.
template <typename T, typename I>
__global__ void col2im_nd(const T* __restrict__ col, const T* __restrict__ bias,
                          T* __restrict__ x, const I nb, CYC_GEOM_PARAMS) {
    typedef typename Acc<T>::type A;
    CYC_GEOM_DERIVED;
    CYC_GRID_STRIDE(i, nb * C_img * IMG) {
        I t = i;
        const I w = t % W; t /= W;
        const I h = t % H; t /= H;
        const I d = t % D; t /= D;
        const I c = t % C_img;
        const I n = t / C_img;
        A acc = bias != nullptr ? to_acc(bias[c]) : A(0);
        const T* colc = col + (c * KK * nb + n) * P;   // row (c * KK + 0) * nb + n
        for (I kd = 0; kd < KD; ++kd) {
            const I td = d + PD - kd * DD;
            if (td < 0) break;                          // td only decreases with kd
            if (td % SD != 0) continue;
            const I od = td / SD;
            if (od >= OD) continue;
            for (I kh = 0; kh < KH; ++kh) {
                const I th = h + PH - kh * DH;
                if (th < 0) break;
                if (th % SH != 0) continue;
                const I oh = th / SH;
                if (oh >= OH) continue;
                for (I kw = 0; kw < KW; ++kw) {
                    const I tw = w + PW - kw * DW;
                    if (tw < 0) break;
                    if (tw % SW != 0) continue;
                    const I ow = tw / SW;
                    if (ow >= OW) continue;
                    const I k = (kd * KH + kh) * KW + kw;
                    acc += to_acc(colc[k * nb * P + (od * OH + oh) * OW + ow]);
                }
            }
        }
        x[i] = from_acc<T>(acc);
    }
}

// batch_to_chunk: dst (C, nb, P) = src (nb, C, P) transposed; the layout the GEMMs read
// a chunk of grad_output in (np.ascontiguousarray(src.transpose(1, 0, 2))).
template <typename T, typename I>
__global__ void batch_to_chunk(const T* __restrict__ src, T* __restrict__ dst, const I nb,
                               const I C, const I P) {
    CYC_GRID_STRIDE(i, nb * C * P) {
        const I p = i % P;
        const I t = i / P;
        const I n = t % nb;
        const I c = t / nb;
        dst[i] = src[(n * C + c) * P + p];
    }
}

// batch_to_chunk_t: dst (G, nb, P, Kg) from src (nb, G * Kg, P), the grad_output operand
// of the weight-gradient GEMM (src.reshape(nb, G, Kg, P).transpose(1, 0, 3, 2)).
template <typename T, typename I>
__global__ void batch_to_chunk_t(const T* __restrict__ src, T* __restrict__ dst, const I nb,
                                 const I G, const I Kg, const I P) {
    CYC_GRID_STRIDE(i, nb * G * Kg * P) {
        I t = i;
        const I k = t % Kg; t /= Kg;
        const I p = t % P;  t /= P;
        const I n = t % nb;
        const I g = t / nb;
        dst[i] = src[((n * G + g) * Kg + k) * P + p];
    }
}

// chunk_to_batch: dst (nb, C, P) = src (C, nb, P) transposed, plus bias[c] when bias is
// not null; writes the forward GEMM's result into the output array.
template <typename T, typename I>
__global__ void chunk_to_batch(const T* __restrict__ src, const T* __restrict__ bias,
                               T* __restrict__ dst, const I nb, const I C, const I P) {
    CYC_GRID_STRIDE(i, nb * C * P) {
        const I p = i % P;
        const I t = i / P;
        const I c = t % C;
        const I n = t / C;
        const T v = src[(c * nb + n) * P + p];
        dst[i] = bias != nullptr ? from_acc<T>(to_acc(v) + to_acc(bias[c])) : v;
    }
}

// add_bias: y (N, C, P) += bias[c], in place (the 1x1 path, whose GEMM writes y directly).
template <typename T, typename I>
__global__ void add_bias(T* __restrict__ y, const T* __restrict__ bias, const I N, const I C,
                         const I P) {
    CYC_GRID_STRIDE(i, N * C * P) {
        const I c = (i / P) % C;
        y[i] = from_acc<T>(to_acc(y[i]) + to_acc(bias[c]));
    }
}
