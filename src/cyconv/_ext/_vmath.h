/* Element math of the activation and normalisation kernels (eltwise.pyx, norm.pyx).
 *
 * float32 functions are branch-free polynomials (selects, no libm calls), so that gcc
 * vectorises the loops that call them at -O2/-O3 with the baseline or the AVX2 flags;
 * float64 functions call libm.  Accuracy of the float32 versions, against a float64
 * libm on the same input:
 *   cy_expf        Cephes' expf polynomial: < 2 ulp; +inf above 88.72, denormals
 *                  below -87.34, 0 below -103.97; NaN passes.
 *   cy_tanhf       Eigen's 13/6 rational approximation of tanh on [-7.9, 7.9]:
 *                  a few ulp; exactly +-1 beyond +-9, x itself below |x| < 4e-4.
 *   cy_erff        Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7 (the formula
 *                  PyTorch's vectorised CPU erf uses).
 * Reductions (sums of float32 in float64, dot products) carry `omp simd reduction`
 * so that they vectorise; their summation order depends on the build only, never on
 * the thread count.
 */
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>

#define CY_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP)
#define CY_SIMD_REDUCE(v) CY_PRAGMA(omp simd reduction(+:v))
#define CY_SIMD_REDUCE2(a, b) CY_PRAGMA(omp simd reduction(+:a, b))
#define CY_SIMD_MAX(v) CY_PRAGMA(omp simd reduction(max:v))
#else
#define CY_SIMD_REDUCE(v)
#define CY_SIMD_REDUCE2(a, b)
#define CY_SIMD_MAX(v)
#endif

static inline float cy_pow2if(int32_t e) {          /* 2**e for -126 <= e <= 127 */
    int32_t bits = (e + 127) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float cy_expf(float x) {
    const float hi = 88.72283935546875f, lo = -103.97208404541016f;
    const int nan = x != x;
    float xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    xc = nan ? 0.0f : xc;
    /* n = round(xc / ln 2) by the 1.5 * 2**23 trick (|xc / ln 2| < 2**22) */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2**n in two factors, each a normal number, for n in [-150, 128] */
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1;
    float y = p * cy_pow2if(n1) * cy_pow2if(ni - n1);
    y = x > hi ? INFINITY : y;
    y = x < lo ? 0.0f : y;
    return nan ? x : y;
}

static inline float cy_tanhf(float x) {
    const float c = 7.90531110763549805f;
    float xc = x > c ? c : x;
    xc = xc < -c ? -c : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float y = p / q;
    float ax = x < 0 ? -x : x;
    y = ax < 0.0004f ? x : y;
    y = x > 9.0f ? 1.0f : y;
    y = x < -9.0f ? -1.0f : y;
    return y;                       /* NaN: every select keeps p / q = NaN */
}

/* erf(x) given e = exp(-x * x) (GELU's gradient shares e with the normal density) */
static inline float cy_erff_e(float x, float e) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (0.3275911f * ax + 1.0f);
    float r = 1.061405429f;
    r = r * t + -1.453152027f;
    r = r * t + 1.421413741f;
    r = r * t + -0.284496736f;
    r = r * t + 0.254829592f;
    float v = 1.0f - r * t * e;
    return x < 0 ? -v : (x != x ? x : v);
}

static inline float cy_erff(float x) { return cy_erff_e(x, cy_expf(-x * x)); }

static inline double cy_expd(double x) { return exp(x); }
static inline double cy_tanhd(double x) { return tanh(x); }
static inline double cy_erfd(double x) { return erf(x); }

/* -- reductions ------------------------------------------------------------------------ */

static inline double cy_f_sum(const float* a, ptrdiff_t n) {
    double s = 0;
    CY_SIMD_REDUCE(s)
    for (ptrdiff_t i = 0; i < n; ++i) s += (double)a[i];
    return s;
}

static inline double cy_d_sum(const double* a, ptrdiff_t n) {
    double s = 0;
    CY_SIMD_REDUCE(s)
    for (ptrdiff_t i = 0; i < n; ++i) s += a[i];
    return s;
}

/* sum((a - m)**2) */
static inline double cy_f_sqdev(const float* a, ptrdiff_t n, double m) {
    double s = 0;
    CY_SIMD_REDUCE(s)
    for (ptrdiff_t i = 0; i < n; ++i) {
        double d = (double)a[i] - m;
        s += d * d;
    }
    return s;
}

