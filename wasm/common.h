/* Shared by every kernel file: the export macro, SIMD helpers, float16 widening and the
 * exp/log approximations (there is no libm: the module is freestanding).
 *
 * Calling convention of every exported kernel: pointers are byte offsets into the module's
 * linear memory (i32), counts are i32, scalars are f32; kernels return nothing unless noted.
 * Matrices are row-major. A weight "stored f16" holds IEEE binary16 bit patterns, widened to
 * f32 as they are loaded; all arithmetic is f32 unless noted.
 */
#ifndef WEBGPT2_COMMON_H
#define WEBGPT2_COMMON_H

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

INLINE float hsum(v128_t v) {
    return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
           (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}

INLINE float hmax(v128_t v) {
    float a = wasm_f32x4_extract_lane(v, 0), b = wasm_f32x4_extract_lane(v, 1);
    float c = wasm_f32x4_extract_lane(v, 2), d = wasm_f32x4_extract_lane(v, 3);
    a = a > b ? a : b;
    c = c > d ? c : d;
    return a > c ? a : c;
}

INLINE float bits_to_f32(u32 bits) {
    union { u32 u; float f; } v = {bits};
    return v.f;
}

INLINE u32 f32_to_bits(float f) {
    union { float f; u32 u; } v = {f};
    return v.u;
}

/* binary16 -> binary32 for finite halves (weights: uploads keep any weight with an infinity
 * or NaN in float32, see layout.c's count_nonfinite_f16). A half's exponent and mantissa go
 * 13 bits up into an f32's; multiplying by 2^112 rebiases the exponent, exactly, subnormals
 * included, and the product keeps the sign. */
INLINE v128_t f16_high_to_f32x4(v128_t halves_in_high_bits) {
    v128_t bits = wasm_v128_and(wasm_i32x4_shr(halves_in_high_bits, 3),
                                wasm_i32x4_splat((int)0x8fffffff));
    return wasm_f32x4_mul(bits, wasm_i32x4_splat(0x77800000)); /* 2^112 */
}

/* 8 halves at p -> two f32x4 (the low four, the high four). The shifting is done on the
 * 16-bit lanes, 8 at a time: each f32's top half is the half shifted right by 3 (its sign's
 * copies cleared), its bottom half the 3 bits shifted out. */
INLINE void load_f16x8(const u16 *p, v128_t *lo, v128_t *hi) {
    v128_t h = wasm_v128_load(p);
    v128_t top = wasm_v128_and(wasm_i16x8_shr(h, 3), wasm_i16x8_splat((short)0x8fff));
    v128_t bottom = wasm_i16x8_shl(h, 13);
    v128_t scale = wasm_i32x4_splat(0x77800000); /* 2^112 */
    *lo = wasm_f32x4_mul(wasm_i16x8_shuffle(bottom, top, 0, 8, 1, 9, 2, 10, 3, 11), scale);
    *hi = wasm_f32x4_mul(wasm_i16x8_shuffle(bottom, top, 4, 12, 5, 13, 6, 14, 7, 15), scale);
}

INLINE float f16_to_f32(u16 h) {
    return wasm_f32x4_extract_lane(f16_high_to_f32x4(wasm_i32x4_splat((int)((u32)h << 16))), 0);
}

/* binary16 -> binary32 for any half, infinities and NaNs included (reading weights back). */
INLINE float f16_to_f32_exact(u16 h) {
    if ((h & 0x7c00) == 0x7c00)
        return bits_to_f32(((u32)(h & 0x8000) << 16) | 0x7f800000u | ((u32)(h & 0x3ff) << 13));
    return f16_to_f32(h);
}

/* e^x for x in f32 lanes: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7
 * (relative error below 1e-7), 2^n built in the exponent bits in two halves so that results
 * down to the subnormal range stay right. Below -104 (and -inf) it is 0, above 88.72 inf. */
INLINE v128_t exp_f32x4(v128_t x) {
    v128_t big = wasm_f32x4_gt(x, wasm_f32x4_splat(88.72283935546875f));
    v128_t tiny = wasm_f32x4_lt(x, wasm_f32x4_splat(-104.0f));
    v128_t xc = wasm_f32x4_max(wasm_f32x4_min(x, wasm_f32x4_splat(88.7f)),
                               wasm_f32x4_splat(-104.0f));
    v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(xc, wasm_f32x4_splat(1.44269502f)));
    v128_t r = wasm_f32x4_sub(xc, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693145751953125f)));
    r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(1.428606765330187e-06f)));
    v128_t p = wasm_f32x4_splat(1.0f / 5040.0f);
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 720.0f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 120.0f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 24.0f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 6.0f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.5f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
    v128_t ni = wasm_i32x4_trunc_sat_f32x4(n);
    v128_t half = wasm_i32x4_shr(ni, 1);
    v128_t rest = wasm_i32x4_sub(ni, half);
    v128_t s1 = wasm_i32x4_shl(wasm_i32x4_add(half, wasm_i32x4_splat(127)), 23);
    v128_t s2 = wasm_i32x4_shl(wasm_i32x4_add(rest, wasm_i32x4_splat(127)), 23);
    v128_t y = wasm_f32x4_mul(wasm_f32x4_mul(p, s1), s2);
    y = wasm_v128_bitselect(wasm_f32x4_splat(__builtin_inff()), y, big);
    y = wasm_v128_andnot(y, tiny);
    /* NaN in, NaN out. */
    v128_t nan = wasm_f32x4_ne(x, x);
    return wasm_v128_bitselect(x, y, nan);
}

INLINE float exp_f32(float x) {
    return wasm_f32x4_extract_lane(exp_f32x4(wasm_f32x4_splat(x)), 0);
}

/* Natural log in double precision (used once per row, so speed does not matter):
 * x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1)) by its series. */
static inline double log_f64(double x) {
    if (!(x > 0.0)) return x == 0.0 ? -__builtin_inf() : __builtin_nan("");
    if (x == __builtin_inf()) return x;
    union { double d; unsigned long long u; } v = {x};
    int e = (int)((v.u >> 52) & 0x7ff);
    if (e == 0) { /* subnormal: scale into the normal range first */
        v.d = x * 18014398509481984.0; /* 2^54 */
        e = (int)((v.u >> 52) & 0x7ff) - 54;
    }
    e -= 1023;
    v.u = (v.u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m = v.d;
    if (m > 1.4142135623730951) { m *= 0.5; e += 1; }
    double z = (m - 1.0) / (m + 1.0), z2 = z * z, term = z, sum = 0.0;
    for (int k = 1; k < 40; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return 2.0 * sum + e * 0.6931471805599453;
}

/* Dot product of n floats (4 partial sums, then the ragged tail). */
INLINE float dot_f32(const float *a, const float *b, int n) {
    v128_t s0 = wasm_f32x4_splat(0.0f), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
        s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(wasm_v128_load(a + i + 4),
                                               wasm_v128_load(b + i + 4)));
    }
    for (; i + 4 <= n; i += 4)
        s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
    float s = hsum(wasm_f32x4_add(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

#endif
