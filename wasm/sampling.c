/* Operations on rows of logits: argmax, log-softmax, token log-probabilities, sampling with
 * transformers' filters, top-k, the repetition penalty and token masks.
 *
 * argmax(x, rows, V, out)                   out [rows] i32: first index of each row's maximum.
 * log_softmax(x, out, rows, V)              out [rows, V] f32 = x - max - log(sum e^(x - max));
 *                                           out may be x.
 * token_log_probs(x, targets, out, rows, V) out [rows] f32 = log_softmax(x)[r, targets[r]].
 * sample(x, uniforms, out, rows, V, temperature, top_k, use_top_p, cut, scratch)
 *   uniforms [rows] f64; out [rows] i32. scores = x / temperature (f32); top_k (0 = off)
 *   keeps scores >= the k-th largest; with use_top_p, the tokens whose cumulative
 *   probability, in ascending order of score (ties by index), is <= cut (1 - top_p, f32)
 *   are removed, the most probable always kept; then the first id whose cumulative
 *   e^(score - max) (f64, in id order) exceeds uniforms[r] * total, or the last kept id.
 *   scratch: 6 V + 2048 words.
 * top_k(x, rows, V, k, values, indices, scratch)
 *   values [rows, k] f32 and indices [rows, k] i32: the k largest of each row, largest first,
 *   equal values in index order. scratch: 4 V + 2048 words.
 * repetition_penalty(x, V, ids, count, penalty)  in place on one row x [V]: for each id
 *   (distinct, in [0, V)), x[id] * penalty if x[id] < 0 else x[id] / penalty.
 * mask_tokens(x, V, ids, count, value)      in place on one row: x[id] = value.
 */
#include "common.h"

/* The first index of the row's maximum (argmax's rule, shared with greedy.c). */
int row_argmax(const float *row, int V) {
    v128_t m = wasm_f32x4_splat(-__builtin_inff());
    int i = 0;
    for (; i + 4 <= V; i += 4) m = wasm_f32x4_pmax(m, wasm_v128_load(row + i));
    float peak = hmax(m);
    for (; i < V; i++) peak = row[i] > peak ? row[i] : peak;
    for (i = 0; i < V; i++)
        if (row[i] == peak) return i;
    return 0;
}

EXPORT(argmax)
void argmax(const float *x, int rows, int V, int *out) {
    for (int r = 0; r < rows; r++) out[r] = row_argmax(x + (long)r * V, V);
}

INLINE float row_max(const float *row, int V) {
    v128_t m = wasm_f32x4_splat(-__builtin_inff());
    int i = 0;
    for (; i + 4 <= V; i += 4) m = wasm_f32x4_pmax(m, wasm_v128_load(row + i));
    float peak = hmax(m);
    for (; i < V; i++) peak = row[i] > peak ? row[i] : peak;
    return peak;
}

/* log(sum e^(x - peak)) + peak: the log of the softmax's denominator. */
static float log_norm(const float *row, int V) {
    float peak = row_max(row, V);
    if (peak == -__builtin_inff() || peak != peak) return peak;
    v128_t vp = wasm_f32x4_splat(peak), s0 = wasm_f32x4_splat(0.0f), s1 = s0;
    int i = 0;
    for (; i + 8 <= V; i += 8) {
        s0 = wasm_f32x4_add(s0, exp_f32x4(wasm_f32x4_sub(wasm_v128_load(row + i), vp)));
        s1 = wasm_f32x4_add(s1, exp_f32x4(wasm_f32x4_sub(wasm_v128_load(row + i + 4), vp)));
    }
    double total = (double)hsum(s0) + (double)hsum(s1);
    for (; i < V; i++) total += exp_f32(row[i] - peak);
    return (float)(log_f64(total) + peak);
}

EXPORT(log_softmax)
void log_softmax(const float *x, float *out, int rows, int V) {
    for (int r = 0; r < rows; r++) {
        const float *row = x + (long)r * V;
        float *o = out + (long)r * V;
        float peak = row_max(row, V);
        float norm = log_norm(row, V) - peak;
        /* (x - peak) - log(sum): as torch, so the maximum's log-probability is -log(sum). */
        for (int i = 0; i < V; i++) o[i] = (row[i] - peak) - norm;
    }
}

EXPORT(token_log_probs)
void token_log_probs(const float *x, const int *targets, float *out, int rows, int V) {
    for (int r = 0; r < rows; r++) {
        const float *row = x + (long)r * V;
        out[r] = row[targets[r]] - log_norm(row, V);
    }
}

