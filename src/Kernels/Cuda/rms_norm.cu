// Fused RMSNorm (Zhang & Sennrich 2019) over the last dimension, forward and backward, with the weight frozen
// (backward gives dx only, as QLoRA trains adapters alone). One block per row; the row lives in registers between
// the reduction and the output, so each element is read once and written once. Statistics in fp32 whatever the
// compute dtype (bf16 or fp32), the output rounded once more where the torch-op reference rounds
// (RmsNormReference.cs; the C# op tests the same formulas on the CPU):
//   Llama:  y = R(w * R(h * r)),          r = rsqrt(mean(h^2) + eps), h in fp32     (HF LlamaRMSNorm)
//   Gemma:  y = R((h * r) * (1 + w))      (the (1 + w) variant, all fp32, one rounding; HF GemmaRMSNorm)
//   residual variant: h = R(x + residual) is also written out (the next residual stream), then normed.
// R() rounds to the compute dtype (identity in fp32). The mean of squares is a tree sum, not torch's order, and
// rsqrt is rsqrt.approx (as CUDA's rsqrtf): outputs can differ from the torch ops by one rounding step of R().
// Backward (dy -> dx), from the saved h and the per-row r (fp32):
//   g = R(dy * w) (Llama) or dy * (1 + w) (Gemma);   dx = g * r - h * (r^3 * sum(g * h) / H)
//   residual variant: dx = R(dh + R(dx_norm)), dh being the gradient that reached h from its other use.
#include "qln_cuda.h"

constexpr int kThreads = 256;
constexpr int kMaxChunks = 4; // 8 elements per chunk: rows up to 256 * 4 * 8 = 8192 wide

template <bool kBf16>
QLN_DEVICE void load8(const void* row, int chunk, float v[8])
{
    if (kBf16)
    {
        qln_u32x4 u = qln_ld16((const char*)row + (i64)chunk * 16);
        u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; k++) { v[2 * k] = qln_bf16_lo(w[k]); v[2 * k + 1] = qln_bf16_hi(w[k]); }
    }
    else
    {
        qln_u32x4 a = qln_ld16((const char*)row + (i64)chunk * 32), b = qln_ld16((const char*)row + (i64)chunk * 32 + 16);
        v[0] = qln_as_float(a.x); v[1] = qln_as_float(a.y); v[2] = qln_as_float(a.z); v[3] = qln_as_float(a.w);
        v[4] = qln_as_float(b.x); v[5] = qln_as_float(b.y); v[6] = qln_as_float(b.z); v[7] = qln_as_float(b.w);
    }
}

template <bool kBf16>
QLN_DEVICE void store8(void* row, int chunk, const float v[8])
{
    if (kBf16)
    {
        qln_st16((char*)row + (i64)chunk * 16, qln_u32x4{qln_pack_bf16x2(v[0], v[1]), qln_pack_bf16x2(v[2], v[3]),
                                                         qln_pack_bf16x2(v[4], v[5]), qln_pack_bf16x2(v[6], v[7])});
    }
    else
    {
        qln_st16((char*)row + (i64)chunk * 32, qln_u32x4{qln_as_u32(v[0]), qln_as_u32(v[1]), qln_as_u32(v[2]), qln_as_u32(v[3])});
        qln_st16((char*)row + (i64)chunk * 32 + 16, qln_u32x4{qln_as_u32(v[4]), qln_as_u32(v[5]), qln_as_u32(v[6]), qln_as_u32(v[7])});
    }
}

template <bool kBf16>
QLN_DEVICE float round_to(float x) { return kBf16 ? qln_round_bf16(x) : x; }

// Sum over the block; every thread gets the total. Uses shared[0..31]; call once per kernel.
QLN_DEVICE float block_sum(float v, float* shared)
{
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += qln_shfl_xor(v, m);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) shared[warp] = v;
    qln_syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? shared[lane] : 0.0f;
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += qln_shfl_xor(v, m);
    return v;
}

// x, residual, y, h_out: (rows, H) contiguous in the compute dtype; weight (H) in the compute dtype;
// rstd_out: (rows) fp32. H % 8 == 0 and H <= 8192.
template <bool kBf16, bool kResidual, bool kGemma>
QLN_DEVICE void rms_forward(const void* __restrict__ x, const void* __restrict__ residual, const void* __restrict__ weight,
                            void* __restrict__ y, void* __restrict__ h_out, float* __restrict__ rstd_out, int H, float eps)
{
    __shared__ float shared[32];
    const int esize = kBf16 ? 2 : 4;
    const i64 offset = (i64)blockIdx.x * H * esize;
    const int chunks = H / 8;
    float h[kMaxChunks][8];
    float ss = 0.0f;
#pragma unroll
    for (int c = 0; c < kMaxChunks; c++)
    {
        int chunk = threadIdx.x + c * kThreads;
        if (chunk >= chunks) break;
        load8<kBf16>((const char*)x + offset, chunk, h[c]);
        if (kResidual)
        {
            float r[8];
            load8<kBf16>((const char*)residual + offset, chunk, r);
#pragma unroll
            for (int k = 0; k < 8; k++) h[c][k] = round_to<kBf16>(h[c][k] + r[k]);
            store8<kBf16>((char*)h_out + offset, chunk, h[c]);
        }
#pragma unroll
        for (int k = 0; k < 8; k++) ss = qln_fma(h[c][k], h[c][k], ss);
    }
    ss = block_sum(ss, shared);
    const float r = qln_rsqrt(ss * (1.0f / (float)H) + eps);
    if (threadIdx.x == 0) rstd_out[blockIdx.x] = r;
#pragma unroll
    for (int c = 0; c < kMaxChunks; c++)
    {
        int chunk = threadIdx.x + c * kThreads;
        if (chunk >= chunks) break;
        float w[8], out[8];
        load8<kBf16>(weight, chunk, w);
#pragma unroll
        for (int k = 0; k < 8; k++)
            out[k] = kGemma ? (h[c][k] * r) * (1.0f + w[k]) : w[k] * round_to<kBf16>(h[c][k] * r);
        store8<kBf16>((char*)y + offset, chunk, out);
    }
}

