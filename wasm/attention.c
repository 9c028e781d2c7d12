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
 *   scores: scratch of at least 4 (start + S) + 4 hd floats.
 *
 * A prompt's queries go four at a time: their scores are a small matrix product (4 queries
 * times 2 keys per inner loop, each key loaded once for all four) and their outputs another
 * (each value row loaded once for all four), about twice as fast as one query at a time.
 *
 * reorder_cache(cache, scratch, indices, B, L, nh, T, hd, start, end)
 *   For every row b: cache[b, :, :, :, start:end] = old cache[indices[b], :, :, :, start:end]
 *   (all rows are read before any is written). scratch: B * L * 2 * nh * (end - start) * hd
 *   floats. indices [B] i32, each in [0, B).
 */
#include "common.h"
#include "pool.h"

/* Softmax weights in place over scores[0 .. visible): returns their sum (not normalised). */
static float exp_scores(float *scores, int visible) {
    float peak = -__builtin_inff();
    for (int t = 0; t < visible; t++) peak = scores[t] > peak ? scores[t] : peak;
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
    return total;
}

/* One query: o [hd] = softmax(q . keys^T scale) values over `visible` positions. */
static void attend_one(const float *q, const float *keys, const float *values, float *o,
                       float *scores, int visible, int hd, float scale) {
    for (int t = 0; t < visible; t++) scores[t] = dot_f32(q, keys + (long)t * hd, hd) * scale;
    float total = exp_scores(scores, visible);
    int d = 0;
    /* Sixteen output lanes at a time over all visible positions: four independent
     * accumulators stay in registers while the values stream past. */
    for (; d + 16 <= hd; d += 16) {
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int u = 0; u < visible; u++) {
            const float *v = values + (long)u * hd + d;
            v128_t w = wasm_f32x4_splat(scores[u]);
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(w, wasm_v128_load(v)));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(w, wasm_v128_load(v + 4)));
            a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(w, wasm_v128_load(v + 8)));
            a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(w, wasm_v128_load(v + 12)));
        }
        v128_t t = wasm_f32x4_splat(total);
        wasm_v128_store(o + d, wasm_f32x4_div(a0, t));
        wasm_v128_store(o + d + 4, wasm_f32x4_div(a1, t));
        wasm_v128_store(o + d + 8, wasm_f32x4_div(a2, t));
        wasm_v128_store(o + d + 12, wasm_f32x4_div(a3, t));
    }
    for (; d + 4 <= hd; d += 4) {
        v128_t acc = wasm_f32x4_splat(0.0f);
        for (int u = 0; u < visible; u++)
            acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(scores[u]),
                                                     wasm_v128_load(values + (long)u * hd + d)));
        wasm_v128_store(o + d, wasm_f32x4_div(acc, wasm_f32x4_splat(total)));
    }
    for (; d < hd; d++) {
        float acc = 0.0f;
        for (int u = 0; u < visible; u++) acc += scores[u] * values[(long)u * hd + d];
        o[d] = acc / total;
    }
}

/* Four consecutive queries (q: 4 rows of hd, already scaled) at positions first .. first + 3:
 * o_r (stride o_stride) = softmax over positions 0 .. first + r. scores: 4 (first + 4). */
static void attend_four(const float *q, const float *keys, const float *values, float *o,
                        long o_stride, float *scores, int first, int hd) {
    int span = first + 4; /* the last query's visible positions; rows of `scores` */
    const float *q0 = q, *q1 = q + hd, *q2 = q + 2 * hd, *q3 = q + 3 * hd;
    int t = 0;
    for (; t < span; t += 2) {
        const float *k0 = keys + (long)t * hd, *k1 = t + 1 < span ? k0 + hd : k0;
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0,
               d0 = a0, d1 = a0;
        int d = 0;
        for (; d + 4 <= hd; d += 4) {
            v128_t u = wasm_v128_load(k0 + d), v = wasm_v128_load(k1 + d), x;
            x = wasm_v128_load(q0 + d); a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(x, u));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(x, v));
            x = wasm_v128_load(q1 + d); b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(x, u));
            b1 = wasm_f32x4_add(b1, wasm_f32x4_mul(x, v));
            x = wasm_v128_load(q2 + d); c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(x, u));
            c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(x, v));
            x = wasm_v128_load(q3 + d); d0 = wasm_f32x4_add(d0, wasm_f32x4_mul(x, u));
            d1 = wasm_f32x4_add(d1, wasm_f32x4_mul(x, v));
        }
        float s[4][2] = {{hsum(a0), hsum(a1)}, {hsum(b0), hsum(b1)}, {hsum(c0), hsum(c1)},
                         {hsum(d0), hsum(d1)}};
        for (; d < hd; d++)
            for (int r = 0; r < 4; r++) {
                s[r][0] += q[r * hd + d] * k0[d];
                s[r][1] += q[r * hd + d] * k1[d];
            }
        for (int r = 0; r < 4; r++) {
            scores[r * span + t] = s[r][0];
            if (t + 1 < span) scores[r * span + t + 1] = s[r][1];
        }
    }
    float totals[4];
    for (int r = 0; r < 4; r++) {
        int visible = first + r + 1;
        totals[r] = exp_scores(scores + r * span, visible);
        for (int u = visible; u < span; u++) scores[r * span + u] = 0.0f; /* causal mask */
    }
    const float *p0 = scores, *p1 = scores + span, *p2 = scores + 2 * span,
                *p3 = scores + 3 * span;
    int d = 0;
    for (; d + 8 <= hd; d += 8) {
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0,
               e0 = a0, e1 = a0;
        for (int u = 0; u < span; u++) {
            const float *v = values + (long)u * hd + d;
            v128_t v0 = wasm_v128_load(v), v1 = wasm_v128_load(v + 4), w;
            w = wasm_f32x4_splat(p0[u]);
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(w, v0));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(w, v1));
            w = wasm_f32x4_splat(p1[u]);
            b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(w, v0));
            b1 = wasm_f32x4_add(b1, wasm_f32x4_mul(w, v1));
            w = wasm_f32x4_splat(p2[u]);
            c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(w, v0));
            c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(w, v1));
            w = wasm_f32x4_splat(p3[u]);
            e0 = wasm_f32x4_add(e0, wasm_f32x4_mul(w, v0));
            e1 = wasm_f32x4_add(e1, wasm_f32x4_mul(w, v1));
        }
        v128_t acc[4][2] = {{a0, a1}, {b0, b1}, {c0, c1}, {e0, e1}};
        for (int r = 0; r < 4; r++) {
            v128_t total = wasm_f32x4_splat(totals[r]);
            wasm_v128_store(o + r * o_stride + d, wasm_f32x4_div(acc[r][0], total));
            wasm_v128_store(o + r * o_stride + d + 4, wasm_f32x4_div(acc[r][1], total));
        }
    }
    for (; d < hd; d++)
        for (int r = 0; r < 4; r++) {
            float acc = 0.0f;
            for (int u = 0; u < span; u++) acc += scores[r * span + u] * values[(long)u * hd + d];
            o[r * o_stride + d] = acc / totals[r];
        }
}

