// Inverted dropout with the mask of Models.RandomStream (C#), generated in the kernel instead of by ~15 int64
// tensor ops, and never stored: backward hashes the same counters again. The bits (RandomStream.KeepMask):
//   draw key k (host: SplitMix64 of the stream's seed and draw count), word w = i / 4, lane = i % 4 of element i,
//   z = (w + 1) * GAMMA + k  (mod 2^64), then SplitMix64's finalizer (Steele, Lea & Flood 2014):
//   z ^= z >> 30; z *= MIX1; z ^= z >> 27; z *= MIX2; z ^= z >> 31;
//   bits = (z >> 16 * lane) & 0xffff,   keep = bits >= threshold   (threshold = round(p * 65536))
// and the arithmetic of LoraDropout's torch ops, x.mul(keep).mul_(scale) with each op rounding to the dtype
// (torch computes bf16 ops in fp32 with the double scale cast to float):
//   forward:  y  = R(R(x * keep) * scale)          keep as 1.0f / 0.0f, so a dropped -x gives -0 and NaN stays NaN
//   backward: dx = R(R(dy * scale) * keep)          autograd through mul_(scale), then mul(keep)
// R() rounds to the dtype (bf16 round-to-nearest-even, or nothing for fp32). Bit for bit equal to the torch ops.
// A thread takes 8 consecutive elements (two hash words), loaded and stored as 16-byte vectors.
#include "qln_cuda.h"

constexpr int kThreads = 256;
constexpr u64 kGamma = 0x9E3779B97F4A7C15ull;
constexpr u64 kMix1 = 0xBF58476D1CE4E5B9ull;
constexpr u64 kMix2 = 0x94D049BB133111EBull;

// The 64 random bits of hash word w (0-based) of the draw with key `key`.
QLN_DEVICE u64 qln_dropout_word(u64 key, u64 w)
{
    u64 z = (w + 1) * kGamma + key;
    z = (z ^ (z >> 30)) * kMix1;
    z = (z ^ (z >> 27)) * kMix2;
    return z ^ (z >> 31);
}

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

// in: x (forward) or dy (backward); out: y or dx; n8 = numel / 8.
template <bool kBf16, bool kBackward>
QLN_DEVICE void dropout(const void* __restrict__ in, void* __restrict__ out, u64 key, u32 threshold, float scale, i64 n8)
{
    i64 t = (i64)blockIdx.x * kThreads + threadIdx.x;
    if (t >= n8) return;
    i64 e = t * 8;                                // first element; its hash words are e/4 and e/4 + 1
    u64 words[2] = {qln_dropout_word(key, (u64)(e / 4)), qln_dropout_word(key, (u64)(e / 4 + 1))};
    float v[8];
    load8<kBf16>(in, e, v);
#pragma unroll
    for (int k = 0; k < 8; k++)
    {
        u32 bits = (u32)(words[k / 4] >> (16 * (k % 4))) & 0xffffu;
        float keep = bits >= threshold ? 1.0f : 0.0f;
        v[k] = kBackward ? round_to<kBf16>(round_to<kBf16>(v[k] * scale) * keep)
                         : round_to<kBf16>(round_to<kBf16>(v[k] * keep) * scale);
    }
    store8<kBf16>(out, e, v);
}

#define QLN_DROPOUT(name, bf16, backward)                                                                         \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                        \
    name(const void* in, void* out, u64 key, u32 threshold, float scale, i64 n8)                                 \
    {                                                                                                             \
        dropout<bf16, backward>(in, out, key, threshold, scale, n8);                                              \
    }

QLN_DROPOUT(qln_dropout_fwd_bf16, true, false)
QLN_DROPOUT(qln_dropout_fwd_f32, false, false)
QLN_DROPOUT(qln_dropout_bwd_bf16, true, true)
QLN_DROPOUT(qln_dropout_bwd_f32, false, true)
