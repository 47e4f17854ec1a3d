// Fused gated linear units (Shazeer 2020, "GLU Variants Improve Transformer"), forward and backward, elementwise
// over the gate and up projections' outputs (same shape; contiguous, or row-strided: see the kernels below):
//   SwiGLU (Llama):       out = R(R(silu(g)) * u),             silu(g) = g / (1 + e^-g)
//   GeGLU-tanh (Gemma):   out = R(R(gelu_tanh(g)) * u),        gelu_tanh(g) = g/2 * (1 + tanh(b (g + k g^3)))
// R() rounds to the compute dtype, where the torch ops `F.silu(g) * u` / `F.gelu(g, "tanh") * u` round (their
// CUDA kernels compute in fp32 and round each op's output). Backward, as autograd through those ops:
//   du = R(dy * R(act(g))),   dg = R(R(dy * u) * act'(g))
// with act' written as torch's silu_backward / gelu_backward kernels write it (and the FMAs nvcc forms there).
// e^x and tanh are our own (qln_exp, qln_tanh: ~2 ulp) instead of libdevice's, so act(g) can differ from the torch
// kernel's in the last fp32 bit and, rarely, R() of it by one bf16 step; `bench kernel` states the bound it meets.
#include "qln_cuda.h"

constexpr int kThreads = 256;

template <bool kBf16>
QLN_DEVICE float round_to(float x) { return kBf16 ? qln_round_bf16(x) : x; }

template <bool kBf16>
QLN_DEVICE void load8(const void* base, i64 e, float v[8])
{
    if (kBf16)
    {
        qln_u32x4 u = qln_ld16((const char*)base + e * 2);
        u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; k++) { v[2 * k] = qln_bf16_lo(w[k]); v[2 * k + 1] = qln_bf16_hi(w[k]); }
    }
    else
    {
        qln_u32x4 a = qln_ld16((const char*)base + e * 4), b = qln_ld16((const char*)base + e * 4 + 16);
        v[0] = qln_as_float(a.x); v[1] = qln_as_float(a.y); v[2] = qln_as_float(a.z); v[3] = qln_as_float(a.w);
        v[4] = qln_as_float(b.x); v[5] = qln_as_float(b.y); v[6] = qln_as_float(b.z); v[7] = qln_as_float(b.w);
    }
}

template <bool kBf16>
QLN_DEVICE void store8(void* base, i64 e, const float v[8])
{
    if (kBf16)
        qln_st16((char*)base + e * 2, qln_u32x4{qln_pack_bf16x2(v[0], v[1]), qln_pack_bf16x2(v[2], v[3]),
                                                qln_pack_bf16x2(v[4], v[5]), qln_pack_bf16x2(v[6], v[7])});
    else
    {
        qln_st16((char*)base + e * 4, qln_u32x4{qln_as_u32(v[0]), qln_as_u32(v[1]), qln_as_u32(v[2]), qln_as_u32(v[3])});
        qln_st16((char*)base + e * 4 + 16, qln_u32x4{qln_as_u32(v[4]), qln_as_u32(v[5]), qln_as_u32(v[6]), qln_as_u32(v[7])});
    }
}

// sqrt(2/pi) and the cubic coefficient, as torch's gelu kernels spell them (kBeta, kKappa).
constexpr float kBeta = 0.7978845608028654f;
constexpr float kKappa = 0.044715f;

template <bool kGelu>
QLN_DEVICE float act(float g)
{
    if (!kGelu) return g / (1.0f + qln_exp(-g));
    float cube = g * g * g;
    float inner = kBeta * qln_fma(kKappa, cube, g);
    return 0.5f * g * (1.0f + qln_tanh(inner));
}

// d act / d g times the incoming gradient d (already rounded to the compute dtype).
template <bool kGelu>
QLN_DEVICE float act_backward(float d, float g)
{
    if (!kGelu)
    {
        float s = 1.0f / (1.0f + qln_exp(-g));
        return d * s * qln_fma(g, 1.0f - s, 1.0f);
    }
    float sq = g * g, cube = sq * g;
    float inner = kBeta * qln_fma(kKappa, cube, g);
    float t = qln_tanh(inner);
    float left = 0.5f * g, right = 1.0f + t;
    float left_derivative = 0.5f * right;
    float tanh_derivative = qln_fma(-t, t, 1.0f);
    float inner_derivative = kBeta * qln_fma(3.0f * kKappa, sq, 1.0f);
    return d * qln_fma(left * tanh_derivative, inner_derivative, left_derivative);
}

