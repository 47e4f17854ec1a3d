// Small helpers for the CPU checks of the CUDA kernels (see check_kernels_on_cpu.sh).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

static std::mt19937 qln_rng(1234);

inline float qln_normal() { static std::normal_distribution<float> d(0.0f, 1.0f); return d(qln_rng); }
inline float qln_uniform(float lo, float hi) { std::uniform_real_distribution<float> d(lo, hi); return d(qln_rng); }

// bf16 storage as uint16 bits.
inline unsigned short to_bf16(float x) { return (unsigned short)qln_bf16_bits(x); }
inline float from_bf16(unsigned short b) { return qln_as_float((u32)b << 16); }

static int qln_failures = 0;

inline void check(bool ok, const std::string& what)
{
    if (!ok) { qln_failures++; std::printf("FAIL %s\n", what.c_str()); }
}

// Compares two float arrays: exact when tol == 0, else |a - b| <= tol * (1 + |b|).
inline void compare(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, float tol)
{
    size_t bad = 0, first = (size_t)-1;
    for (size_t i = 0; i < want.size(); i++)
    {
        bool ok = tol == 0.0f ? (qln_as_u32(got[i]) == qln_as_u32(want[i]) || (got[i] == 0.0f && want[i] == 0.0f))
                              : std::fabs(got[i] - want[i]) <= tol * (1.0f + std::fabs(want[i]));
        if (!ok) { if (first == (size_t)-1) first = i; bad++; }
    }
    if (bad) std::printf("FAIL %s: %zu of %zu differ, first at %zu: got %.9g want %.9g\n", name.c_str(), bad, want.size(), first,
                         got[first], want[first]);
    else std::printf("ok   %s (%zu values%s)\n", name.c_str(), want.size(), tol == 0.0f ? ", bit-exact" : "");
    if (bad) qln_failures++;
}

inline int finish() { std::printf(qln_failures ? "%d FAILED\n" : "all passed\n", qln_failures); return qln_failures ? 1 : 0; }
