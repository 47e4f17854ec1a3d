// nf4_dequant.cu on the CPU: every variant, plain and double-quantized scales, bf16 and fp32, against a scalar loop.
#include "nf4_dequant.cu"
#include "check_util.h"

static const float kNf4[16] = {-1.0f, -0.6961928f, -0.52507305f, -0.39491749f, -0.28444138f, -0.18477343f, -0.09105004f, 0.0f,
                               0.0795803f, 0.1609302f, 0.2461123f, 0.33791524f, 0.44070983f, 0.562617f, 0.72295684f, 1.0f};

int main()
{
    for (long long numel : {64LL * 96, 32LL * 1000 + 32 * 7, 8LL * 4104})
        for (int blocksize : {32, 64, 256, 8})
            for (bool dq : {false, true})
                for (int variant = 0; variant < 3; variant++)
                    for (bool bf16 : {true, false})
                    {
                        bool vectors = variant > 0;
                        if (vectors && (numel % 32 != 0 || blocksize < 32)) continue;
                        if (variant == 2 && !bf16) continue;
                        long long nblocks = (numel + blocksize - 1) / blocksize;
                        int nested = 16;
                        std::vector<unsigned char> packed(numel / 2 + 16);
                        for (auto& b : packed) b = (unsigned char)(qln_rng() & 0xff);
                        std::vector<float> absmax(nblocks), nested_absmax((nblocks + nested - 1) / nested), code(256);
                        std::vector<unsigned char> absmax_q(nblocks);
                        for (auto& a : absmax) a = qln_uniform(0.1f, 3.0f);
                        for (auto& a : absmax_q) a = (unsigned char)(qln_rng() & 0xff);
                        for (auto& a : nested_absmax) a = qln_uniform(0.5f, 2.0f);
                        for (int i = 0; i < 256; i++) code[i] = qln_uniform(-1.0f, 1.0f);
                        float offset = 0.37f;
                        std::vector<float> want(numel);
                        for (long long i = 0; i < numel; i++)
                        {
                            long long b = i / blocksize;
                            float scale = dq ? code[absmax_q[b]] * nested_absmax[b / nested] + offset : absmax[b];
                            unsigned char byte = packed[i / 2];
                            float v = kNf4[(i & 1) ? (byte & 15) : (byte >> 4)] * scale;
                            want[i] = bf16 ? from_bf16(to_bf16(v)) : v;
                        }
                        std::vector<unsigned short> out16(numel, 0xdead);
                        std::vector<float> out32(numel, -12345.0f);
                        void* out = bf16 ? (void*)out16.data() : (void*)out32.data();
                        long long units = vectors ? numel / 32 : numel / 8;
                        int log2b = __builtin_ctz(blocksize), log2n = __builtin_ctz(nested);
                        const void* pk = packed.data();
                        // 3 blocks: the persistent grid's stride loop runs several steps.
                        qln_launch(3, 1, 256, [&] {
                            if (variant == 0)
                            {
                                if (dq && bf16) qln_dequant4_w_dq_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (dq && !bf16) qln_dequant4_w_dq_f32(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (!dq && bf16) qln_dequant4_w_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (!dq && !bf16) qln_dequant4_w_f32(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                            }
                            else if (variant == 1)
                            {
                                if (dq && bf16) qln_dequant4_v_dq_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (dq && !bf16) qln_dequant4_v_dq_f32(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (!dq && bf16) qln_dequant4_v_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                if (!dq && !bf16) qln_dequant4_v_f32(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                            }
                            else
                            {
                                if (dq) qln_dequant4_t_dq_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                                else qln_dequant4_t_bf16(pk, absmax.data(), absmax_q.data(), nested_absmax.data(), code.data(), offset, kNf4, out, units, log2b, log2n);
                            }
                        });
                        std::vector<float> got(numel);
                        for (long long i = 0; i < numel; i++) got[i] = bf16 ? from_bf16(out16[i]) : out32[i];
                        char name[128];
                        std::snprintf(name, sizeof name, "nf4 %s numel=%lld block=%d dq=%d %s", variant == 0 ? "w" : variant == 1 ? "v" : "t",
                                      numel, blocksize, dq, bf16 ? "bf16" : "f32");
                        compare(name, got, want, 0.0f);
                    }
    return finish();
}