/* Order-preserving map of floats to unsigned keys (NaNs aside). */
INLINE u32 sort_key(float f) {
    u32 u = f32_to_bits(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

INLINE float key_value(u32 k) {
    return bits_to_f32((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* Stable LSD radix sort of n (key, index) pairs by key, ascending: 11 + 11 + 10 bits. The
 * result is in keys/ids; tmp_keys/tmp_ids hold n each, counts 2048 words. */
static void radix_sort(u32 *keys, u32 *ids, u32 *tmp_keys, u32 *tmp_ids, u32 *counts, int n) {
    static const int shifts[3] = {0, 11, 22};
    for (int pass = 0; pass < 3; pass++) {
        int shift = shifts[pass];
        __builtin_memset(counts, 0, 2048 * sizeof(u32));
        for (int i = 0; i < n; i++) counts[(keys[i] >> shift) & 2047]++;
        u32 sum = 0;
        for (int d = 0; d < 2048; d++) {
            u32 c = counts[d];
            counts[d] = sum;
            sum += c;
        }
        for (int i = 0; i < n; i++) {
            u32 slot = counts[(keys[i] >> shift) & 2047]++;
            tmp_keys[slot] = keys[i];
            tmp_ids[slot] = ids[i];
        }
        u32 *t = keys; keys = tmp_keys; tmp_keys = t;
        t = ids; ids = tmp_ids; tmp_ids = t;
    }
    /* Three passes: the sorted data is in the buffers passed as tmp_*: copy back. */
    __builtin_memcpy(tmp_keys, keys, n * sizeof(u32));
    __builtin_memcpy(tmp_ids, ids, n * sizeof(u32));
}

/* The k-th largest key of n (1 <= k <= n), by radix selection on 8 bits at a time. */
static u32 kth_largest_key(const u32 *keys, int n, int k, u32 *counts) {
    u32 prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        __builtin_memset(counts, 0, 256 * sizeof(u32));
        for (int i = 0; i < n; i++)
            if ((keys[i] & mask) == prefix) counts[(keys[i] >> shift) & 255]++;
        for (int d = 255; d >= 0; d--) {
            if ((int)counts[d] >= remaining) {
                prefix |= (u32)d << shift;
                break;
            }
            remaining -= (int)counts[d];
        }
        mask |= 255u << shift;
    }
    return prefix;
}

EXPORT(sample)
void sample(const float *x, const double *uniforms, int *out, int rows, int V,
            float temperature, int top_k, int use_top_p, float cut, u32 *scratch) {
    float *scores = (float *)scratch;
    u8 *keep = (u8 *)(scratch + V);
    u32 *keys = scratch + 2 * V, *ids = scratch + 3 * V;
    u32 *tmp_keys = scratch + 4 * V, *tmp_ids = scratch + 5 * V, *counts = scratch + 6 * V;
    for (int r = 0; r < rows; r++) {
        const float *row = x + (long)r * V;
        for (int i = 0; i < V; i++) {
            scores[i] = row[i] / temperature;
            keep[i] = 1;
        }
        if (top_k > 0 && top_k < V) {
            for (int i = 0; i < V; i++) keys[i] = sort_key(scores[i]);
            float kth = key_value(kth_largest_key(keys, V, top_k, counts));
            for (int i = 0; i < V; i++) keep[i] = scores[i] >= kth;
        }
        if (use_top_p) {
            int n = 0;
            for (int i = 0; i < V; i++)
                if (keep[i]) {
                    keys[n] = sort_key(scores[i]);
                    ids[n++] = (u32)i;
                }
            radix_sort(keys, ids, tmp_keys, tmp_ids, counts, n);
            float peak = key_value(keys[n - 1]);
            float *probs = (float *)tmp_keys;
            float total = 0.0f;
            for (int j = 0; j < n; j++) {
                probs[j] = exp_f32(key_value(keys[j]) - peak);
                total += probs[j];
            }
            float cumulative = 0.0f;
            for (int j = 0; j < n - 1; j++) {
                cumulative += probs[j] / total;
                if (cumulative <= cut) keep[ids[j]] = 0;
                else break;
            }
        }
        float peak = -__builtin_inff();
        int last = 0;
        for (int i = 0; i < V; i++)
            if (keep[i]) {
                peak = scores[i] > peak ? scores[i] : peak;
                last = i;
            }
        double total = 0.0;
        for (int i = 0; i < V; i++)
            if (keep[i]) total += exp_f32(scores[i] - peak);
        double target = (double)uniforms[r] * total, cumulative = 0.0;
        int chosen = last;
        for (int i = 0; i < V; i++)
            if (keep[i]) {
                cumulative += exp_f32(scores[i] - peak);
                if (cumulative > target) { chosen = i; break; }
            }
        out[r] = chosen < last ? chosen : last;
    }
}

EXPORT(top_k)
void top_k(const float *x, int rows, int V, int k, float *values, int *indices, u32 *scratch) {
    u32 *keys = scratch, *ids = scratch + V, *tmp_keys = scratch + 2 * V;
    u32 *tmp_ids = scratch + 3 * V, *counts = scratch + 4 * V;
    for (int r = 0; r < rows; r++) {
        const float *row = x + (long)r * V;
        for (int i = 0; i < V; i++) keys[i] = sort_key(row[i]);
        u32 kth = kth_largest_key(keys, V, k, counts);
        /* Candidates: keys >= the k-th, complemented so that an ascending stable sort puts
         * the largest first and equal values in index order. */
        int n = 0;
        for (int i = 0; i < V; i++)
            if (keys[i] >= kth) {
                tmp_keys[n] = ~keys[i];
                tmp_ids[n++] = (u32)i;
            }
        __builtin_memcpy(keys, tmp_keys, n * sizeof(u32));
        __builtin_memcpy(ids, tmp_ids, n * sizeof(u32));
        radix_sort(keys, ids, tmp_keys, tmp_ids, counts, n);
        for (int j = 0; j < k; j++) {
            values[(long)r * k + j] = row[ids[j]];
            indices[(long)r * k + j] = (int)ids[j];
        }
    }
}

EXPORT(repetition_penalty)
void repetition_penalty(float *x, int V, const int *ids, int count, float penalty) {
    for (int j = 0; j < count; j++) {
        int t = ids[j];
        if (t < 0 || t >= V) continue;
        x[t] = x[t] < 0.0f ? x[t] * penalty : x[t] / penalty;
    }
}

EXPORT(mask_tokens)
void mask_tokens(float *x, int V, const int *ids, int count, float value) {
    for (int j = 0; j < count; j++) {
        int t = ids[j];
        if (t >= 0 && t < V) x[t] = value;
    }
}
