// Fused blockwise 4-bit (NF4/FP4) dequantization, optionally with double-quantized absmax, to bf16 or fp32.
// One pass: read the packed codes (0.5 B/weight) and the per-block scale, write the dense weight. The reference
// this must equal bit for bit is the torch-op path (FourBitWeight.DequantizeWithTorchOps, C#):
//   scale = nested_code[absmax_q[b]] * nested_absmax[b / nested_block] + offset    (fp32 mul, then fp32 add)
//   w[i]  = codebook[code_i] * scale                                               (fp32 mul, then one rounding)
// Built without FMA contraction (scripts/build_ptx.sh), so the mul and add above round separately, as torch's do.
// Layout (bitsandbytes): element 2k in the HIGH nibble of byte k, element 2k+1 in the low nibble.
//
// The 16-entry codebook lives in registers: lane l holds codebook[l & 15] and a lookup is one warp shuffle
// (bitsandbytes' kDequantizeBlockwise uses the same idea); a shared-memory table of byte pairs, as before, cost
// bank conflicts and a barrier per block. Grids are persistent (a few blocks per multiprocessor, each warp
// striding over the tensor), so every weight shape runs as full waves.
//
// Three ways to move the bytes, timed against each other by `bench kernel` (all compute the same values):
//   w: a lane reads one 4-byte word (8 codes) per step, consecutive lanes consecutive words; each lane writes its
//      8 outputs as one 16-byte vector (bf16), so loads and stores are both contiguous across the warp.
//      Any blocksize >= 8.
//   v: a lane reads one 16-byte vector (32 codes) and writes its 32 outputs as 4 (bf16) or 8 (fp32) 16-byte
//      vectors; consecutive lanes' stores are 64 (128) bytes apart. Blocksize >= 32.
//   t: as v, but the bf16 outputs pass through shared memory (2 KiB per warp, swizzled against bank conflicts) so
//      every store instruction writes 512 contiguous bytes. Blocksize >= 32, bf16 only.
#include "qln_cuda.h"

constexpr int kThreads = 256;

struct Scales
{
    const float* absmax_f32;      // plain: one fp32 absmax per block
    const unsigned char* absmax_q; // double quantized: one code per block ...
    const float* nested_absmax;    // ... one fp32 scale per nested block ...
    const float* nested_code;      // ... the 256-entry dynamic map ...
    float offset;                  // ... plus the mean that was subtracted
    int log2_block;
    int log2_nested_block;
};

template <bool kDoubleQuant>
QLN_DEVICE float block_scale(const Scales& s, i64 block)
{
    if (kDoubleQuant)
        return s.nested_code[s.absmax_q[block]] * s.nested_absmax[block >> s.log2_nested_block] + s.offset;
    return s.absmax_f32[block];
}

// The 8 codes of a little-endian word in element order (high nibble of byte 0 first), times the scale.
QLN_DEVICE void decode_word(u32 w, float cb, float scale, float v[8])
{
#pragma unroll
    for (int k = 0; k < 4; k++)
    {
        u32 byte = (w >> (8 * k)) & 0xffu;
        v[2 * k] = qln_shfl_idx(cb, (int)(byte >> 4)) * scale;
        v[2 * k + 1] = qln_shfl_idx(cb, (int)(byte & 15u)) * scale;
    }
}

template <bool kBf16>
QLN_DEVICE void store_word(void* out, i64 word, const float v[8])
{
    if (kBf16)
    {
        qln_u32x4 o = {qln_pack_bf16x2(v[0], v[1]), qln_pack_bf16x2(v[2], v[3]), qln_pack_bf16x2(v[4], v[5]),
                       qln_pack_bf16x2(v[6], v[7])};
        qln_st16((char*)out + word * 16, o);
    }
    else
    {
        qln_u32x4 a = {qln_as_u32(v[0]), qln_as_u32(v[1]), qln_as_u32(v[2]), qln_as_u32(v[3])};
        qln_u32x4 b = {qln_as_u32(v[4]), qln_as_u32(v[5]), qln_as_u32(v[6]), qln_as_u32(v[7])};
        qln_st16((char*)out + word * 32, a);
        qln_st16((char*)out + word * 32 + 16, b);
    }
}

// Variant w. nwords = numel / 8. Each warp step covers 32 * kWords consecutive words, all loads issued first.
template <bool kDoubleQuant, bool kBf16>
QLN_DEVICE void dequant_words(const u32* __restrict__ packed, Scales s, const float* __restrict__ codebook,
                              void* __restrict__ out, i64 nwords)
{
    constexpr int kWords = 4;
    const int lane = threadIdx.x & 31;
    const float cb = codebook[lane & 15];
    const i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 base = warp * 32 * kWords; base < nwords; base += nwarps * 32 * kWords)
    {
        u32 w[kWords];
        float scale[kWords];
#pragma unroll
        for (int k = 0; k < kWords; k++)
        {
            i64 i = base + k * 32 + lane;
            bool in = i < nwords;
            w[k] = in ? packed[i] : 0u;
            scale[k] = in ? block_scale<kDoubleQuant>(s, (i * 8) >> s.log2_block) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kWords; k++)
        {
            float v[8];
            decode_word(w[k], cb, scale[k], v); // every lane shuffles, in range or not
            i64 i = base + k * 32 + lane;
            if (i < nwords) store_word<kBf16>(out, i, v);
        }
    }
}

