// cross_entropy.cu on the CPU: loss and gradient per row, bf16 and fp32 logits, vocabularies of several widths,
// targets anywhere in the row (first, last, the maximum), ignored rows and out-of-range targets, against scalar loops
// in double precision (tolerance: the loss to ~1e-5 relative, each gradient element to one rounding of the result).
#include "cross_entropy.cu"
#include "check_util.h"

int main()
{
    const i64 ignore = -100;
    for (int V : {8, 264, 4104, 32000})
        for (bool bf16 : {true, false})
        {
            const int rows = 6;
            size_t n = (size_t)rows * V;
            std::vector<unsigned short> h(bf16 ? n : 0);
            std::vector<float> f(bf16 ? 0 : n), x(n);
            for (size_t i = 0; i < n; i++)
            {
                float v = qln_normal() * 3.0f;
                if (bf16) { h[i] = to_bf16(v); x[i] = from_bf16(h[i]); } else { f[i] = v; x[i] = v; }
            }
            // Targets: the first and last column, the row's maximum, a middle one, ignored, out of range.
            std::vector<i64> targets = {0, V - 1, 0, V / 2, ignore, V};
            {
                int best = 0;
                for (int j = 1; j < V; j++) if (x[2 * (size_t)V + j] > x[2 * (size_t)V + best]) best = j;
                targets[2] = best;
            }
            std::vector<float> loss(rows, -7.0f), want_loss(rows), want_grad(n);
            for (int r = 0; r < rows; r++)
            {
                double m = -INFINITY, s = 0;
                for (int j = 0; j < V; j++) m = std::max(m, (double)x[(size_t)r * V + j]);
                for (int j = 0; j < V; j++) s += std::exp((double)x[(size_t)r * V + j] - m);
                double lse = m + std::log(s);
                i64 t = targets[r];
                bool valid = t >= 0 && t < V;
                want_loss[r] = t == ignore ? 0.0f : valid ? (float)(lse - x[(size_t)r * V + t]) : NAN;
                for (int j = 0; j < V; j++)
                {
                    double g = valid ? std::exp((double)x[(size_t)r * V + j] - lse) - (j == t ? 1.0 : 0.0) : 0.0;
                    want_grad[(size_t)r * V + j] = bf16 ? from_bf16(to_bf16((float)g)) : (float)g;
                }
            }
            void* p = bf16 ? (void*)h.data() : (void*)f.data();
            qln_launch(rows, 1, kThreads, [&] {
                if (bf16) qln_cross_entropy_bf16(p, targets.data(), loss.data(), V, ignore);
                else qln_cross_entropy_f32(p, targets.data(), loss.data(), V, ignore);
            });
            std::vector<float> grad(n);
            for (size_t i = 0; i < n; i++) grad[i] = bf16 ? from_bf16(h[i]) : f[i];
            char name[96];
            std::snprintf(name, sizeof name, "cross-entropy V=%d %s", V, bf16 ? "bf16" : "f32");
            check(std::isnan(loss[5]), std::string(name) + " loss of an out-of-range target is NaN");
            loss[5] = want_loss[5] = 0.0f;
            compare(std::string(name) + " loss", loss, want_loss, 1e-5f);
            // Relative to each element (the gradient's entries are ~1/V, far below compare()'s absolute floor): one
            // bf16 step (2^-7 relative at most), or 1e-5 for fp32 (e^x and ln to a few ulp, lse to ~1e-6 absolute).
            {
                size_t bad = 0, first = 0;
                float rel = bf16 ? 1.0f / 128 : 1e-5f;
                for (size_t i = 0; i < n; i++)
                    if (!(std::fabs(grad[i] - want_grad[i]) <= rel * std::fabs(want_grad[i]) + 1e-30f)) { if (!bad) first = i; bad++; }
                if (bad) std::printf("FAIL %s grad: %zu of %zu differ, first at %zu: got %.9g want %.9g\n", name, bad, n, first, grad[first], want_grad[first]);
                else std::printf("ok   %s grad (%zu values, each within %g of itself)\n", name, n, rel);
                if (bad) qln_failures++;
            }
        }
    std::printf("%s\n", qln_failures ? "FAILED" : "all ok");
    return qln_failures ? 1 : 0;
}
