// Fused blockwise 4-bit (NF4/FP4) dequantization, optionally with double-quantized absmax, to bf16 or fp32.
// One pass: read the packed codes (0.5 B/weight) and the per-block scale, write the dense weight. The reference
// this must equal bit for bit is the torch-op path of FourBitWeight.Dequantize (src/Quant/FourBitWeight.cs):
//   scale = nested_code[absmax_q[b]] * nested_absmax[b / nested_block] + offset    (fp32 mul, then fp32 add)
//   w[i]  = codebook[code_i] * scale                                               (fp32 mul, then one rounding)
// __fmul_rn/__fadd_rn stop the compiler from contracting mul+add into an FMA, which would round differently.
// Layout (bitsandbytes): element 2k in the HIGH nibble of byte k, element 2k+1 in the low nibble.
// Build:  nvcc -ptx -arch=sm_80 -O3 -o nf4_dequant.ptx nf4_dequant.cu   (scripts/gpu/build_ptx.sh)
#include <cuda_bf16.h>

template <bool kDoubleQuant>
__device__ __forceinline__ float block_scale(long long block, const float* absmax_f32, const unsigned char* absmax_q,
                                             const float* nested_absmax, const float* nested_code, float offset,
                                             int log2_nested_block)
{
    if (kDoubleQuant)
        return __fadd_rn(__fmul_rn(nested_code[absmax_q[block]], nested_absmax[block >> log2_nested_block]), offset);
    return absmax_f32[block];
}

// Each thread turns kWordsPerThread 4-byte words of packed codes (8 weights each) into 8 outputs per word.
// Consecutive threads take consecutive words, so every load (4 B/thread) and store (16 B/thread for bf16) is
// coalesced across the warp, and all of a thread's loads are issued before the first use (memory-level
// parallelism). The byte -> (hi, lo) value table sits in shared memory (256 x float2): one lookup per byte.
// Requires blocksize >= 8 (a word never straddles two quantization blocks) and numel % 8 == 0.
constexpr int kThreads = 256;
constexpr int kWordsPerThread = 4;

__device__ __forceinline__ unsigned int pack_bf16x2(float a, float b)
{
    return (unsigned int)__bfloat16_as_ushort(__float2bfloat16_rn(a)) |
           ((unsigned int)__bfloat16_as_ushort(__float2bfloat16_rn(b)) << 16);
}

template <bool kDoubleQuant, bool kBf16>
__device__ void dequant_body(const unsigned int* __restrict__ packed, const float* __restrict__ absmax_f32,
                             const unsigned char* __restrict__ absmax_q, const float* __restrict__ nested_absmax,
                             const float* __restrict__ nested_code, float offset, const float* __restrict__ codebook,
                             void* __restrict__ out, long long nwords, int log2_block, int log2_nested_block)
{
    __shared__ float2 lut[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) lut[i] = make_float2(codebook[i >> 4], codebook[i & 15]);
    __syncthreads();

    long long base = (long long)blockIdx.x * kThreads * kWordsPerThread + threadIdx.x;
    unsigned int w[kWordsPerThread];
    float scale[kWordsPerThread];
#pragma unroll
    for (int k = 0; k < kWordsPerThread; k++)
    {
        long long i = base + (long long)k * kThreads;
        if (i < nwords)
        {
            w[k] = packed[i];
            scale[k] = block_scale<kDoubleQuant>((i * 8) >> log2_block, absmax_f32, absmax_q, nested_absmax, nested_code,
                                                 offset, log2_nested_block);
        }
    }
#pragma unroll
    for (int k = 0; k < kWordsPerThread; k++)
    {
        long long i = base + (long long)k * kThreads;
        if (i >= nwords) break;
        float s = scale[k];
        float2 v0 = lut[w[k] & 0xff], v1 = lut[(w[k] >> 8) & 0xff], v2 = lut[(w[k] >> 16) & 0xff], v3 = lut[w[k] >> 24];
        if (kBf16)
        {
            reinterpret_cast<uint4*>(out)[i] = make_uint4(
                pack_bf16x2(__fmul_rn(v0.x, s), __fmul_rn(v0.y, s)), pack_bf16x2(__fmul_rn(v1.x, s), __fmul_rn(v1.y, s)),
                pack_bf16x2(__fmul_rn(v2.x, s), __fmul_rn(v2.y, s)), pack_bf16x2(__fmul_rn(v3.x, s), __fmul_rn(v3.y, s)));
        }
        else
        {
            float4* dst = reinterpret_cast<float4*>(out) + 2 * i;
            dst[0] = make_float4(__fmul_rn(v0.x, s), __fmul_rn(v0.y, s), __fmul_rn(v1.x, s), __fmul_rn(v1.y, s));
            dst[1] = make_float4(__fmul_rn(v2.x, s), __fmul_rn(v2.y, s), __fmul_rn(v3.x, s), __fmul_rn(v3.y, s));
        }
    }
}

#define QLN_KERNEL(name, dq, bf16)                                                                                   \
    extern "C" __global__ void __launch_bounds__(kThreads) name(                                                     \
        const unsigned int* packed, const float* absmax_f32, const unsigned char* absmax_q, const float* nested_absmax,     \
        const float* nested_code, float offset, const float* codebook, void* out, long long nwords, int log2_block, \
        int log2_nested_block)                                                                                       \
    {                                                                                                                \
        dequant_body<dq, bf16>(packed, absmax_f32, absmax_q, nested_absmax, nested_code, offset, codebook, out,      \
                               nwords, log2_block, log2_nested_block);                                              \
    }

QLN_KERNEL(qln_dequant4_bf16, false, true)
QLN_KERNEL(qln_dequant4_dq_bf16, true, true)
QLN_KERNEL(qln_dequant4_f32, false, false)
QLN_KERNEL(qln_dequant4_dq_f32, true, false)
