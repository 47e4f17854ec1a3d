// rope.cu on the CPU: q as a transposed view of (B, T, heads, D), k with fewer heads and contiguous, cos/sin per
// batch row or broadcast, bf16 and fp32, forward and backward, against the formulas with the same roundings
// (bit-exact).
#include "rope.cu"
#include "check_util.h"

static float R(bool bf16, float v) { return bf16 ? from_bf16(to_bf16(v)) : v; }

int main()
{
    const int B = 2, T = 5, Hq = 3, Hk = 1, D = 32, half = D / 2;
    for (bool bf16 : {true, false})
        for (bool backward : {false, true})
            for (bool broadcast : {false, true})
            {
                // q: physical (B, T, Hq, D); k: physical (B, Hk, T, D); cos/sin: (B or 1, T, D).
                size_t nq = (size_t)B * T * Hq * D, nk = (size_t)B * Hk * T * D, ncs = (size_t)(broadcast ? 1 : B) * T * D;
                std::vector<float> q(nq), k(nk), c(ncs), s(ncs);
                for (auto& v : q) v = R(bf16, qln_normal());
                for (auto& v : k) v = R(bf16, qln_normal());
                for (auto& v : c) v = R(bf16, qln_uniform(-1, 1));
                for (auto& v : s) v = R(bf16, qln_uniform(-1, 1));
                auto store = [&](const std::vector<float>& v, std::vector<unsigned short>& h, std::vector<float>& f) {
                    h.resize(v.size()); f = v;
                    for (size_t i = 0; i < v.size(); i++) h[i] = to_bf16(v[i]);
                };
                std::vector<unsigned short> qh, kh, ch, sh, qoh(nq, 0xdead), koh(nk, 0xdead);
                std::vector<float> qf, kf, cf, sf, qof(nq, -1), kof(nk, -1);
                store(q, qh, qf); store(k, kh, kf); store(c, ch, cf); store(s, sh, sf);
                RopeTensor tq{bf16 ? (void*)qh.data() : (void*)qf.data(), bf16 ? (void*)qoh.data() : (void*)qof.data(),
                              (i64)T * Hq * D, D, (i64)Hq * D, (i64)T * Hq * D, D, (i64)Hq * D, (i64)B * Hq * T, Hq, 0};
                RopeTensor tk{bf16 ? (void*)kh.data() : (void*)kf.data(), bf16 ? (void*)koh.data() : (void*)kof.data(),
                              (i64)Hk * T * D, (i64)T * D, D, (i64)Hk * T * D, (i64)T * D, D, (i64)B * Hk * T, Hk, 0};
                i64 csb = broadcast ? 0 : (i64)T * D, cst = D;
                const void* cp = bf16 ? (void*)ch.data() : (void*)cf.data();
                const void* sp = bf16 ? (void*)sh.data() : (void*)sf.data();
                long threads = (long)B * Hq * T * (D / 16);
                unsigned gx = (unsigned)((threads + 255) / 256);
                qln_launch(gx, 2, 256, [&] {
                    if (bf16) { if (backward) qln_rope_bwd_bf16(tq, tk, cp, sp, T, D, csb, cst); else qln_rope_fwd_bf16(tq, tk, cp, sp, T, D, csb, cst); }
                    else { if (backward) qln_rope_bwd_f32(tq, tk, cp, sp, T, D, csb, cst); else qln_rope_fwd_f32(tq, tk, cp, sp, T, D, csb, cst); }
                });
                for (int which = 0; which < 2; which++)
                {
                    int H = which == 0 ? Hq : Hk;
                    std::vector<float> want(which == 0 ? nq : nk), got(want.size());
                    const std::vector<float>& x = which == 0 ? q : k;
                    for (int b = 0; b < B; b++)
                        for (int h = 0; h < H; h++)
                            for (int t = 0; t < T; t++)
                                for (int i = 0; i < half; i++)
                                {
                                    size_t base = which == 0 ? ((size_t)(b * T + t) * Hq + h) * D : ((size_t)(b * Hk + h) * T + t) * D;
                                    size_t cb = (size_t)(broadcast ? 0 : b) * T * D + (size_t)t * D;
                                    float x1 = x[base + i], x2 = x[base + half + i];
                                    float c1 = c[cb + i], c2 = c[cb + half + i], s1 = s[cb + i], s2 = s[cb + half + i];
                                    float o1, o2;
                                    if (!backward) { o1 = R(bf16, R(bf16, x1 * c1) + R(bf16, -x2 * s1)); o2 = R(bf16, R(bf16, x2 * c2) + R(bf16, x1 * s2)); }
                                    else { o1 = R(bf16, R(bf16, x1 * c1) + R(bf16, x2 * s2)); o2 = R(bf16, R(bf16, x2 * c2) + R(bf16, -x1 * s1)); }
                                    want[base + i] = o1; want[base + half + i] = o2;
                                }
                    for (size_t i = 0; i < got.size(); i++)
                        got[i] = which == 0 ? (bf16 ? from_bf16(qoh[i]) : qof[i]) : (bf16 ? from_bf16(koh[i]) : kof[i]);
                    char name[128];
                    std::snprintf(name, sizeof name, "rope %s %s %s%s", which == 0 ? "q" : "k", bf16 ? "bf16" : "f32", backward ? "backward" : "forward",
                                  broadcast ? " cos broadcast" : "");
                    compare(name, got, want, 0.0f);
                }
            }
    return finish();
}
