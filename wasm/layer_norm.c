/* Layer normalisation over the last axis, as torch.nn.LayerNorm (biased variance).
 *
 * layer_norm(x, gamma, beta, out, rows, H, epsilon)
 *   x, out [rows, H] f32 (out may be x); gamma, beta [H] f32.
 *   out = (x - mean) / sqrt(variance + epsilon) * gamma + beta, with the variance taken of
 *   x - mean (two passes: no cancellation for rows far from zero mean).
 */
#include "common.h"

INLINE float row_sum(const float *x, int n) {
    v128_t s0 = wasm_f32x4_splat(0.0f), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = wasm_f32x4_add(s0, wasm_v128_load(x + i));
        s1 = wasm_f32x4_add(s1, wasm_v128_load(x + i + 4));
    }
    for (; i + 4 <= n; i += 4) s0 = wasm_f32x4_add(s0, wasm_v128_load(x + i));
    float s = hsum(wasm_f32x4_add(s0, s1));
    for (; i < n; i++) s += x[i];
    return s;
}

EXPORT(layer_norm)
void layer_norm(const float *x, const float *gamma, const float *beta, float *out, int rows,
                int H, float epsilon) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * H;
        float *yr = out + (long)r * H;
        float mean = row_sum(xr, H) / (float)H;
        v128_t m = wasm_f32x4_splat(mean), s0 = wasm_f32x4_splat(0.0f), s1 = s0;
        int i = 0;
        for (; i + 8 <= H; i += 8) {
            v128_t d0 = wasm_f32x4_sub(wasm_v128_load(xr + i), m);
            v128_t d1 = wasm_f32x4_sub(wasm_v128_load(xr + i + 4), m);
            s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(d0, d0));
            s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(d1, d1));
        }
        for (; i + 4 <= H; i += 4) {
            v128_t d = wasm_f32x4_sub(wasm_v128_load(xr + i), m);
            s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(d, d));
        }
        float ss = hsum(wasm_f32x4_add(s0, s1));
        for (; i < H; i++) ss += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / __builtin_sqrtf(ss / (float)H + epsilon);
        v128_t vi = wasm_f32x4_splat(inv);
        i = 0;
        for (; i + 4 <= H; i += 4) {
            v128_t d = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + i), m), vi);
            d = wasm_f32x4_add(wasm_f32x4_mul(d, wasm_v128_load(gamma + i)),
                               wasm_v128_load(beta + i));
            wasm_v128_store(yr + i, d);
        }
        for (; i < H; i++) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
}