static inline double cy_d_sqdev(const double* a, ptrdiff_t n, double m) {
    double s = 0;
    CY_SIMD_REDUCE(s)
    for (ptrdiff_t i = 0; i < n; ++i) {
        double d = a[i] - m;
        s += d * d;
    }
    return s;
}

/* *sg += sum(g), *sgx += sum(g * (a - m)) */
static inline void cy_f_sum_dot(const float* g, const float* a, ptrdiff_t n, double m,
                                double* sg, double* sgx) {
    double s = 0, t = 0;
    CY_SIMD_REDUCE2(s, t)
    for (ptrdiff_t i = 0; i < n; ++i) {
        double gi = (double)g[i];
        s += gi;
        t += gi * ((double)a[i] - m);
    }
    *sg += s;
    *sgx += t;
}

static inline void cy_d_sum_dot(const double* g, const double* a, ptrdiff_t n, double m,
                                double* sg, double* sgx) {
    double s = 0, t = 0;
    CY_SIMD_REDUCE2(s, t)
    for (ptrdiff_t i = 0; i < n; ++i) {
        s += g[i];
        t += g[i] * (a[i] - m);
    }
    *sg += s;
    *sgx += t;
}

/* the float32 maximum of a[0:n] (NaN ignored), -inf for n = 0 */
static inline float cy_f_max(const float* a, ptrdiff_t n) {
    float m = -INFINITY;
    CY_SIMD_MAX(m)
    for (ptrdiff_t i = 0; i < n; ++i) m = a[i] > m ? a[i] : m;
    return m;
}

static inline double cy_d_max(const double* a, ptrdiff_t n) {
    double m = -INFINITY;
    CY_SIMD_MAX(m)
    for (ptrdiff_t i = 0; i < n; ++i) m = a[i] > m ? a[i] : m;
    return m;
}

/* -- activations: forward y = f(x), and the gradient factor -------------------------------
 * Formulas are PyTorch's CPU kernels' (aten/src/ATen/native/cpu/Activation.cpp,
 * UnaryOpsKernel.cpp):
 *   sigmoid    1 / (1 + exp(-x))                    grad from y: gy * (1 - y) * y
 *   tanh                                            grad from y: gy * (1 - y * y)
 *   gelu       x * 0.5 * (1 + erf(x / sqrt 2))      grad from x: gy * (cdf + x * pdf)
 *   gelu_tanh  0.5 * x * (1 + tanh(b * (x + k x^3)))  b = sqrt(2 / pi), k = 0.044715
 *   silu       x / (1 + exp(-x))                    grad from x: gy * s * (1 + x * (1 - s))
 */
#define CY_SQRT1_2 0.70710678118654752440
#define CY_INV_SQRT_2PI 0.39894228040143267794
#define CY_GELU_BETA 0.79788456080286535588      /* sqrt(2 / pi) */
#define CY_GELU_KAPPA 0.044715

static inline float cy_sigmoid_f(float x) { return 1.0f / (1.0f + cy_expf(-x)); }
static inline double cy_sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

static inline float cy_gelu_f(float x) {
    return x * 0.5f * (1.0f + cy_erff(x * (float)CY_SQRT1_2));
}
static inline double cy_gelu_d(double x) { return x * 0.5 * (1.0 + erf(x * CY_SQRT1_2)); }

static inline float cy_gelu_tanh_f(float x) {
    float inner = (float)CY_GELU_BETA * (x + (float)CY_GELU_KAPPA * x * x * x);
    return 0.5f * x * (1.0f + cy_tanhf(inner));
}
static inline double cy_gelu_tanh_d(double x) {
    double inner = CY_GELU_BETA * (x + CY_GELU_KAPPA * x * x * x);
    return 0.5 * x * (1.0 + tanh(inner));
}

static inline float cy_silu_f(float x) { return x / (1.0f + cy_expf(-x)); }
static inline double cy_silu_d(double x) { return x / (1.0 + exp(-x)); }

