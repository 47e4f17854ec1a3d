// dropout.cu on the CPU: the mask against SplitMix64 written out per element (and against golden values that the C#
// test RandomStreamBitsTests also holds Models.RandomStream to, so the kernel and the torch-op reference share
// one definition of the bits), and forward/backward against the reference's roundings, bf16 and fp32, with -0, NaN
// and infinities among the inputs. Bit for bit (compared as bits, so -0 and NaN count).
#include "dropout.cu"
#include "check_util.h"
#include <cstdint>
#include <cstring>

static uint64_t splitmix_finalize(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// RandomStream: element i's 16 bits of the draw with key `key`.
static uint32_t bits_of(uint64_t key, long long i)
{
    uint64_t z = splitmix_finalize((uint64_t)(i / 4 + 1) * 0x9E3779B97F4A7C15ull + key);
    return (uint32_t)(z >> (16 * (i % 4))) & 0xffffu;
}

static float round_as(bool bf16, float x) { return bf16 ? from_bf16(to_bf16(x)) : x; }

int main()
{
    // Golden values: RandomStream(1234)'s first draw (key from seed 1234, draw 0) and its first 12 elements' bits.
    const uint64_t key = 0x29ff45df4487fcb8ull;
    const uint32_t golden[12] = {16373, 53319, 8678, 21795, 2363, 13082, 58734, 10480, 63461, 8014, 1899, 8819};
    uint64_t host_key = splitmix_finalize(1234ull * 0x9E3779B97F4A7C15ull + splitmix_finalize(0 + 1));
    check(host_key == key, "draw key of seed 1234, draw 0");
    for (int i = 0; i < 12; i++)
    {
        uint32_t kernel_bits = (uint32_t)(qln_dropout_word(key, (u64)(i / 4)) >> (16 * (i % 4))) & 0xffffu;
        check(kernel_bits == golden[i] && bits_of(key, i) == golden[i], "golden bits of element " + std::to_string(i));
    }

    const long long n = 8 * 1000 + 8 * 37;
    const uint32_t threshold = 6554;                       // round(0.1 * 65536)
    const float scale = (float)(1.0 / (1.0 - threshold / 65536.0));
    for (bool bf16 : {true, false})
        for (bool backward : {false, true})
        {
            std::vector<float> x(n);
            for (long long i = 0; i < n; i++) x[i] = round_as(bf16, qln_normal() * 3);
            x[0] = NAN; x[1] = INFINITY; x[2] = -0.0f; x[3] = -INFINITY; x[5] = -1.5f; x[9] = 3e38f;
            std::vector<unsigned short> xh(n), yh(n, 0xdead);
            std::vector<float> yf(n, -1.0f);
            for (long long i = 0; i < n; i++) xh[i] = to_bf16(x[i]);
            const void* in = bf16 ? (void*)xh.data() : (void*)x.data();
            void* out = bf16 ? (void*)yh.data() : (void*)yf.data();
            long long n8 = n / 8;
            qln_launch((unsigned)((n8 + 255) / 256), 1, 256, [&] {
                if (bf16 && !backward) qln_dropout_fwd_bf16(in, out, key, threshold, scale, n8);
                if (bf16 && backward) qln_dropout_bwd_bf16(in, out, key, threshold, scale, n8);
                if (!bf16 && !backward) qln_dropout_fwd_f32(in, out, key, threshold, scale, n8);
                if (!bf16 && backward) qln_dropout_bwd_f32(in, out, key, threshold, scale, n8);
            });
            long long bad = 0, dropped = 0;
            for (long long i = 0; i < n; i++)
            {
                float keep = bits_of(key, i) >= threshold ? 1.0f : 0.0f;
                dropped += keep == 0.0f;
                // x.mul(keep).mul_(scale) forward; autograd's grad * scale, then * keep, backward.
                float want = backward ? round_as(bf16, round_as(bf16, x[i] * scale) * keep) : round_as(bf16, round_as(bf16, x[i] * keep) * scale);
                uint32_t got_bits = bf16 ? yh[i] : qln_as_u32(yf[i]);
                uint32_t want_bits = bf16 ? to_bf16(want) : qln_as_u32(want);
                if (got_bits != want_bits) { if (bad++ < 3) std::printf("  element %lld: got %08x want %08x\n", i, got_bits, want_bits); }
            }
            std::string name = std::string("dropout ") + (backward ? "bwd " : "fwd ") + (bf16 ? "bf16" : "f32");
            check(bad == 0, name + " bit-exact");
            // About p of the elements dropped (a loose check that the threshold is read the right way round).
            check(dropped > n / 20 && dropped < n / 5, name + " drops about 10%");
            if (bad == 0) std::printf("ok   %s (%lld values, %lld dropped, bit-exact)\n", name.c_str(), n, dropped);
        }
    return finish();
}
