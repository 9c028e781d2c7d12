/* Causal multi-head attention through a head-major KV cache, and the cache's reordering.
 *
 * The cache [B, L, 2, nh, T, hd] f32 (keys at 0, values at 1) keeps each head's positions
 * contiguous, so a query's dot products read one contiguous block of keys.
 *
 * attention(qkv, cache, out, scores, B, S, H, nh, T, L, layer, start, last_only)
 *   qkv [B, S, 3H] f32: queries, keys, values as GPT-2's c_attn makes them. Writes keys and
 *   values of positions start .. start + S - 1 into the cache's layer `layer`, then query s
 *   (absolute position start + s) attends to positions 0 .. start + s with scores scaled by
 *   1/sqrt(hd) and a softmax stable against overflow (the maximum subtracted first).
 *   out [B, S, H] f32, or [B, 1, H] (the last query alone) when last_only != 0.
 *   scores: scratch of at least start + S floats.
 *
 * reorder_cache(cache, scratch, indices, B, L, nh, T, hd, start, end)
 *   For every row b: cache[b, :, :, :, start:end] = old cache[indices[b], :, :, :, start:end]
 *   (all rows are read before any is written). scratch: B * L * 2 * nh * (end - start) * hd
 *   floats. indices [B] i32, each in [0, B).
 */
#include "common.h"

EXPORT(attention)
void attention(const float *qkv, float *cache, float *out, float *scores, int B, int S, int H,
               int nh, int T, int L, int layer, int start, int last_only) {
    int hd = H / nh;
    long head_span = (long)T * hd;
    long layer_span = 2L * nh * head_span;
    float scale = 1.0f / __builtin_sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        float *layer_cache = cache + ((long)b * L + layer) * layer_span;
        for (int s = 0; s < S; s++) {
            const float *row = qkv + ((long)b * S + s) * 3 * H;
            for (int kv = 0; kv < 2; kv++)
                for (int h = 0; h < nh; h++)
                    __builtin_memcpy(layer_cache + (kv * nh + h) * head_span +
                                         (long)(start + s) * hd,
                                     row + (1 + kv) * H + h * hd, hd * sizeof(float));
        }
        for (int s = last_only ? S - 1 : 0; s < S; s++) {
            const float *q_row = qkv + ((long)b * S + s) * 3 * H;
            float *o_row = out + ((long)b * (last_only ? 1 : S) + (last_only ? 0 : s)) * H;
            int visible = start + s + 1;
            for (int h = 0; h < nh; h++) {
                const float *q = q_row + h * hd;
                const float *keys = layer_cache + h * head_span;
                const float *values = layer_cache + (nh + h) * head_span;
                float peak = -__builtin_inff();
                for (int t = 0; t < visible; t++) {
                    float v = dot_f32(q, keys + (long)t * hd, hd) * scale;
                    scores[t] = v;
                    peak = v > peak ? v : peak;
                }
                v128_t vp = wasm_f32x4_splat(peak), vs = wasm_f32x4_splat(0.0f);
                int t = 0;
                for (; t + 4 <= visible; t += 4) {
                    v128_t e = exp_f32x4(wasm_f32x4_sub(wasm_v128_load(scores + t), vp));
                    wasm_v128_store(scores + t, e);
                    vs = wasm_f32x4_add(vs, e);
                }
                float total = hsum(vs);
                for (; t < visible; t++) {
                    scores[t] = exp_f32(scores[t] - peak);
                    total += scores[t];
                }
                float *o = o_row + h * hd;
                int d = 0;
                /* Four output lanes at a time over all visible positions: the accumulator
                 * stays in a register while the values stream past. */
                for (; d + 4 <= hd; d += 4) {
                    v128_t acc = wasm_f32x4_splat(0.0f);
                    for (int u = 0; u < visible; u++)
                        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(
                            wasm_f32x4_splat(scores[u]),
                            wasm_v128_load(values + (long)u * hd + d)));
                    wasm_v128_store(o + d, wasm_f32x4_div(acc, wasm_f32x4_splat(total)));
                }
                for (; d < hd; d++) {
                    float acc = 0.0f;
                    for (int u = 0; u < visible; u++) acc += scores[u] * values[(long)u * hd + d];
                    o[d] = acc / total;
                }
            }
        }
    }
}

EXPORT(reorder_cache)
void reorder_cache(float *cache, float *scratch, const int *indices, int B, int L, int nh,
                   int T, int hd, int start, int end) {
    long span = (long)(end - start) * hd;
    long blocks = (long)L * 2 * nh; /* [T, hd] blocks per batch row */
    long row = blocks * T * hd;
    for (int b = 0; b < B; b++)
        for (long k = 0; k < blocks; k++)
            __builtin_memcpy(scratch + (b * blocks + k) * span,
                             cache + indices[b] * row + k * T * hd + (long)start * hd,
                             span * sizeof(float));
    for (int b = 0; b < B; b++)
        for (long k = 0; k < blocks; k++)
            __builtin_memcpy(cache + b * row + k * T * hd + (long)start * hd,
                             scratch + (b * blocks + k) * span, span * sizeof(float));
}
