/* Shared by every kernel file: the export macro, SIMD helpers, float16 widening and the
 * exp/log approximations (there is no libm: the module is freestanding).
 *
 * Calling convention of every exported kernel: pointers are byte offsets into the module's
 * linear memory (i32), counts are i32, scalars are f32; kernels return nothing unless noted.
 * Matrices are row-major. A weight "stored f16" is packed binary16 (see "Float16 weights"
 * below), widened to f32 as it is loaded; all arithmetic is f32 unless noted.
 */
#ifndef WEBGPT2_COMMON_H
#define WEBGPT2_COMMON_H

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

/* acc + a b in f32 lanes, for the matrix products' inner loops (matmul.c). The relaxed
 * builds (-mrelaxed-simd, tools/build_wasm.py) use one f32x4.relaxed_madd, which the engine
 * may fuse (one rounding: an FMA, where the CPU has one) or not (a b rounded, then added);
 * the other builds multiply, then add. */
#ifdef __wasm_relaxed_simd__
#define MADD(acc, a, b) wasm_f32x4_relaxed_madd(a, b, acc)
#else
#define MADD(acc, a, b) wasm_f32x4_add(acc, wasm_f32x4_mul(a, b))
#endif

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

/* binary16 -> binary32 for any half, exactly (plain IEEE halves: host data converted at
 * upload). A half's exponent and mantissa go 13 bits up into an f32's; multiplying by 2^112
 * rebiases the exponent, exactly, subnormals included, and keeps the sign. */
INLINE float f16_to_f32_exact(u16 h) {
    if ((h & 0x7c00) == 0x7c00)
        return bits_to_f32(((u32)(h & 0x8000) << 16) | 0x7f800000u | ((u32)(h & 0x3ff) << 13));
    return bits_to_f32(((u32)(h & 0x8000) << 16) | ((u32)(h & 0x7fff) << 13)) *
           bits_to_f32(0x77800000); /* 2^112 */
}

/* Float16 weights as the kernels store them ("packed", layout.c's pack_f16): a weight w is
 * the binary16 of w 2^10, and each group of 8 consecutive elements (counted from the start
 * of the tensor, which is padded to whole groups) is stored as [k0,k4,k1,k5,k2,k6,k3,k7].
 * Why: a 128-bit load of a group, seen as four 32-bit lanes, then holds k0..k3 in the low
 * halves and k4..k7 in the high halves, so each widens with shifts and one mask, in place,
 * with no shuffle; and scaled by 2^10, no stored half is subnormal (weights with |w| >= 64
 * or a non-finite element stay float32, layout.c's count_unpackable_f16), so neither is any
 * widened float: an f32 multiply with a subnormal operand can take a slow microcoded path.
 *
 * Widening: a half's sign, exponent and mantissa, moved so that the exponent lands 13 bits
 * up in an f32's, give that f32 the value of the half times 2^-112 ("raw"), exactly, as
 * long as the half is normal or zero; a stored half is w 2^10, so raw = w 2^-102, and
 * w = raw 2^102 (a power of two: exact). */
#define PACKED_UNSCALE 0x72800000 /* 2^102, the f32 bits */
#define PACKED_MASK ((int)0x8fffe000)

/* Where element i of a packed tensor is stored (in halves from its start). */
INLINE long packed_index(long i) {
    return (i & ~7L) | ((i & 3) << 1) | ((i >> 2) & 1);
}

/* One group of 8 (p at a multiple of 8 halves from the tensor's start) -> raw values of
 * k0..k3 (lo) and k4..k7 (hi). Both end as the half sign-extended and moved 13 bits up,
 * masked: the mask clears the sign's copies (bits 28-30) and, for the high halves, the low
 * half's bits shifted in under the mantissa. The high halves get there by an arithmetic
 * shift by 3; the low halves by a 16-bit multiply-add (low half times 2^13, high half times
 * 0), one instruction where shifting them up and back down takes two. */
INLINE void load_packed_raw(const u16 *p, v128_t *lo, v128_t *hi) {
    v128_t v = wasm_v128_load(p), mask = wasm_i32x4_splat(PACKED_MASK);
    *hi = wasm_v128_and(wasm_i32x4_shr(v, 3), mask);
    *lo = wasm_v128_and(wasm_i32x4_dot_i16x8(v, wasm_i32x4_splat(1 << 13)), mask);
}

/* The same group's values, exactly (raw times 2^102). */
INLINE void load_packed(const u16 *p, v128_t *lo, v128_t *hi) {
    v128_t scale = wasm_i32x4_splat(PACKED_UNSCALE);
    load_packed_raw(p, lo, hi);
    *lo = wasm_f32x4_mul(*lo, scale);
    *hi = wasm_f32x4_mul(*hi, scale);
}

INLINE float packed_value(u16 h) {
    return bits_to_f32(((u32)(h & 0x8000) << 16) | ((u32)(h & 0x7fff) << 13)) *
           bits_to_f32(PACKED_UNSCALE);
}

/* dst [count] f32 = elements first .. first + count - 1 of the packed tensor w, exactly. */
INLINE void unpack_f16(const u16 *w, long first, long count, float *dst) {
    long i = 0;
    for (; i < count && ((first + i) & 7); i++) dst[i] = packed_value(w[packed_index(first + i)]);
    for (; i + 8 <= count; i += 8) {
        v128_t lo, hi;
        load_packed(w + first + i, &lo, &hi);
        wasm_v128_store(dst + i, lo);
        wasm_v128_store(dst + i + 4, hi);
    }
    for (; i < count; i++) dst[i] = packed_value(w[packed_index(first + i)]);
}

/* Float16 weights of a linear layer ("panels", layout.c's pack_panels_f16): the same packed
 * halves (w 2^10, groups of 8 permuted as above), ordered for a decode step that takes 32
 * outputs at a time: panel p holds outputs 32p .. 32p + 31 (N padded with zeros to whole
 * panels), and in it, for k = 0 .. K - 1 in turn, the 32 weights w[32p + j][k], j = 0 .. 31,
 * as 4 groups of 8 consecutive j. A panel is K x 64 contiguous bytes. */
#define PANEL_OUTPUTS 32

/* Where weight (n, k) of a panel-packed [N, K] weight is stored (in halves from its start). */
INLINE long panel_index(long n, long k, long K) {
    long j = n & (PANEL_OUTPUTS - 1);
    return ((n / PANEL_OUTPUTS) * K + k) * PANEL_OUTPUTS + (j & ~7L) + packed_index(j & 7);
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
