/* Storage conversions for weights as they are uploaded and read back.
 *
 * transpose_32(src, dst, rows, cols), transpose_16(...): dst [cols, rows] = src [rows, cols]^T
 *   for 4-byte and 2-byte elements (a Conv1D weight [K, N] becomes [N, K]); src, dst disjoint.
 * narrow_f16(src, dst, n): dst [n] binary16 = src [n] f32, rounded to nearest even
 *   (overflow to inf, NaN stays NaN).
 * widen_f16(src, dst, n): dst [n] f32 = src [n] binary16, exactly (infinities, NaNs too).
 * count_nonfinite_f16(src, n) -> i32: how many of src [n] binary16 are infinite or NaN (the
 *   kernels' fast widening assumes none: such a weight is stored float32 instead).
 * widen_bf16(src, dst, n): dst [n] f32 = src [n] bfloat16, exactly.
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
TRANSPOSE(transpose_16, u16)

EXPORT(narrow_f16)
void narrow_f16(const float *src, u16 *dst, int n) {
    for (int i = 0; i < n; i++) {
        u32 x = f32_to_bits(src[i]);
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
        dst[i] = h;
    }
}

EXPORT(widen_f16)
void widen_f16(const u16 *src, float *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = f16_to_f32_exact(src[i]);
}

EXPORT(count_nonfinite_f16)
int count_nonfinite_f16(const u16 *src, int n) {
    int count = 0;
    for (int i = 0; i < n; i++) count += (src[i] & 0x7c00) == 0x7c00;
    return count;
}

EXPORT(widen_bf16)
void widen_bf16(const u16 *src, u32 *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = (u32)src[i] << 16;
}
