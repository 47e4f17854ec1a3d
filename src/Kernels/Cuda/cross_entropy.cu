// Next-token cross-entropy of one chunk of logit rows, loss and gradient in one kernel, the gradient written over
// the logits (the idea of Liger-Kernel's fused linear cross-entropy, Hsu et al. 2024): the chunk's logits stay in
// the compute dtype and nothing of the vocabulary's size is made in fp32. One block per row, two passes over it:
//   pass 1: the row's maximum m and s = sum_j e^(x_j - m), an online softmax (Milakov & Gimelshein 2018) per thread,
//           then combined over the block; lse = m + ln s
//   loss  = lse - x_t for the row's target t, 0 for an ignored row (target == ignore_index), NaN for a target
//           outside [0, V) (torch raises a device-side assert there; a NaN makes the step's guard skip it instead)
//   pass 2: grad_j = R(e^(x_j - lse) - [j == t]), 0 on an ignored row, written over x_j
// R() rounds to the compute dtype (identity in fp32). This is what autograd computes through the torch-op reference
// (logits.to(fp32), F.cross_entropy(reduction: sum), backward: softmax - onehot in fp32, cast back to the logits'
// dtype by the cast's backward), all in fp32 from the same inputs; the sums run in another order and e^x and ln are
// ours (qln_exp ~2 ulp, lg2.approx ~2^-22 absolute), so the loss differs from the reference's in the last fp32 bits
// and a gradient element, rarely, by one rounding step of R(). A second read of the row comes from L2: a 16M-logit
// chunk of bf16 is 32 MiB, within an H100's or H200's 50 MiB.
// logits: (rows, V) contiguous, V % 8 == 0, 16-byte aligned; targets: (rows) int64; loss: (rows) fp32.
#include "qln_cuda.h"

constexpr int kThreads = 256;

template <bool kBf16>
QLN_DEVICE void load8(const char* row, i64 chunk, float v[8])
{
    if (kBf16)
    {
        qln_u32x4 u = qln_ld16(row + chunk * 16);
        u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; k++) { v[2 * k] = qln_bf16_lo(w[k]); v[2 * k + 1] = qln_bf16_hi(w[k]); }
    }
    else
    {
        qln_u32x4 a = qln_ld16(row + chunk * 32), b = qln_ld16(row + chunk * 32 + 16);
        v[0] = qln_as_float(a.x); v[1] = qln_as_float(a.y); v[2] = qln_as_float(a.z); v[3] = qln_as_float(a.w);
        v[4] = qln_as_float(b.x); v[5] = qln_as_float(b.y); v[6] = qln_as_float(b.z); v[7] = qln_as_float(b.w);
    }
}

template <bool kBf16>
QLN_DEVICE void store8(char* row, i64 chunk, const float v[8])
{
    if (kBf16)
        qln_st16(row + chunk * 16, qln_u32x4{qln_pack_bf16x2(v[0], v[1]), qln_pack_bf16x2(v[2], v[3]),
                                             qln_pack_bf16x2(v[4], v[5]), qln_pack_bf16x2(v[6], v[7])});
    else
    {
        qln_st16(row + chunk * 32, qln_u32x4{qln_as_u32(v[0]), qln_as_u32(v[1]), qln_as_u32(v[2]), qln_as_u32(v[3])});
        qln_st16(row + chunk * 32 + 16, qln_u32x4{qln_as_u32(v[4]), qln_as_u32(v[5]), qln_as_u32(v[6]), qln_as_u32(v[7])});
    }
}

constexpr float kNegInf = -__builtin_inff();

// (m, s) and (om, os), two partial softmax denominators s = sum e^(x - m), as one over their union. A side with no
// elements has m = -inf and s = 0 and contributes nothing (no -inf - -inf is ever formed).
QLN_DEVICE void combine(float& m, float& s, float om, float os)
{
    if (om == kNegInf) return;
    if (m == kNegInf) { m = om; s = os; return; }
    if (om > m) { s = s * qln_exp(m - om) + os; m = om; }
    else s = s + os * qln_exp(om - m);
}

// ln x for x >= 1 (the denominator s is at least e^0 = 1): lg2.approx (absolute error ~2^-22) times ln 2.
QLN_DEVICE float log_of_sum(float x)
{
#if defined(QLN_HOST)
    return std::log(x);
#else
    float r;
    asm("lg2.approx.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r * 0.693147181f;
#endif
}

template <bool kBf16>
QLN_DEVICE void cross_entropy_row(void* __restrict__ logits, const i64* __restrict__ targets, float* __restrict__ loss,
                                  int V, i64 ignore)
{
    __shared__ float shared_m[32], shared_s[32], shared_xt[1];
    const int esize = kBf16 ? 2 : 4;
    char* row = (char*)logits + (i64)blockIdx.x * V * esize;
    const i64 t = targets[blockIdx.x];
    const i64 chunks = V / 8;

    float m = kNegInf, s = 0.0f;
    for (i64 c = threadIdx.x; c < chunks; c += kThreads)
    {
        float v[8];
        load8<kBf16>(row, c, v);
        float cm = v[0];
#pragma unroll
        for (int k = 1; k < 8; k++) cm = v[k] > cm ? v[k] : cm;
        if (cm == kNegInf) continue;   // eight masked logits: nothing to add (and no -inf - -inf)
        float cs = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) cs += qln_exp(v[k] - cm);
        combine(m, s, cm, cs);
    }
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1)
    {
        float om = qln_shfl_xor(m, mask), os = qln_shfl_xor(s, mask);
        combine(m, s, om, os);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    // The target's logit, read before pass 2 writes over the row.
    if (threadIdx.x == 0)
    {
        float xt = 0.0f;
        if (t >= 0 && t < V) xt = kBf16 ? qln_as_float((u32)((const unsigned short*)row)[t] << 16) : ((const float*)row)[t];
        shared_xt[0] = xt;
    }
    qln_syncthreads();
    m = lane < (int)(blockDim.x >> 5) ? shared_m[lane] : kNegInf;
    s = lane < (int)(blockDim.x >> 5) ? shared_s[lane] : 0.0f;
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1)
    {
        float om = qln_shfl_xor(m, mask), os = qln_shfl_xor(s, mask);
        combine(m, s, om, os);
    }
    const float lse = m + log_of_sum(s);
    const bool ignored = t == ignore, valid = t >= 0 && t < V;
    if (threadIdx.x == 0)
        loss[blockIdx.x] = ignored ? 0.0f : valid ? lse - shared_xt[0] : qln_as_float(0x7fc00000u);

    for (i64 c = threadIdx.x; c < chunks; c += kThreads)
    {
        float v[8];
        load8<kBf16>(row, c, v);
#pragma unroll
        for (int k = 0; k < 8; k++)
        {
            float p = qln_exp(v[k] - lse);
            v[k] = valid ? (c * 8 + k == t ? p - 1.0f : p) : 0.0f;
        }
        store8<kBf16>(row, c, v);
    }
}

extern "C" __global__ void __launch_bounds__(kThreads)
    qln_cross_entropy_bf16(void* logits, const i64* targets, float* loss, int V, i64 ignore)
{
    cross_entropy_row<true>(logits, targets, loss, V, ignore);
}

extern "C" __global__ void __launch_bounds__(kThreads)
    qln_cross_entropy_f32(void* logits, const i64* targets, float* loss, int V, i64 ignore)
{
    cross_entropy_row<false>(logits, targets, loss, V, ignore);
}
