// rms_norm.cu on the CPU: forward and backward, plain / residual / Gemma, bf16 and fp32, rows of several widths,
// against scalar loops in double precision (tolerance: one bf16 rounding, or fp32 rounding, of the result).
#include "rms_norm.cu"
#include "check_util.h"

struct Buf
{
    bool bf16;
    std::vector<unsigned short> h;
    std::vector<float> f;
    Buf(size_t n, bool b) : bf16(b), h(b ? n : 0, 0xdead), f(b ? 0 : n, -12345.0f) {}
    void* ptr() { return bf16 ? (void*)h.data() : (void*)f.data(); }
    void set(size_t i, float v) { if (bf16) h[i] = to_bf16(v); else f[i] = v; }
    float get(size_t i) const { return bf16 ? from_bf16(h[i]) : f[i]; }
    std::vector<float> all() const { std::vector<float> r(bf16 ? h.size() : f.size()); for (size_t i = 0; i < r.size(); i++) r[i] = get(i); return r; }
};

int main()
{
    const int rows = 3;
    for (int H : {72, 4096, 5120})
        for (bool bf16 : {true, false})
            for (bool res : {false, true})
                for (bool gemma : {false, true})
                {
                    size_t n = (size_t)rows * H;
                    Buf x(n, bf16), r(n, bf16), w(H, bf16), y(n, bf16), hout(n, bf16), dy(n, bf16), dh(n, bf16), dx(n, bf16);
                    std::vector<float> rstd(rows, -1.0f);
                    for (size_t i = 0; i < n; i++) { x.set(i, qln_normal() * 2); r.set(i, qln_normal()); dy.set(i, qln_normal()); dh.set(i, qln_normal()); }
                    for (int i = 0; i < H; i++) w.set(i, 1.0f + 0.1f * qln_normal());
                    float eps = 1e-5f;
                    // Expected (double sums), and the h the kernel should write.
                    std::vector<float> want_y(n), want_h(n), want_dx(n), want_r(rows);
                    for (int row = 0; row < rows; row++)
                    {
                        double ss = 0;
                        for (int j = 0; j < H; j++)
                        {
                            size_t i = (size_t)row * H + j;
                            float hv = res ? (bf16 ? from_bf16(to_bf16(x.get(i) + r.get(i))) : x.get(i) + r.get(i)) : x.get(i);
                            want_h[i] = hv;
                            ss += (double)hv * hv;
                        }
                        double rr = 1.0 / std::sqrt(ss / H + eps);
                        want_r[row] = (float)rr;
                        double s = 0;
                        std::vector<double> g(H);
                        for (int j = 0; j < H; j++)
                        {
                            size_t i = (size_t)row * H + j;
                            double yv = gemma ? want_h[i] * rr * (1.0 + w.get(j)) : w.get(j) * (double)(bf16 ? from_bf16(to_bf16((float)(want_h[i] * rr))) : (float)(want_h[i] * rr));
                            want_y[i] = bf16 ? from_bf16(to_bf16((float)yv)) : (float)yv;
                            g[j] = gemma ? dy.get(i) * (1.0 + w.get(j)) : (double)(bf16 ? from_bf16(to_bf16(dy.get(i) * w.get(j))) : dy.get(i) * w.get(j));
                            s += g[j] * want_h[i];
                        }
                        for (int j = 0; j < H; j++)
                        {
                            size_t i = (size_t)row * H + j;
                            double d = g[j] * rr - want_h[i] * rr * rr * rr * s / H;
                            if (res) d = dh.get(i) + (bf16 ? from_bf16(to_bf16((float)d)) : d);
                            want_dx[i] = bf16 ? from_bf16(to_bf16((float)d)) : (float)d;
                        }
                    }
                    qln_launch(rows, 1, 256, [&] {
#define FWD(nm) nm(x.ptr(), r.ptr(), w.ptr(), y.ptr(), hout.ptr(), rstd.data(), H, eps)
                        if (bf16) { if (res) { if (gemma) FWD(qln_rmsnorm_fwd_res_gemma_bf16); else FWD(qln_rmsnorm_fwd_res_bf16); } else { if (gemma) FWD(qln_rmsnorm_fwd_gemma_bf16); else FWD(qln_rmsnorm_fwd_bf16); } }
                        else { if (res) { if (gemma) FWD(qln_rmsnorm_fwd_res_gemma_f32); else FWD(qln_rmsnorm_fwd_res_f32); } else { if (gemma) FWD(qln_rmsnorm_fwd_gemma_f32); else FWD(qln_rmsnorm_fwd_f32); } }
                    });
                    const void* hsaved = res ? hout.ptr() : x.ptr();
                    qln_launch(rows, 1, 256, [&] {
#define BWD(nm) nm(dy.ptr(), hsaved, rstd.data(), w.ptr(), dh.ptr(), dx.ptr(), H)
                        if (bf16) { if (res) { if (gemma) BWD(qln_rmsnorm_bwd_res_gemma_bf16); else BWD(qln_rmsnorm_bwd_res_bf16); } else { if (gemma) BWD(qln_rmsnorm_bwd_gemma_bf16); else BWD(qln_rmsnorm_bwd_bf16); } }
                        else { if (res) { if (gemma) BWD(qln_rmsnorm_bwd_res_gemma_f32); else BWD(qln_rmsnorm_bwd_res_f32); } else { if (gemma) BWD(qln_rmsnorm_bwd_gemma_f32); else BWD(qln_rmsnorm_bwd_f32); } }
                    });
                    char name[128];
                    std::snprintf(name, sizeof name, "rmsnorm H=%d %s%s%s", H, bf16 ? "bf16" : "f32", res ? " residual" : "", gemma ? " gemma" : "");
                    float tol = bf16 ? 1.0f / 128 : 1e-5f;
                    compare(std::string(name) + " y", y.all(), want_y, tol);
                    compare(std::string(name) + " rstd", rstd, want_r, 1e-5f);
                    if (res) compare(std::string(name) + " h", hout.all(), want_h, 0.0f);
                    compare(std::string(name) + " dx", dx.all(), want_dx, bf16 ? 1.0f / 64 : 1e-4f);
                }
    return finish();
}
