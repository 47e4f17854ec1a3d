// The few device-side definitions our kernels need, for both compilers that can build them:
//  - clang (scripts/build_ptx.sh: clang -x cuda --cuda-device-only -nocudainc -nocudalib, no CUDA toolkit needed),
//  - nvcc (with -fmad=false, the counterpart of clang's -ffp-contract=off).
// Rounding is part of each kernel's contract (they are compared bit for bit with torch ops), so:
//  - plain float + - * / compile to .rn instructions that are never contracted into FMAs (the flags above);
//    where an FMA is meant (because the torch kernel being mirrored computes one), qln_fma says so;
//  - special functions are inline PTX with their accuracy stated, since neither libdevice nor CUDA's headers
//    are used (clang's -nocudalib).
// A third build, QLN_HOST (scripts/check_kernels_on_cpu.sh), compiles the kernels as plain C++ against
// tests/KernelsOnCpu/qln_host.h, which emulates threads, barriers and shuffles: it checks every kernel's indexing
// against scalar loops on a machine without a GPU.
#pragma once

#if defined(QLN_HOST)
#include "qln_host.h"
#else

#if defined(__clang__) && !defined(__NVCC__)
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __attribute__((always_inline)) inline
#define __launch_bounds__(n) __attribute__((launch_bounds(n)))
#include <__clang_cuda_builtin_vars.h>
#endif

#define QLN_DEVICE __device__ __forceinline__
#define QLN_FULL_MASK 0xffffffffu

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

struct alignas(16) qln_u32x4 { u32 x, y, z, w; };
struct alignas(16) qln_f32x4 { float x, y, z, w; };

// Barriers: all threads of the block / the warp.
QLN_DEVICE void qln_syncthreads() { asm volatile("bar.sync 0;" ::: "memory"); }
QLN_DEVICE void qln_syncwarp() { asm volatile("bar.warp.sync -1;" ::: "memory"); }

QLN_DEVICE float qln_as_float(u32 u) { float f; asm("mov.b32 %0, %1;" : "=f"(f) : "r"(u)); return f; }
QLN_DEVICE u32 qln_as_u32(float f) { u32 u; asm("mov.b32 %0, %1;" : "=r"(u) : "f"(f)); return u; }

// fma.rn.f32: one rounding of a*b+c.
QLN_DEVICE float qln_fma(float a, float b, float c) { float d; asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(a), "f"(b), "f"(c)); return d; }

// Two floats -> two bf16 (round to nearest even) in one word: lo in bits 0-15, hi in bits 16-31 (memory order lo, hi).
QLN_DEVICE u32 qln_pack_bf16x2(float lo, float hi) { u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
QLN_DEVICE float qln_bf16_lo(u32 w) { return qln_as_float(w << 16); }
QLN_DEVICE float qln_bf16_hi(u32 w) { return qln_as_float(w & 0xffff0000u); }
// The value a float becomes when stored as bf16 (what a torch op with a bf16 output rounds to).
QLN_DEVICE float qln_round_bf16(float x) { return qln_bf16_lo(qln_pack_bf16x2(x, 0.0f)); }

// Register shuffles (all 32 lanes must take part). The compilers' own intrinsics, not inline PTX: they are marked
// convergent, so the optimiser never moves a shuffle into a branch that only some lanes take.
#if defined(__clang__) && !defined(__NVCC__)
QLN_DEVICE float qln_shfl_idx(float v, int src) { return __nvvm_shfl_sync_idx_f32(QLN_FULL_MASK, v, src, 31); }
QLN_DEVICE float qln_shfl_xor(float v, int mask) { return __nvvm_shfl_sync_bfly_f32(QLN_FULL_MASK, v, mask, 31); }
#else
QLN_DEVICE float qln_shfl_idx(float v, int src) { return __shfl_sync(QLN_FULL_MASK, v, src); }
QLN_DEVICE float qln_shfl_xor(float v, int mask) { return __shfl_xor_sync(QLN_FULL_MASK, v, mask); }
#endif

// rsqrt.approx.f32: max relative error 2^-22.9 (PTX ISA), the instruction CUDA's rsqrtf compiles to.
QLN_DEVICE float qln_rsqrt(float x) { float r; asm("rsqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
QLN_DEVICE float qln_ex2_approx(float x) { float r; asm("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
QLN_DEVICE float qln_sqrt_rn(float x) { float r; asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
QLN_DEVICE float qln_rint(float x) { float r; asm("cvt.rni.f32.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }

// 16-byte global memory access (the address must be 16-byte aligned). Inline PTX, since clang lowers a struct
// copy to two 8-byte accesses; volatile, so that a guarded load is never hoisted above its bounds check.
QLN_DEVICE qln_u32x4 qln_ld16(const void* p)
{
    qln_u32x4 v;
    asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
QLN_DEVICE void qln_st16(void* p, qln_u32x4 v)
{
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" :: "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}

#endif // QLN_HOST

// Built on the primitives above, in every build.

// e^x for the activations: x = j*ln2 + f with j = rint(x*log2(e)) and f from a two-constant (Cody-Waite)
// reduction, |f| <= ln2/2, then 2^(f*log2 e) by ex2.approx (relative error ~2^-22) times 2^j (exact).
// About 2 ulp over the range where e^x is a normal float; 0 below, +inf above, like expf.
QLN_DEVICE float qln_exp(float x)
{
    if (x > 88.72283f) return qln_as_float(0x7f800000u);
    if (x < -103.97208f) return 0.0f;
    float j = qln_rint(x * 1.44269504f);
    float f = qln_fma(j, -0.693145752f, x);   // ln2 high part (exact product for |j| < 2^11)
    f = qln_fma(j, -1.42860677e-6f, f);       // ln2 low part
    float e = qln_ex2_approx(f * 1.44269504f);
    int ji = (int)j;
    // 2^j in two factors so that j down to -150 (results in the subnormal range) stays representable.
    int j1 = ji / 2, j2 = ji - j1;
    return e * qln_as_float((u32)(j1 + 127) << 23) * qln_as_float((u32)(j2 + 127) << 23);
}

// tanh(y) = sign(y) * (1 - 2 / (e^{2|y|} + 1)); absolute error ~1e-7 (what matters where it is used: 1 + tanh).
QLN_DEVICE float qln_tanh(float y)
{
    float a = y < 0.0f ? -y : y;
    float t = a > 9.0f ? 1.0f : 1.0f - 2.0f / (qln_exp(2.0f * a) + 1.0f);
    return y < 0.0f ? -t : t;
}
