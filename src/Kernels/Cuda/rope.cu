// Fused rotary position embedding (Su et al. 2021) in Hugging Face's rotate_half layout, for q and k in one launch,
// forward and backward. Dimension i pairs with i + D/2; with x1, x2 the two halves and c, s the cos/sin rows:
//   forward:  out1 = R(R(x1 * c1) + R(-x2 * s1)),    out2 = R(R(x2 * c2) + R(x1 * s2))
//   backward: dx1  = R(R(dy1 * c1) + R(dy2 * s2)),   dx2  = R(R(dy2 * c2) + R(-dy1 * s1))
// R() rounds to the compute dtype: exactly the roundings of the torch ops `x * cos + rotate_half(x) * sin` and of
// autograd through them (RopeReference.cs), so the kernel equals them bit for bit in bf16 and in fp32.
// Tensors are (B, heads, T, D) views with any strides except a contiguous last dimension (q/k are transposes of
// the projections' (B, T, heads, D) output); the output has the input's strides. cos/sin are (B, T, D) with
// strides (cs_b, cs_t, 1) (cs_b = 0 broadcasts one row of positions over the batch).
#include "qln_cuda.h"

constexpr int kThreads = 256;

struct RopeTensor
{
    const void* in;
    void* out;
    i64 in_b, in_h, in_t;    // element strides of the input
    i64 out_b, out_h, out_t; // element strides of the output
    i64 rows;                // B * heads * T
    int heads;
    int pad;
};

template <bool kBf16>
QLN_DEVICE float round_to(float x) { return kBf16 ? qln_round_bf16(x) : x; }

// 8 consecutive elements starting at element e of a row.
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

// grid.y = 0 for q, 1 for k. Each thread rotates 8 pairs (8 elements of each half); D / 16 threads per row.
// Rows are numbered (b, t, head) with the head fastest, so neighbouring threads share cos/sin rows.
template <bool kBf16, bool kBackward>
QLN_DEVICE void rope(RopeTensor q, RopeTensor k, const void* __restrict__ cosv, const void* __restrict__ sinv,
                     int T, int D, i64 cs_b, i64 cs_t)
{
    const RopeTensor& x = blockIdx.y == 0 ? q : k;
    // 32-bit index arithmetic (the caller keeps rows * D / 16 < 2^31): 64-bit division is a long software loop.
    const u32 half = (u32)D / 2, per_row = half / 8;
    const u32 idx = blockIdx.x * kThreads + threadIdx.x;
    const u32 row = idx / per_row;
    if ((i64)row >= x.rows) return;
    const u32 part = idx - row * per_row;
    const u32 head = row % (u32)x.heads;
    const u32 bt = row / (u32)x.heads;
    const u32 t = bt % (u32)T, b = bt / (u32)T;
    const i64 in_row = (i64)b * x.in_b + (i64)head * x.in_h + (i64)t * x.in_t;
    const i64 out_row = (i64)b * x.out_b + (i64)head * x.out_h + (i64)t * x.out_t;
    const i64 cs_row = (i64)b * cs_b + (i64)t * cs_t;
    const i64 e1 = part * 8, e2 = half + part * 8;

    float x1[8], x2[8], c1[8], c2[8], s1[8], s2[8], o1[8], o2[8];
    load8<kBf16>(x.in, in_row + e1, x1);
    load8<kBf16>(x.in, in_row + e2, x2);
    load8<kBf16>(cosv, cs_row + e1, c1);
    load8<kBf16>(cosv, cs_row + e2, c2);
    load8<kBf16>(sinv, cs_row + e1, s1);
    load8<kBf16>(sinv, cs_row + e2, s2);
#pragma unroll
    for (int j = 0; j < 8; j++)
    {
        if (!kBackward)
        {
            o1[j] = round_to<kBf16>(x1[j] * c1[j]) + round_to<kBf16>(-x2[j] * s1[j]);
            o2[j] = round_to<kBf16>(x2[j] * c2[j]) + round_to<kBf16>(x1[j] * s2[j]);
        }
        else
        {
            o1[j] = round_to<kBf16>(x1[j] * c1[j]) + round_to<kBf16>(x2[j] * s2[j]);
            o2[j] = round_to<kBf16>(x2[j] * c2[j]) + round_to<kBf16>(-x1[j] * s1[j]);
        }
    }
    store8<kBf16>(x.out, out_row + e1, o1);
    store8<kBf16>(x.out, out_row + e2, o2);
}

#define QLN_ROPE(name, bf16, bwd)                                                                                   \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                          \
        name(RopeTensor q, RopeTensor k, const void* cosv, const void* sinv, int T, int D, i64 cs_b, i64 cs_t)      \
    {                                                                                                               \
        rope<bf16, bwd>(q, k, cosv, sinv, T, D, cs_b, cs_t);                                                        \
    }

QLN_ROPE(qln_rope_fwd_bf16, true, false)
QLN_ROPE(qln_rope_fwd_f32, false, false)
QLN_ROPE(qln_rope_bwd_bf16, true, true)
QLN_ROPE(qln_rope_bwd_f32, false, true)