// One vector of 8 elements: gate and up read at og and ou, the contiguous tensors (out; dy, dg, du) at oc.
template <bool kBf16, bool kGelu>
QLN_DEVICE void glu_forward_at(const void* __restrict__ g, const void* __restrict__ u, void* __restrict__ out, i64 og,
                               i64 ou, i64 oc)
{
    float gv[8], uv[8], o[8];
    load8<kBf16>(g, og, gv);
    load8<kBf16>(u, ou, uv);
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = round_to<kBf16>(act<kGelu>(gv[j])) * uv[j];
    store8<kBf16>(out, oc, o);
}

template <bool kBf16, bool kGelu>
QLN_DEVICE void glu_backward_at(const void* __restrict__ dy, const void* __restrict__ g, const void* __restrict__ u,
                                void* __restrict__ dg, void* __restrict__ du, i64 og, i64 ou, i64 oc)
{
    float dv[8], gv[8], uv[8], dgv[8], duv[8];
    load8<kBf16>(dy, oc, dv);
    load8<kBf16>(g, og, gv);
    load8<kBf16>(u, ou, uv);
#pragma unroll
    for (int j = 0; j < 8; j++)
    {
        duv[j] = dv[j] * round_to<kBf16>(act<kGelu>(gv[j]));
        dgv[j] = act_backward<kGelu>(round_to<kBf16>(dv[j] * uv[j]), gv[j]);
    }
    store8<kBf16>(dg, oc, dgv);
    store8<kBf16>(du, oc, duv);
}

// Contiguous gate and up: vector i of n8 = numel / 8, one per thread, blocks of kThreads.
// Row-strided gate and up (the two halves of one (rows, 2 cols) product when gate and up are one GEMM): (rows, cols)
// with row strides ldg and ldu, cols8 = cols / 8; blockIdx.x * blockDim.x + threadIdx.x is the vector within a row
// and blockIdx.y steps over the rows (a grid-stride loop past 65535), so no thread divides (a 64-bit division per
// vector made the flat kernel 17% slower on an H200); the output and gradients are contiguous (rows, cols).
#define QLN_GLU(suffix, bf16, gelu)                                                                                 \
    extern "C" __global__ void __launch_bounds__(kThreads) qln_glu_fwd_##suffix(const void* g, const void* u,      \
                                                                                void* out, i64 n8)                  \
    {                                                                                                               \
        const i64 i = (i64)blockIdx.x * kThreads + threadIdx.x;                                                     \
        if (i < n8) glu_forward_at<bf16, gelu>(g, u, out, i * 8, i * 8, i * 8);                                     \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(kThreads) qln_glu_bwd_##suffix(                                   \
        const void* dy, const void* g, const void* u, void* dg, void* du, i64 n8)                                   \
    {                                                                                                               \
        const i64 i = (i64)blockIdx.x * kThreads + threadIdx.x;                                                     \
        if (i < n8) glu_backward_at<bf16, gelu>(dy, g, u, dg, du, i * 8, i * 8, i * 8);                             \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(kThreads) qln_glu_fwd_rows_##suffix(                              \
        const void* g, const void* u, void* out, i64 rows, i64 cols8, i64 ldg, i64 ldu)                             \
    {                                                                                                               \
        const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                   \
        if (c >= cols8) return;                                                                                     \
        for (i64 r = blockIdx.y; r < rows; r += gridDim.y)                                                          \
            glu_forward_at<bf16, gelu>(g, u, out, r * ldg + c * 8, r * ldu + c * 8, (r * cols8 + c) * 8);           \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(kThreads) qln_glu_bwd_rows_##suffix(                              \
        const void* dy, const void* g, const void* u, void* dg, void* du, i64 rows, i64 cols8, i64 ldg, i64 ldu)    \
    {                                                                                                               \
        const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                   \
        if (c >= cols8) return;                                                                                     \
        for (i64 r = blockIdx.y; r < rows; r += gridDim.y)                                                          \
            glu_backward_at<bf16, gelu>(dy, g, u, dg, du, r * ldg + c * 8, r * ldu + c * 8, (r * cols8 + c) * 8);   \
    }

QLN_GLU(swiglu_bf16, true, false)
QLN_GLU(swiglu_f32, false, false)
QLN_GLU(geglu_bf16, true, true)
QLN_GLU(geglu_f32, false, true)
