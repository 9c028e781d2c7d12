/* Storage conversions for weights as they are uploaded and read back.
 *
 * transpose_32(src, dst, rows, cols): dst [cols, rows] = src [rows, cols]^T for 4-byte
 *   elements (a float32 Conv1D weight [K, N] becomes [N, K]); src, dst disjoint.
 * narrow_f16(src, dst, n): dst [n] binary16 = src [n] f32, rounded to nearest even
 *   (overflow to inf, NaN stays NaN).
 * widen_binary16(src, dst, n): dst [n] f32 = src [n] binary16, exactly (infinities, NaNs
 *   too): host float16 data stored as float32.
 * count_unpackable_f16(src, n) -> i32: how many of src [n] binary16 are infinite, NaN or
 *   at least 64 in magnitude: a weight with any is stored float32 (the packed form scales by
 *   2^10 and widens finite halves only).
 * pack_f16(w, n): w [n] binary16 (every one packable), padded to a multiple of 8 halves,
 *   becomes the kernels' packed float16 (common.h), in place; the padding becomes zeros.
 * widen_f16(src, dst, n): dst [n] f32 = the n elements of the packed float16 tensor src,
 *   exactly (reading a float16 weight back).
 * widen_bf16(src, dst, n): dst [n] f32 = src [n] bfloat16, exactly.
 * pack_panels_f16(src, dst, K, N): src [K, N] binary16 (a Conv1D weight as stored, every
 *   element packable) becomes dst, the [N, K] weight in panels (common.h), ceil(N / 32) 64 K
 *   bytes; the padding outputs are zeros. src, dst disjoint.
 * widen_panels_f16(src, dst, K, N): dst [K, N] f32 = the panel-packed [N, K] weight src,
 *   exactly, in the host's Conv1D order (reading a float16 linear weight back).
 */
#include "common.h"

#define TILE 32

#define TRANSPOSE(name, type)                                                          \
    EXPORT(name)                                                                       \
    void name(const type *src, type *dst, int rows, int cols) {                        \
        for (int r0 = 0; r0 < rows; r0 += TILE)                                        \
            for (int c0 = 0; c0 < cols; c0 += TILE) {                                  \
                int r1 = r0 + TILE < rows ? r0 + TILE : rows;                          \
                int c1 = c0 + TILE < cols ? c0 + TILE : cols;                          \
                for (int c = c0; c < c1; c++)                                          \
                    for (int r = r0; r < r1; r++)                                      \
                        dst[(long)c * rows + r] = src[(long)r * cols + c];             \
            }                                                                          \
    }

TRANSPOSE(transpose_32, u32)

/* f32 -> binary16, rounded to nearest even. */
static u16 narrow_one(float f) {
    u32 x = f32_to_bits(f);
    u32 sign = (x >> 16) & 0x8000;
    u32 mag = x & 0x7fffffff;
    u16 h;
    if (mag > 0x7f800000) {
        h = (u16)(sign | 0x7e00); /* NaN */
    } else if (mag >= 0x477ff000) {
        h = (u16)(sign | 0x7c00); /* rounds past 65504: inf */
    } else if (mag >= 0x38800000) { /* normal in f16 */
        u32 rounded = mag + 0xfff + ((mag >> 13) & 1);
        h = (u16)(sign | ((rounded - 0x38000000) >> 13));
    } else if (mag >= 0x33000000) { /* subnormal in f16 */
        int shift = 126 - (int)(mag >> 23);  /* 14 .. 24 */
        u32 m = (mag & 0x7fffff) | 0x800000;
        u32 q = m >> (shift - 0 + 0);
        u32 rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        h = (u16)(sign | q);
    } else {
        h = (u16)sign;
    }
    return h;
}

EXPORT(narrow_f16)
void narrow_f16(const float *src, u16 *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = narrow_one(src[i]);
}

EXPORT(widen_binary16)
void widen_binary16(const u16 *src, float *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = f16_to_f32_exact(src[i]);
}

EXPORT(count_unpackable_f16)
int count_unpackable_f16(const u16 *src, int n) {
    int count = 0;
    for (int i = 0; i < n; i++) count += (src[i] & 0x7fff) >= 0x5400; /* |h| >= 2^6 */
    return count;
}

/* The stored form of a packable half: times 2^10 (exact: a packable half scaled stays
 * finite, and a subnormal one becomes normal). */
static u16 packed_half(u16 h) { return narrow_one(f16_to_f32_exact(h) * 1024.0f); }

/* Each half as packed_half, then each group of 8 permuted as common.h describes. */
EXPORT(pack_f16)
void pack_f16(u16 *w, int n) {
    for (int g = 0; g < n; g += 8) {
        u16 group[8];
        for (int j = 0; j < 8; j++)
            group[j] = g + j < n ? packed_half(w[g + j]) : 0;
        for (int j = 0; j < 8; j++) w[g + packed_index(j)] = group[j];
    }
}

EXPORT(widen_f16)
void widen_f16(const u16 *src, float *dst, int n) {
    unpack_f16(src, 0, n, dst);
}

EXPORT(widen_bf16)
void widen_bf16(const u16 *src, u32 *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = (u32)src[i] << 16;
}

EXPORT(pack_panels_f16)
void pack_panels_f16(const u16 *src, u16 *dst, int K, int N) {
    long panels = (N + PANEL_OUTPUTS - 1) / PANEL_OUTPUTS;
    for (long p = 0; p < panels; p++)
        for (long k = 0; k < K; k++) {
            u16 *out = dst + (p * K + k) * PANEL_OUTPUTS;
            for (int j = 0; j < PANEL_OUTPUTS; j++) {
                long n = p * PANEL_OUTPUTS + j;
                out[(j & ~7) + packed_index(j & 7)] = n < N ? packed_half(src[k * N + n]) : 0;
            }
        }
}

EXPORT(widen_panels_f16)
void widen_panels_f16(const u16 *src, float *dst, int K, int N) {
    for (long k = 0; k < K; k++)
        for (long n = 0; n < N; n++) dst[k * N + n] = packed_value(src[panel_index(n, k, K)]);
}
