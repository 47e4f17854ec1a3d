// The ternary product of BitNet b1.58 on CUDA with additions and subtractions only: int8 activation codes A [n, k]
// times ternary weights packed four output rows to a byte (Hugging Face's BitNet layout: byte row r, bits 2j..2j+1
// hold w + 1 of output row j*q + r, q = m/4), summed exactly in int32:
//   C[t, j*q + r] = sum_i (+A[t, i] where code 2, -A[t, i] where code 0, nothing where code 1)
// Every path (this kernel, the CPU SIMD loop, the torch-op reference) yields the same integers; TernaryMatMul does
// the float scaling after. One warp per packed row r and per group of kTokens tokens: each lane reads 4 packed bytes
// (16 weights) per step and reuses them for all kTokens tokens; the 4 x kTokens partial sums are reduced across the
// warp with shuffles at the end. k % 4 == 0 takes the 32-bit path, any other k the byte path.
// Build: scripts/build_ptx.sh (clang, no CUDA toolkit).
#include "qln_cuda.h"

constexpr int kWarps = 4;     // packed rows per block
constexpr int kTokens = 8;    // tokens per warp

QLN_DEVICE int qln_shfl_xor_i32(int v, int mask)
{
#if defined(QLN_HOST)
    return (int)qln_as_u32(qln_shfl_xor(qln_as_float((u32)v), mask));
#elif !defined(__clang__) || defined(__NVCC__)
    return __shfl_xor_sync(QLN_FULL_MASK, v, mask);
#else
    return __nvvm_shfl_sync_bfly_i32(QLN_FULL_MASK, v, mask, 31);
#endif
}

// +a, -a or 0 for the 2-bit code c (2 = +1, 0 = -1, 1 = 0; 3 never occurs: loaders refuse it).
QLN_DEVICE int qln_signed(int a, u32 c) { return c == 2u ? a : (c == 0u ? -a : 0); }

extern "C" __global__ void __launch_bounds__(32 * kWarps)
qln_ternary_sums(const signed char* __restrict__ codes, const unsigned char* __restrict__ packed, int* __restrict__ out,
                 i64 n, i64 k, i64 quarter)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const i64 r = (i64)blockIdx.x * kWarps + warp;
    const i64 t0 = (i64)blockIdx.y * kTokens;
    if (r >= quarter) return;                      // the whole warp leaves together
    const int tokens = (int)(n - t0 < kTokens ? n - t0 : kTokens);
    const unsigned char* row = packed + r * k;

    int acc[kTokens][4];
#pragma unroll
    for (int t = 0; t < kTokens; t++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[t][j] = 0;

    if (k % 4 == 0)
    {
        for (i64 i = 4 * (i64)lane; i < k; i += 128)
        {
            u32 w = *(const u32*)(row + i);          // 4 bytes = 16 ternary weights (4 inputs x 4 output rows)
#pragma unroll
            for (int t = 0; t < kTokens; t++)
            {
                if (t < tokens)                          // a predicate, not a break: the loop stays unrolled, acc in registers
                {
                    u32 a4 = *(const u32*)(codes + (t0 + t) * k + i);
#pragma unroll
                    for (int b = 0; b < 4; b++)
                    {
                        int a = (int)(signed char)(a4 >> (8 * b));
                        u32 byte = (w >> (8 * b)) & 0xffu;
#pragma unroll
                        for (int j = 0; j < 4; j++) acc[t][j] += qln_signed(a, (byte >> (2 * j)) & 3u);
                    }
                }
            }
        }
    }
    else
    {
        for (i64 i = lane; i < k; i += 32)
        {
            u32 byte = row[i];
#pragma unroll
            for (int t = 0; t < kTokens; t++)
            {
                if (t < tokens)
                {
                    int a = codes[(t0 + t) * k + i];
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[t][j] += qln_signed(a, (byte >> (2 * j)) & 3u);
                }
            }
        }
    }

#pragma unroll
    for (int t = 0; t < kTokens; t++)
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            int v = acc[t][j];
#pragma unroll
            for (int mask = 16; mask > 0; mask >>= 1) v += qln_shfl_xor_i32(v, mask);
            acc[t][j] = v;
        }
    if (lane == 0)
#pragma unroll
        for (int t = 0; t < kTokens; t++)
            if (t < tokens)
#pragma unroll
                for (int j = 0; j < 4; j++) out[(t0 + t) * 4 * quarter + j * quarter + r] = acc[t][j];
}