// Variants v and t. nvec = numel / 32 (16-byte vectors of codes). kStaged: bf16 outputs go through shared memory.
template <bool kDoubleQuant, bool kBf16, bool kStaged>
QLN_DEVICE void dequant_vectors(const qln_u32x4* __restrict__ packed, Scales s, const float* __restrict__ codebook,
                                void* __restrict__ out, i64 nvec)
{
    constexpr int kVecs = 2;
    // Per warp: 32 lanes x 64 bytes; row = lane, 16-byte piece p stored at p ^ ((row >> 1) & 3), so that 8 lanes
    // writing one piece of 8 rows, and 8 lanes reading 4 pieces of 2 rows, each touch 32 distinct banks.
    __shared__ qln_u32x4 stage[kStaged ? kThreads / 32 : 1][32 * 4];
    const int lane = threadIdx.x & 31;
    const float cb = codebook[lane & 15];
    const i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 base = warp * 32 * kVecs; base < nvec; base += nwarps * 32 * kVecs)
    {
        qln_u32x4 w[kVecs];
        float scale[kVecs];
#pragma unroll
        for (int k = 0; k < kVecs; k++)
        {
            i64 i = base + k * 32 + lane;
            bool in = i < nvec;
            w[k] = in ? qln_ld16(packed + i) : qln_u32x4{0u, 0u, 0u, 0u};
            scale[k] = in ? block_scale<kDoubleQuant>(s, (i * 32) >> s.log2_block) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kVecs; k++)
        {
            i64 i = base + k * 32 + lane;
            u32 words[4] = {w[k].x, w[k].y, w[k].z, w[k].w};
            float v[4][8];
#pragma unroll
            for (int q = 0; q < 4; q++) decode_word(words[q], cb, scale[k], v[q]);
            if (!kStaged)
            {
                if (i < nvec)
#pragma unroll
                    for (int q = 0; q < 4; q++) store_word<kBf16>(out, i * 4 + q, v[q]);
            }
            else
            {
                qln_u32x4* rows = stage[threadIdx.x >> 5];
                const int swz = (lane >> 1) & 3;
#pragma unroll
                for (int q = 0; q < 4; q++)
                    rows[lane * 4 + (q ^ swz)] = qln_u32x4{qln_pack_bf16x2(v[q][0], v[q][1]), qln_pack_bf16x2(v[q][2], v[q][3]),
                                                           qln_pack_bf16x2(v[q][4], v[q][5]), qln_pack_bf16x2(v[q][6], v[q][7])};
                qln_syncwarp();
                // Output vector j of this warp's 32 code vectors (4 per code vector): 16 bytes at out + (base+k*32)*64 + j*16.
                const i64 first = base + k * 32;
#pragma unroll
                for (int q = 0; q < 4; q++)
                {
                    int j = q * 32 + lane, row = j >> 2, piece = j & 3;
                    const qln_u32x4& src = rows[row * 4 + (piece ^ ((row >> 1) & 3))];
                    qln_u32x4 o = {src.x, src.y, src.z, src.w};
                    if (first + row < nvec) qln_st16((char*)out + first * 64 + (i64)j * 16, o);
                }
                qln_syncwarp();
            }
        }
    }
}

#define QLN_SCALES                                                                                                  \
    Scales s;                                                                                                       \
    s.absmax_f32 = absmax_f32;                                                                                      \
    s.absmax_q = absmax_q;                                                                                          \
    s.nested_absmax = nested_absmax;                                                                                \
    s.nested_code = nested_code;                                                                                    \
    s.offset = offset;                                                                                              \
    s.log2_block = log2_block;                                                                                      \
    s.log2_nested_block = log2_nested_block;

// Every entry point takes the same arguments; n is the number of words (w) or 16-byte vectors (v, t) of codes.
#define QLN_PARAMS                                                                                                  \
    const void* packed, const float* absmax_f32, const unsigned char* absmax_q, const float* nested_absmax,       \
        const float* nested_code, float offset, const float* codebook, void* out, i64 n, int log2_block,          \
        int log2_nested_block

#define QLN_WORDS(name, dq, bf16)                                                                                   \
    extern "C" __global__ void __launch_bounds__(kThreads) name(QLN_PARAMS)                                         \
    {                                                                                                               \
        QLN_SCALES                                                                                                  \
        dequant_words<dq, bf16>((const u32*)packed, s, codebook, out, n);                                           \
    }
#define QLN_VECTORS(name, dq, bf16, staged)                                                                         \
    extern "C" __global__ void __launch_bounds__(kThreads) name(QLN_PARAMS)                                         \
    {                                                                                                               \
        QLN_SCALES                                                                                                  \
        dequant_vectors<dq, bf16, staged>((const qln_u32x4*)packed, s, codebook, out, n);                           \
    }

QLN_WORDS(qln_dequant4_w_bf16, false, true)
QLN_WORDS(qln_dequant4_w_dq_bf16, true, true)
QLN_WORDS(qln_dequant4_w_f32, false, false)
QLN_WORDS(qln_dequant4_w_dq_f32, true, false)
QLN_VECTORS(qln_dequant4_v_bf16, false, true, false)
QLN_VECTORS(qln_dequant4_v_dq_bf16, true, true, false)
QLN_VECTORS(qln_dequant4_v_f32, false, false, false)
QLN_VECTORS(qln_dequant4_v_dq_f32, true, false, false)
QLN_VECTORS(qln_dequant4_t_bf16, false, true, true)
QLN_VECTORS(qln_dequant4_t_dq_bf16, true, true, true)