// dy, h, dh_in (residual variant: the gradient of h from its other use), dx: (rows, H); rstd: (rows) fp32.
template <bool kBf16, bool kResidual, bool kGemma>
QLN_DEVICE void rms_backward(const void* __restrict__ dy, const void* __restrict__ hsaved, const float* __restrict__ rstd,
                             const void* __restrict__ weight, const void* __restrict__ dh_in, void* __restrict__ dx, int H)
{
    __shared__ float shared[32];
    const int esize = kBf16 ? 2 : 4;
    const i64 offset = (i64)blockIdx.x * H * esize;
    const int chunks = H / 8;
    float g[kMaxChunks][8], h[kMaxChunks][8];
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < kMaxChunks; c++)
    {
        int chunk = threadIdx.x + c * kThreads;
        if (chunk >= chunks) break;
        float w[8];
        load8<kBf16>((const char*)dy + offset, chunk, g[c]);
        load8<kBf16>((const char*)hsaved + offset, chunk, h[c]);
        load8<kBf16>(weight, chunk, w);
#pragma unroll
        for (int k = 0; k < 8; k++)
        {
            g[c][k] = kGemma ? g[c][k] * (1.0f + w[k]) : round_to<kBf16>(g[c][k] * w[k]);
            s = qln_fma(g[c][k], h[c][k], s);
        }
    }
    s = block_sum(s, shared);
    const float r = rstd[blockIdx.x];
    const float coef = r * r * r * s * (1.0f / (float)H);
#pragma unroll
    for (int c = 0; c < kMaxChunks; c++)
    {
        int chunk = threadIdx.x + c * kThreads;
        if (chunk >= chunks) break;
        float out[8];
#pragma unroll
        for (int k = 0; k < 8; k++) out[k] = g[c][k] * r - h[c][k] * coef;
        if (kResidual)
        {
            float d[8];
            load8<kBf16>((const char*)dh_in + offset, chunk, d);
#pragma unroll
            for (int k = 0; k < 8; k++) out[k] = d[k] + round_to<kBf16>(out[k]);
        }
        store8<kBf16>((char*)dx + offset, chunk, out);
    }
}

#define QLN_FWD(name, bf16, res, gemma)                                                                             \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                          \
        name(const void* x, const void* residual, const void* weight, void* y, void* h_out, float* rstd_out, int H, \
             float eps)                                                                                             \
    {                                                                                                               \
        rms_forward<bf16, res, gemma>(x, residual, weight, y, h_out, rstd_out, H, eps);                             \
    }
#define QLN_BWD(name, bf16, res, gemma)                                                                             \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                          \
        name(const void* dy, const void* h, const float* rstd, const void* weight, const void* dh_in, void* dx, int H) \
    {                                                                                                               \
        rms_backward<bf16, res, gemma>(dy, h, rstd, weight, dh_in, dx, H);                                          \
    }

QLN_FWD(qln_rmsnorm_fwd_bf16, true, false, false)
QLN_FWD(qln_rmsnorm_fwd_f32, false, false, false)
QLN_FWD(qln_rmsnorm_fwd_res_bf16, true, true, false)
QLN_FWD(qln_rmsnorm_fwd_res_f32, false, true, false)
QLN_FWD(qln_rmsnorm_fwd_gemma_bf16, true, false, true)
QLN_FWD(qln_rmsnorm_fwd_gemma_f32, false, false, true)
QLN_FWD(qln_rmsnorm_fwd_res_gemma_bf16, true, true, true)
QLN_FWD(qln_rmsnorm_fwd_res_gemma_f32, false, true, true)
QLN_BWD(qln_rmsnorm_bwd_bf16, true, false, false)
QLN_BWD(qln_rmsnorm_bwd_f32, false, false, false)
QLN_BWD(qln_rmsnorm_bwd_res_bf16, true, true, false)
QLN_BWD(qln_rmsnorm_bwd_res_f32, false, true, false)
QLN_BWD(qln_rmsnorm_bwd_gemma_bf16, true, false, true)
QLN_BWD(qln_rmsnorm_bwd_gemma_f32, false, false, true)
QLN_BWD(qln_rmsnorm_bwd_res_gemma_bf16, true, true, true)
QLN_BWD(qln_rmsnorm_bwd_res_gemma_f32, false, true, true)
