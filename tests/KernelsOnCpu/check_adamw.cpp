// adamw.cu on the CPU: several tensors of odd sizes in one launch (the block -> tensor search, chunk ends), every
// flags combination, against the update written out per element (bit-exact); and the step guard: no guard, a guard
// that clips, one whose clip coefficient is not below 1, one with clipping off, and non-finite stats (no update).
#include "adamw.cu"
#include "check_util.h"

int main()
{
    const std::vector<long long> sizes = {5000, 1, 4096 * 2 + 3, 4096, 17};
    for (int guard = 0; guard < 5; guard++)
    for (int flags = 0; flags < 8; flags++)
        for (bool decayOn : {false, true})
        {
            // guard 0: none; 1: clips (norm 50, max 1); 2: norm 0.5 under max 1 (no clip); 3: max_norm 0 (clipping
            // off); 4: a loss sum is NaN (the step is skipped).
            const float stats[3] = {guard == 4 ? std::nanf("") : 2.5f, 3.0f, guard == 2 ? 0.5f : 50.0f};
            const float maxNorm = guard == 3 ? 0.0f : 1.0f;
            const float clip = guard == 1 ? maxNorm / (stats[2] + 1e-6f) : 1.0f;
            std::vector<std::vector<float>> p, g, m, v;
            std::vector<AdamWTensor> table;
            long long blocks = 0;
            for (long long n : sizes)
            {
                p.emplace_back(n); g.emplace_back(n); m.emplace_back(n); v.emplace_back(n);
                for (long long i = 0; i < n; i++)
                {
                    p.back()[i] = qln_normal(); g.back()[i] = qln_normal() * 1e-2f;
                    m.back()[i] = qln_normal() * 1e-3f; v.back()[i] = std::fabs(qln_normal()) * 1e-5f;
                }
            }
            for (size_t t = 0; t < sizes.size(); t++)
            {
                table.push_back({p[t].data(), g[t].data(), m[t].data(), v[t].data(), sizes[t], blocks});
                blocks += (sizes[t] + kChunk - 1) / kChunk;
            }
            auto p0 = p, m0 = m, v0 = v;
            double lr = 2e-4, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = decayOn ? 0.01 : 0.0;
            long step = 3;
            double bc1 = 1 - std::pow(b1, step), bc2 = std::sqrt(1 - std::pow(b2, step));
            float decay = decayOn ? (float)(1 - lr * wd) : 1.0f, fb1 = (float)b1, fomb1 = (float)(1 - b1), fb2 = (float)b2,
                  fomb2 = (float)(1 - b2), fbc2 = (float)bc2, finv = 1.0f / fbc2, feps = (float)eps, fstep = (float)(lr / bc1);
            qln_launch((unsigned)blocks, 1, 256, [&] {
                qln_adamw(table.data(), (int)table.size(), decay, fb1, fomb1, fb2, fomb2, fbc2, finv, feps, fstep, flags,
                          guard == 0 ? nullptr : stats, 3, maxNorm);
            });
            for (size_t t = 0; t < sizes.size(); t++)
            {
                std::vector<float> wp(sizes[t]), wm(sizes[t]), wv(sizes[t]);
                for (long long i = 0; i < sizes[t]; i++)
                {
                    float pp = p0[t][i], gg = g[t][i], mm = m0[t][i], vv = v0[t][i];
                    if (guard == 4) { wp[i] = pp; wm[i] = mm; wv[i] = vv; continue; }
                    if (clip != 1.0f) gg = gg * clip;
                    if (decayOn) pp = pp * decay;
                    mm = (flags & 1) ? mm * fb1 + fomb1 * gg : std::fmaf(fomb1, gg, mm * fb1);
                    vv = (flags & 2) ? vv * fb2 + fomb2 * (gg * gg) : std::fmaf(fomb2, gg * gg, vv * fb2);
                    float d = (flags & 4) ? std::sqrt(vv) / fbc2 : std::sqrt(vv) * finv;
                    d = d + feps;
                    wp[i] = pp - (mm / d) * fstep; wm[i] = mm; wv[i] = vv;
                }
                char name[96];
                std::snprintf(name, sizeof name, "adamw guard=%d flags=%d decay=%d tensor %zu (n=%lld)", guard, flags, decayOn, t, sizes[t]);
                compare(std::string(name) + " p", p[t], wp, 0.0f);
                compare(std::string(name) + " m", m[t], wm, 0.0f);
                compare(std::string(name) + " v", v[t], wv, 0.0f);
            }
        }
    return finish();
}
