// mnt kernels: what the per-element maths of every op shares between nvcc (device and host
// code) and a plain host C++ compiler (the CPU reference library tested against PyTorch).
//
// - MNT_HD marks functions callable on both sides (__host__ __device__ under nvcc).
// - mnt_half is FP16 storage: CUDA's __half under nvcc, a 16-bit pattern elsewhere with an
//   exact software conversion (round to nearest even, subnormals, inf and NaN), so the host
//   library needs no CUDA headers and no compiler support for _Float16.
// - Products are written as explicit fmaf() so that host and device round alike: nvcc
//   would contract a*b+c into an FMA on its own, a host compiler would not; the builds
//   turn implicit contraction off (nvcc --fmad=false, g++ -ffp-contract=off), so every
//   other operation rounds identically on both sides. Only expf differs (CUDA's is within
//   2 ulp of glibc's).
#ifndef MNT_KERNELS_COMMON_H
#define MNT_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define MNT_HD __host__ __device__
#define MNT_UNROLL _Pragma("unroll")
#include <cuda_fp16.h>
typedef __half mnt_half;
#else
#define MNT_HD
#define MNT_UNROLL
typedef struct mnt_half {
    uint16_t bits;
} mnt_half;
#endif

// Error codes returned by shape checks: the values of cudaSuccess and cudaErrorInvalidValue,
// so a launcher returns them as its cudaError_t and the host library returns the same.
#define MNT_OK 0
#define MNT_ERROR_INVALID_VALUE 1

MNT_HD inline uint32_t mnt_float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

MNT_HD inline float mnt_bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// A quiet NaN: what a kernel writes to its output when it refuses its shape arguments (an
// AOT TensorRT plugin launches it with no host code of ours to refuse them first).
MNT_HD inline float mnt_nan() { return mnt_bits_float(0x7fc00000u); }

// IEEE binary16 bits -> float (exact: every half is a float).
MNT_HD inline float mnt_half_bits_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1fu) {  // inf or NaN (keep the payload)
        return mnt_bits_float(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        float magnitude = (float)mantissa * 5.9604644775390625e-08f;
        return sign ? -magnitude : magnitude;
    }
    return mnt_bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// float -> IEEE binary16 bits, round to nearest, ties to even (what __float2half_rn does).
MNT_HD inline uint16_t mnt_float_to_half_bits(float f) {
    uint32_t u = mnt_float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {  // inf, or NaN made quiet
        return (uint16_t)(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u));
    }
    if (magnitude >= 0x477ff000u) {  // rounds to 65520 or more: overflow to inf
        return (uint16_t)(sign | 0x7c00u);
    }
    if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
        // Scale to units of 2^-24; adding 0.5 * 2^-? is not exact, so round by hand.
        uint32_t shift = 126u - (magnitude >> 23);  // 14 + (unbiased exponent distance)
        if (shift > 24u) {
            return sign;  // below half the smallest subnormal: rounds to zero
        }
        uint32_t mant = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t kept = mant >> shift;
        uint32_t rest = mant & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (kept & 1u))) {
            kept += 1u;
        }
        return (uint16_t)(sign | kept);
    }
    // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
    uint32_t h = ((magnitude >> 13) - (112u << 10));
    uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
        h += 1u;  // a carry into the exponent is the correct rounding
    }
    return (uint16_t)(sign | h);
}

// Storage <-> FP32 compute.
MNT_HD inline float mnt_load(float v) { return v; }
MNT_HD inline void mnt_store(float* out, float v) { *out = v; }

#if defined(__CUDACC__)
MNT_HD inline float mnt_load(mnt_half v) { return __half2float(v); }
MNT_HD inline void mnt_store(mnt_half* out, float v) { *out = __float2half_rn(v); }
#else
inline float mnt_load(mnt_half v) { return mnt_half_bits_to_float(v.bits); }
inline void mnt_store(mnt_half* out, float v) { out->bits = mnt_float_to_half_bits(v); }
#endif

MNT_HD inline int mnt_ceil_div(long long a, int b) { return (int)((a + b - 1) / b); }

#endif  // MNT_KERNELS_COMMON_H