static inline float cy_gelu_grad_f(float gy, float x) {
    float z = x * (float)CY_SQRT1_2;
    float e = cy_expf(-z * z);                       /* exp(-x**2 / 2), used twice */
    float cdf = 0.5f * (1.0f + cy_erff_e(z, e));
    float pdf = e * (float)CY_INV_SQRT_2PI;
    return gy * (cdf + x * pdf);
}
static inline double cy_gelu_grad_d(double gy, double x) {
    double cdf = 0.5 * (1.0 + erf(x * CY_SQRT1_2));
    double pdf = exp(-0.5 * x * x) * CY_INV_SQRT_2PI;
    return gy * (cdf + x * pdf);
}

static inline float cy_gelu_tanh_grad_f(float gy, float x) {
    float x2 = x * x;
    float t = cy_tanhf((float)CY_GELU_BETA * (x + (float)CY_GELU_KAPPA * x2 * x));
    float dinner = (float)CY_GELU_BETA * (1.0f + 3.0f * (float)CY_GELU_KAPPA * x2);
    return gy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner);
}
static inline double cy_gelu_tanh_grad_d(double gy, double x) {
    double x2 = x * x;
    double t = tanh(CY_GELU_BETA * (x + CY_GELU_KAPPA * x2 * x));
    double dinner = CY_GELU_BETA * (1.0 + 3.0 * CY_GELU_KAPPA * x2);
    return gy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner);
}

static inline float cy_silu_grad_f(float gy, float x) {
    float s = 1.0f / (1.0f + cy_expf(-x));
    return gy * s * (1.0f + x * (1.0f - s));
}
static inline double cy_silu_grad_d(double gy, double x) {
    double s = 1.0 / (1.0 + exp(-x));
    return gy * s * (1.0 + x * (1.0 - s));
}

/* -- softmax helpers (vectorised reductions and selects) ------------------------------------ */

/* sum(exp(x - m)), storing each exp(x - m) in y unless y is NULL */
static inline float cy_f_exp_sum(const float* x, float* y, ptrdiff_t n, float m) {
    float s = 0;
    if (y != NULL) {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) {
            float e = cy_expf(x[i] - m);
            y[i] = e;
            s += e;
        }
    } else {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) s += cy_expf(x[i] - m);
    }
    return s;
}

static inline double cy_d_exp_sum(const double* x, double* y, ptrdiff_t n, double m) {
    double s = 0;
    for (ptrdiff_t i = 0; i < n; ++i) {
        double e = exp(x[i] - m);
        if (y != NULL) y[i] = e;
        s += e;
    }
    return s;
}

/* sum(a * b), or sum(a) when b is NULL, in the element type */
static inline float cy_f_dotf(const float* a, const float* b, ptrdiff_t n) {
    float s = 0;
    if (b == NULL) {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) s += a[i];
    } else {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) s += a[i] * b[i];
    }
    return s;
}

static inline double cy_d_dotf(const double* a, const double* b, ptrdiff_t n) {
    double s = 0;
    if (b == NULL) {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) s += a[i];
    } else {
        CY_SIMD_REDUCE(s)
        for (ptrdiff_t i = 0; i < n; ++i) s += a[i] * b[i];
    }
    return s;
}

/* m[i] = max(m[i], x[i]) (a NaN in x is skipped: the exponentials carry it) */
static inline void cy_f_max_into(float* m, const float* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) m[i] = x[i] > m[i] ? x[i] : m[i];
}

static inline void cy_d_max_into(double* m, const double* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) m[i] = x[i] > m[i] ? x[i] : m[i];
}

/* s[i] += exp(x[i] - m[i]), storing the exponentials in y unless y is NULL */
static inline void cy_f_exp_acc(const float* x, const float* m, float* s, float* y,
                                ptrdiff_t n) {
    if (y != NULL) {
        for (ptrdiff_t i = 0; i < n; ++i) {
            float e = cy_expf(x[i] - m[i]);
            y[i] = e;
            s[i] += e;
        }
    } else {
        for (ptrdiff_t i = 0; i < n; ++i) s[i] += cy_expf(x[i] - m[i]);
    }
}

static inline void cy_d_exp_acc(const double* x, const double* m, double* s, double* y,
                                ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) {
        double e = exp(x[i] - m[i]);
        if (y != NULL) y[i] = e;
        s[i] += e;
    }
}
