// CPU emulation of the device primitives of src/Kernels/Cuda/qln_cuda.h, so the .cu kernels compile as plain C++
// (clang++ -DQLN_HOST) and run with one std::thread per CUDA thread: blocks run one after another, the threads of a
// block run together, with real barriers for __syncthreads/__syncwarp and a per-warp exchange for shuffles.
// Arithmetic is the device's where it is specified exactly (IEEE single ops, fma, round-to-nearest-even to bf16) and
// libm's where the device uses an approximation (ex2.approx, rsqrt.approx): the emulation checks indexing, layout
// and control flow, not the last bit of those two instructions.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define QLN_DEVICE static inline
#define QLN_FULL_MASK 0xffffffffu

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

struct alignas(16) qln_u32x4 { u32 x, y, z, w; };
struct alignas(16) qln_f32x4 { float x, y, z, w; };

struct qln_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local qln_dim3 threadIdx, blockIdx, blockDim, gridDim;

struct QlnBlockSync
{
    std::barrier<>* block = nullptr;
    std::vector<std::barrier<>*> warps;
    std::vector<float> exchange; // one slot per thread
};
inline QlnBlockSync* qln_sync = nullptr;

QLN_DEVICE void qln_syncthreads() { qln_sync->block->arrive_and_wait(); }
QLN_DEVICE void qln_syncwarp() { qln_sync->warps[threadIdx.x / 32]->arrive_and_wait(); }

QLN_DEVICE float qln_as_float(u32 u) { float f; std::memcpy(&f, &u, 4); return f; }
QLN_DEVICE u32 qln_as_u32(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
QLN_DEVICE float qln_fma(float a, float b, float c) { return std::fmaf(a, b, c); }

QLN_DEVICE u32 qln_bf16_bits(float x)
{
    u32 b = qln_as_u32(x);
    if (std::isnan(x)) return 0x7fffu;
    b += 0x7fffu + ((b >> 16) & 1u);
    return b >> 16;
}
QLN_DEVICE u32 qln_pack_bf16x2(float lo, float hi) { return qln_bf16_bits(lo) | (qln_bf16_bits(hi) << 16); }
QLN_DEVICE float qln_bf16_lo(u32 w) { return qln_as_float(w << 16); }
QLN_DEVICE float qln_bf16_hi(u32 w) { return qln_as_float(w & 0xffff0000u); }
QLN_DEVICE float qln_round_bf16(float x) { return qln_bf16_lo(qln_pack_bf16x2(x, 0.0f)); }

QLN_DEVICE float qln_shfl(float v, int src_lane)
{
    unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
    qln_sync->exchange[threadIdx.x] = v;
    qln_syncwarp();
    float r = qln_sync->exchange[base + (src_lane & 31)];
    qln_syncwarp();
    return r;
}
QLN_DEVICE float qln_shfl_idx(float v, int src) { return qln_shfl(v, src); }
QLN_DEVICE float qln_shfl_xor(float v, int mask) { return qln_shfl(v, (int)(threadIdx.x % 32) ^ mask); }

QLN_DEVICE float qln_rsqrt(float x) { return 1.0f / std::sqrt(x); }
QLN_DEVICE float qln_ex2_approx(float x) { return std::exp2f(x); }
QLN_DEVICE float qln_sqrt_rn(float x) { return std::sqrt(x); }
QLN_DEVICE float qln_rint(float x) { return std::nearbyintf(x); }

QLN_DEVICE qln_u32x4 qln_ld16(const void* p) { qln_u32x4 v; std::memcpy(&v, p, 16); return v; }
QLN_DEVICE void qln_st16(void* p, qln_u32x4 v) { std::memcpy(p, &v, 16); }

// Runs kernel() as a grid of (gx, gy) blocks of `threads` threads (a multiple of 32).
inline void qln_launch(unsigned gx, unsigned gy, unsigned threads, const std::function<void()>& kernel)
{
    std::barrier<> block(threads);
    std::vector<std::barrier<>*> warps;
    for (unsigned w = 0; w < threads / 32; w++) warps.push_back(new std::barrier<>(32));
    QlnBlockSync sync{&block, warps, std::vector<float>(threads)};
    qln_sync = &sync;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; t++)
        pool.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            blockDim = {threads, 1, 1};
            gridDim = {gx, gy, 1};
            for (unsigned y = 0; y < gy; y++)
                for (unsigned x = 0; x < gx; x++)
                {
                    blockIdx = {x, y, 0};
                    kernel();
                    block.arrive_and_wait(); // the next block starts when every thread left this one
                }
        });
    for (auto& th : pool) th.join();
    for (auto* w : warps) delete w;
    qln_sync = nullptr;
}
