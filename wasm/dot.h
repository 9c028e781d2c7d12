/* Dot products of one row of x with rows of a weight matrix, as `linear` (matmul.c) computes
 * a product of fewer than 4 rows, shared with the greedy head (greedy.c), whose logits must
 * equal linear's bit for bit. */
#ifndef WEBGPT2_DOT_H
#define WEBGPT2_DOT_H

#include "common.h"

/* Bytes of float32 weights per block of outputs: about half a typical 512 KiB L2. */
#define BLOCK_BYTES (192 * 1024)
/* Floats of per-thread scratch for widening float16 weights or scaling a row of x. */
#define SCRATCH (BLOCK_BYTES / 4)

#define ADD wasm_f32x4_add
#define MUL wasm_f32x4_mul
#define LOAD wasm_v128_load

INLINE float dot_row_f32(const float *x, const float *w, int K) {
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        a0 = MADD(a0, LOAD(x + k), LOAD(w + k));
        a1 = MADD(a1, LOAD(x + k + 4), LOAD(w + k + 4));
        a2 = MADD(a2, LOAD(x + k + 8), LOAD(w + k + 8));
        a3 = MADD(a3, LOAD(x + k + 12), LOAD(w + k + 12));
    }
    for (; k + 4 <= K; k += 4) a0 = MADD(a0, LOAD(x + k), LOAD(w + k));
    float s = hsum(ADD(ADD(a0, a1), ADD(a2, a3)));
    for (; k < K; k++) s += x[k] * w[k];
    return s;
}

/* 16 weights of a float16 row (w at a multiple of 8 halves from the tensor's start) against
 * xs, into the four partial sums, in dot_row_f32's order. */
INLINE void packed_16(const float *xs, const u16 *w, v128_t *a0, v128_t *a1, v128_t *a2,
                      v128_t *a3) {
    v128_t w0, w1, w2, w3;
    load_packed_raw(w, &w0, &w1);
    load_packed_raw(w + 8, &w2, &w3);
    *a0 = MADD(*a0, LOAD(xs), w0);
    *a1 = MADD(*a1, LOAD(xs + 4), w1);
    *a2 = MADD(*a2, LOAD(xs + 8), w2);
    *a3 = MADD(*a3, LOAD(xs + 12), w3);
}

/* A float16 row against x scaled by 2^102 (xs, from scale_row), K a multiple of 8.
 * Why the scaling: the packed weights widen to raw = w 2^-102 (common.h), and xs raw is then
 * the same real number as x w, so it rounds to the same f32 (subnormal or not), and the sums
 * below, in dot_row_f32's order, equal dot_row_f32(x, widened w) bit for bit, without a
 * rebias multiply per weight. xs is exact and finite while |x| < 2^26 (scale_row checks).
 *
 * The loop is bound by instructions more than by memory (a float16 weight is half a float32's
 * bytes but takes two integer operations to widen), so it saves them where it can: where xs
 * and w are aligned (every row when K is a multiple of 16 and the tensor 64-byte aligned, as
 * the allocator's are), the alignment is told to clang, which then puts each load's constant
 * offset into the load (an `or` of disjoint bits) rather than adding it to the address: V8
 * emits one x86 instruction per load instead of two, 25 a pass rather than 30, and the
 * float16 products ran about 3% faster in Chromium and Node. Unrolling to 32 weights a pass
 * was slower: V8 spilled vectors to the stack. (A linear layer's float16 weight is now in
 * panels, matmul.c's panel_sums, fewer instructions still; rows remain for the token table,
 * whose rows the greedy head reads one by one.) */
INLINE float dot_row_packed(const float *xs, const u16 *w, int K) {
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0, w0, w1;
    int k = 0;
    if (!(((unsigned long)xs & 63) | ((unsigned long)w & 31))) {
        const float *xa = __builtin_assume_aligned(xs, 64), *end = xa + (K & ~15);
        const u16 *wa = __builtin_assume_aligned(w, 32);
        for (; xa < end; xa += 16, wa += 16) packed_16(xa, wa, &a0, &a1, &a2, &a3);
        k = K & ~15;
    }
    for (; k + 16 <= K; k += 16) packed_16(xs + k, w + k, &a0, &a1, &a2, &a3);
    if (k < K) { /* 8 left: into a0, as dot_row_f32's 4-wide tail does */
        load_packed_raw(w + k, &w0, &w1);
        a0 = MADD(a0, LOAD(xs + k), w0);
        a0 = MADD(a0, LOAD(xs + k + 4), w1);
    }
    return hsum(ADD(ADD(a0, a1), ADD(a2, a3)));
}

/* xs [K] = x [K] 2^102, K a multiple of 4; 0 when a finite |x| >= 2^26 overflowed (NaN and
 * infinities scale to themselves and multiply as x would). */
static inline int scale_row(const float *x, float *xs, int K) {
    v128_t scale = wasm_i32x4_splat(PACKED_UNSCALE), inf = wasm_f32x4_splat(__builtin_inff());
    v128_t overflow = wasm_i32x4_splat(0);
    for (int k = 0; k < K; k += 4) {
        v128_t v = LOAD(x + k), y = MUL(v, scale);
        overflow = wasm_v128_or(overflow,
                                wasm_v128_and(wasm_f32x4_eq(wasm_f32x4_abs(y), inf),
                                              wasm_f32x4_lt(wasm_f32x4_abs(v), inf)));
        wasm_v128_store(xs + k, y);
    }
    return !wasm_v128_any_true(overflow);
}

/* Row `first / K` of the packed w, widened (in pieces of the buffer when it is longer). */
static inline float dot_row_unpacked(const float *x, const u16 *w, long first, int K, float *buffer) {
    if (K <= SCRATCH) {
        unpack_f16(w, first, K, buffer);
        return dot_row_f32(x, buffer, K);
    }
    float s = 0.0f;
    for (int k = 0; k < K; k += SCRATCH) {
        int count = K - k < SCRATCH ? K - k : SCRATCH;
        unpack_f16(w, first + k, count, buffer);
        s += dot_row_f32(x + k, buffer, count);
    }
    return s;
}

/* Output n of a row x of fewer than 4 rows, as linear computes it: xs is x scaled by
 * scale_row (for float16 w), or 0 when that failed or K does not allow it. */
INLINE float row_output(const float *x, const float *xs, const void *w, long n, int K,
                        int f16, float *buffer) {
    if (!f16) return dot_row_f32(x, (const float *)w + n * K, K);
    if (xs) return dot_row_packed(xs, (const u16 *)w + n * K, K);
    return dot_row_unpacked(x, w, n * K, K, buffer);
}

#endif
