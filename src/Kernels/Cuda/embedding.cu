// Embedding rows gathered from a table in pinned host memory, read by the GPU across PCIe (zero-copy: with unified
// virtual addressing the pointer cudaHostAlloc returned is valid in kernels, CUDA C Programming Guide, "Unified
// Virtual Address Space"), so the frozen (vocab, hidden) table needs no device memory: only the batch's rows cross,
// 2 x hidden bytes a token in bf16. Each thread moves 16-byte vectors; blocks cover a row's vectors across x and the
// rows across y (looping past 65535 rows). An id outside [0, vocab) gives a row of NaN (torch's index_select raises a
// device-side assert there; a NaN makes the step's guard skip the update instead of killing the CUDA context).
// table: (vocab, cols) row-major, 16-byte aligned rows; ids: (rows) int64 on the device; out: (rows, cols) on the
// device. cols8 = cols * sizeof(element) / 16 vectors a row.
#include "qln_cuda.h"

constexpr int kThreads = 128;

template <u32 kNanWord>
QLN_DEVICE void gather_rows(const void* __restrict__ table, const i64* __restrict__ ids, void* __restrict__ out,
                            i64 rows, i64 vectors, i64 vocab)
{
    const i64 v = (i64)blockIdx.x * kThreads + threadIdx.x;
    if (v >= vectors) return;
    for (i64 r = blockIdx.y; r < rows; r += gridDim.y)
    {
        const i64 id = ids[r];
        qln_u32x4 x;
        if (id >= 0 && id < vocab) x = qln_ld16((const char*)table + (id * vectors + v) * 16);
        else x = qln_u32x4{kNanWord, kNanWord, kNanWord, kNanWord};
        qln_st16((char*)out + (r * vectors + v) * 16, x);
    }
}

// Two bf16 NaNs (0x7fc0) in a word; one fp32 NaN.
extern "C" __global__ void __launch_bounds__(kThreads)
    qln_embedding_rows_bf16(const void* table, const i64* ids, void* out, i64 rows, i64 vectors, i64 vocab)
{
    gather_rows<0x7fc07fc0u>(table, ids, out, rows, vectors, vocab);
}

extern "C" __global__ void __launch_bounds__(kThreads)
    qln_embedding_rows_f32(const void* table, const i64* ids, void* out, i64 rows, i64 vectors, i64 vocab)
{
    gather_rows<0x7fc00000u>(table, ids, out, rows, vectors, vocab);
}
