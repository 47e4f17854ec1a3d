// glu.cu on the CPU: SwiGLU and GeGLU-tanh, bf16 and fp32, forward and backward, against the formulas in double
// precision (tolerance: one rounding of the output plus the activations' fp32 error) and against libm's expf/tanhf
// for the activation itself.
#include "glu.cu"
#include "check_util.h"

int main()
{
    // The activations' own accuracy, over a wide range.
    double worst_exp = 0, worst_tanh = 0;
    for (int i = -2000; i <= 2000; i++)
    {
        float x = i * 0.043f;
        double e = std::exp((double)x), t = std::tanh((double)x);
        worst_exp = std::max(worst_exp, std::fabs(qln_exp(x) - e) / e);
        worst_tanh = std::max(worst_tanh, std::fabs(qln_tanh(x) - t));
    }
    std::printf("qln_exp max relative error %.3g (2^%.1f), qln_tanh max absolute error %.3g\n", worst_exp, std::log2(worst_exp), worst_tanh);
    check(worst_exp < 4e-7 && worst_tanh < 4e-7, "activation accuracy");

    const long long n = 8 * 1000 + 8 * 37;
    for (bool bf16 : {true, false})
        for (bool gelu : {false, true})
        {
            auto R = [&](double v) { return bf16 ? from_bf16(to_bf16((float)v)) : (float)v; };
            std::vector<float> g(n), u(n), dy(n);
            for (long long i = 0; i < n; i++) { g[i] = R(qln_normal() * 3); u[i] = R(qln_normal()); dy[i] = R(qln_normal()); }
            std::vector<unsigned short> gh(n), uh(n), dyh(n), oh(n, 0xdead), dgh(n, 0xdead), duh(n, 0xdead);
            std::vector<float> of(n, -1), dgf(n, -1), duf(n, -1);
            for (long long i = 0; i < n; i++) { gh[i] = to_bf16(g[i]); uh[i] = to_bf16(u[i]); dyh[i] = to_bf16(dy[i]); }
            const void* gp = bf16 ? (void*)gh.data() : (void*)g.data();
            const void* up = bf16 ? (void*)uh.data() : (void*)u.data();
            const void* dp = bf16 ? (void*)dyh.data() : (void*)dy.data();
            void* op = bf16 ? (void*)oh.data() : (void*)of.data();
            void* dgp = bf16 ? (void*)dgh.data() : (void*)dgf.data();
            void* dup = bf16 ? (void*)duh.data() : (void*)duf.data();
            long long n8 = n / 8;
            unsigned blocks = (unsigned)((n8 + 255) / 256);
            qln_launch(blocks, 1, 256, [&] {
                if (bf16 && !gelu) { qln_glu_fwd_swiglu_bf16(gp, up, op, n8); qln_glu_bwd_swiglu_bf16(dp, gp, up, dgp, dup, n8); }
                if (bf16 && gelu) { qln_glu_fwd_geglu_bf16(gp, up, op, n8); qln_glu_bwd_geglu_bf16(dp, gp, up, dgp, dup, n8); }
                if (!bf16 && !gelu) { qln_glu_fwd_swiglu_f32(gp, up, op, n8); qln_glu_bwd_swiglu_f32(dp, gp, up, dgp, dup, n8); }
                if (!bf16 && gelu) { qln_glu_fwd_geglu_f32(gp, up, op, n8); qln_glu_bwd_geglu_f32(dp, gp, up, dgp, dup, n8); }
            });
            std::vector<float> wo(n), wdg(n), wdu(n), go(n), gdg(n), gdu(n);
            const double beta = 0.7978845608028654, kappa = 0.044715;
            for (long long i = 0; i < n; i++)
            {
                double x = g[i];
                double act = gelu ? 0.5 * x * (1 + std::tanh(beta * (x + kappa * x * x * x))) : x / (1 + std::exp(-x));
                double deriv;
                if (gelu)
                {
                    double t = std::tanh(beta * (x + kappa * x * x * x));
                    deriv = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * beta * (1 + 3 * kappa * x * x);
                }
                else
                {
                    double s = 1 / (1 + std::exp(-x));
                    deriv = s * (1 + x * (1 - s));
                }
                wo[i] = R(R(act) * u[i]);
                wdu[i] = R(dy[i] * (double)R(act));
                wdg[i] = R((double)R(dy[i] * u[i]) * deriv);
                go[i] = bf16 ? from_bf16(oh[i]) : of[i];
                gdg[i] = bf16 ? from_bf16(dgh[i]) : dgf[i];
                gdu[i] = bf16 ? from_bf16(duh[i]) : duf[i];
            }
            std::string name = std::string(gelu ? "geglu " : "swiglu ") + (bf16 ? "bf16" : "f32");
            float tol = bf16 ? 1.0f / 64 : 1e-5f;
            compare(name + " out", go, wo, tol);
            compare(name + " dgate", gdg, wdg, tol);
            compare(name + " dup", gdu, wdu, tol);
        }
    return finish();
}