/* One attention call's arguments, as the pool's threads read them. */
struct attention_job {
    const float *qkv;
    float *cache, *out, *scores;
    int B, S, H, nh, T, L, layer, start, last_only;
};

/* Chunk `chunk` of `chunks`: a range of the B * nh (row, head) pairs. Split (chunks > 1)
 * only when each head has fewer than four queries (a decode step): thread i then takes
 * scores [i (start + S), (i + 1) (start + S)) and queries [i hd, (i + 1) hd) of the scratch. */
static void attention_part(const void *args, int chunk, int chunks, int thread) {
    const struct attention_job *j = args;
    int S = j->S, H = j->H, nh = j->nh, start = j->start, last_only = j->last_only;
    int hd = H / nh;
    long head_span = (long)j->T * hd;
    long layer_span = 2L * nh * head_span;
    float scale = 1.0f / __builtin_sqrtf((float)hd);
    float *scores = j->scores + (long)thread * (start + S);
    float *queries = j->scores + 4L * (start + S) + (long)thread * hd;
    int units = j->B * nh, share = (units + chunks - 1) / chunks;
    int ub = chunk * share, ue = ub + share < units ? ub + share : units;
    for (int unit = ub; unit < ue; unit++) {
        int b = unit / nh, h = unit % nh;
        const float *layer_cache = j->cache + ((long)b * j->L + j->layer) * layer_span;
        const float *q_base = j->qkv + (long)b * S * 3 * H;
        float *o_base = j->out + (long)b * (last_only ? 1 : S) * H;
        const float *keys = layer_cache + h * head_span;
        const float *values = layer_cache + (nh + h) * head_span;
        int s = last_only ? S - 1 : 0;
        for (; s + 4 <= S; s += 4) {
            for (int r = 0; r < 4; r++)
                for (int d = 0; d < hd; d++)
                    queries[r * hd + d] = q_base[(long)(s + r) * 3 * H + h * hd + d] * scale;
            attend_four(queries, keys, values, o_base + (long)s * H + h * hd, H, scores,
                        start + s, hd);
        }
        for (; s < S; s++) {
            float *o = o_base + (last_only ? 0 : (long)s * H) + h * hd;
            for (int d = 0; d < hd; d++)
                queries[d] = q_base[(long)s * 3 * H + h * hd + d] * scale;
            attend_one(queries, keys, values, o, scores, start + s + 1, hd, 1.0f);
        }
    }
}

/* Decode steps with fewer multiply-adds than this over all heads stay on one thread. */
#define MIN_SPLIT_WORK (32 * 1024)

EXPORT(attention)
void attention(const float *qkv, float *cache, float *out, float *scores, int B, int S, int H,
               int nh, int T, int L, int layer, int start, int last_only) {
    int hd = H / nh;
    long head_span = (long)T * hd;
    long layer_span = 2L * nh * head_span;
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
    }
    struct attention_job j = {qkv, cache, out, scores, B, S, H, nh, T, L, layer, start,
                              last_only};
    int parts = 1, units = B * nh, chunks;
    if ((last_only || S < 4) && units > 1 &&
        2LL * units * (last_only ? 1 : S) * (start + S) * hd >= MIN_SPLIT_WORK)
        parts = pool_parts();
    chunks = parts * POOL_CHUNKS_PER_THREAD < units ? parts * POOL_CHUNKS_PER_THREAD : units;
    pool_run(attention_part, &j, parts > 1 ? chunks : 1, parts);
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
