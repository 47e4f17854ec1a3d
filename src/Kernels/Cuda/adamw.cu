// One AdamW step (Loshchilov & Hutter 2019) over many fp32 tensors in one launch: a table of (param, grad, m, v)
// pointers, each tensor cut into chunks of kChunk elements, one block per chunk. Per element, the update order
// and roundings of torch's ops as QLoraNet's AdamW (src/Training/Optim/AdamW.cs) issues them on CUDA:
//   p.mul_(1 - lr*wd)                       p = p * decay                        (when weight decay is on)
//   m.mul_(b1).add_(g, alpha: 1-b1)         m = fma(1-b1, g, m * b1)             (torch's add: a + alpha*b, an FMA)
//   v.mul_(b2).addcmul_(g, g, 1-b2)         v = fma(1-b2, g * g, v * b2)         (addcmul: a + alpha*(b*c))
//   v.sqrt().div_(bc2).add_(eps)            d = sqrt(v) * (1/bc2) + eps          (a CUDA divide by a CPU scalar
//                                                                                 multiplies by its reciprocal)
//   m.div(d).mul_(lr/bc1); p.sub_(...)      p = p - (m / d) * step_size
// Scalars are rounded to fp32 on the host exactly as torch rounds a double Scalar for an fp32 tensor.
// `flags` can turn each of the three torch-specific choices off (bit 1: separate mul and add for m, bit 2: for v,
// bit 3: a true division by bc2) so `bench kernel` can show which combination torch's kernels match; 0 = as above.
// The guard (`stats`, optional): the step's n_stats - 1 loss sums and its global gradient norm last, as the train
// step left them on the device. The host does not read them before this launch (that read would drain the stream
// and leave the GPU idle while the host prepares the next step), so the kernel decides what the host used to:
//   any of them not finite   -> no update at all (parameters and moments keep their values: a skipped step);
//   max_norm > 0             -> g = g * c with c = max_norm / (norm + 1e-6) when c < 1 (clip_grad_norm_'s
//                               coefficient, computed in fp32 exactly as Training's reference path computes it).
// stats == nullptr: no guard (the gradients are used as they are).
#include "qln_cuda.h"

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 16;

struct AdamWTensor
{
    float* p;
    const float* g;
    float* m;
    float* v;
    i64 n;
    i64 first_block; // blocks of earlier tensors
};

extern "C" __global__ void __launch_bounds__(kThreads)
qln_adamw(const AdamWTensor* __restrict__ table, int count, float decay, float b1, float one_minus_b1, float b2,
          float one_minus_b2, float bc2, float inv_bc2, float eps, float step_size, int flags,
          const float* __restrict__ stats, int n_stats, float max_norm)
{
    float clip = 1.0f;
    if (stats != nullptr)
    {
        // Uniform over the launch: every block reads the same few values and returns, or not, alike.
        for (int i = 0; i < n_stats; i++)
            if ((qln_as_u32(stats[i]) & 0x7f800000u) == 0x7f800000u) return;   // inf or NaN: exponent all ones
        if (max_norm > 0.0f)
        {
            float c = max_norm / (stats[n_stats - 1] + 1e-6f);
            if (c < 1.0f) clip = c;
        }
    }
    const bool clip_on = clip != 1.0f;
    // The tensor this block works on: the last entry whose first_block <= blockIdx.x (binary search).
    int lo = 0, hi = count - 1;
    while (lo < hi)
    {
        int mid = (lo + hi + 1) >> 1;
        if (table[mid].first_block <= (i64)blockIdx.x) lo = mid; else hi = mid - 1;
    }
    const AdamWTensor t = table[lo];
    const i64 start = ((i64)blockIdx.x - t.first_block) * kChunk;
    const i64 end = start + kChunk < t.n ? start + kChunk : t.n;
    const bool decay_on = decay != 1.0f;
    for (i64 i = start + threadIdx.x; i < end; i += kThreads)
    {
        float p = t.p[i], g = t.g[i], m = t.m[i], v = t.v[i];
        if (clip_on) g = g * clip;
        if (decay_on) p = p * decay;
        m = (flags & 1) ? m * b1 + one_minus_b1 * g : qln_fma(one_minus_b1, g, m * b1);
        v = (flags & 2) ? v * b2 + one_minus_b2 * (g * g) : qln_fma(one_minus_b2, g * g, v * b2);
        float d = (flags & 4) ? qln_sqrt_rn(v) / bc2 : qln_sqrt_rn(v) * inv_bc2;
        d = d + eps;
        float u = (m / d) * step_size;
        t.p[i] = p - u;
        t.m[i] = m;
        t.v[i] = v;
    }
}
