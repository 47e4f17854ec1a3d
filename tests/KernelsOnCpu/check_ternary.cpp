// ternary_matmul.cu on the CPU: int32 sums of int8 codes times packed ternary weights (Hugging Face's BitNet layout)
// against a scalar loop, for the 32-bit path (k % 4 == 0) and the byte path, token counts around the 8 a warp takes.
#include "ternary_matmul.cu"
#include "check_util.h"

int main()
{
    for (long long k : {4LL, 256LL, 132LL, 33LL, 1LL, 516LL})
        for (long long n : {1LL, 7LL, 8LL, 17LL})
            for (long long quarter : {1LL, 5LL, 9LL})
            {
                long long m = 4 * quarter;
                std::vector<signed char> codes(n * k);
                for (auto& c : codes) c = (signed char)((int)(qln_rng() % 256) - 128);   // -128 included
                std::vector<int> w(m * k);
                for (auto& v : w) v = (int)(qln_rng() % 3) - 1;
                std::vector<unsigned char> packed(quarter * k, 0);
                for (long long o = 0; o < m; o++)
                    for (long long i = 0; i < k; i++)
                        packed[(o % quarter) * k + i] |= (unsigned char)((w[o * k + i] + 1) << (2 * (o / quarter)));
                std::vector<float> want(n * m), got(n * m);
                for (long long t = 0; t < n; t++)
                    for (long long o = 0; o < m; o++)
                    {
                        long long s = 0;
                        for (long long i = 0; i < k; i++) s += (long long)w[o * k + i] * codes[t * k + i];
                        want[t * m + o] = (float)s;
                    }
                std::vector<int> out(n * m, -999999);
                unsigned gx = (unsigned)((quarter + kWarps - 1) / kWarps), gy = (unsigned)((n + kTokens - 1) / kTokens);
                qln_launch(gx, gy, 32 * kWarps, [&] { qln_ternary_sums(codes.data(), packed.data(), out.data(), n, k, quarter); });
                for (long long i = 0; i < n * m; i++) got[i] = (float)out[i];
                char name[96];
                std::snprintf(name, sizeof name, "ternary sums n=%lld k=%lld m=%lld", n, k, m);
                compare(name, got, want, 0.0f);
            }
    return finish();
}
