/* Matrix products: y = act(x @ W^T + bias) + residual, for linear layers and the tied LM head.
 *
 * linear(x, w, bias, residual, out, M, K, N, flags)
 *   x [M, K] f32; w [N, K] (one row per output: a Conv1D weight [K, N] transposed at upload,
 *   or the token table [V, H] as it is), f32 or, with flags & 8, packed f16 (common.h), in
 *   rows or, with flags & 16 as well, in panels of 32 outputs (common.h: a linear layer's
 *   float16 weight; 64-byte aligned, as every tensor is); bias [N] f32 (flags & 1); GELU,
 *   tanh approximation (flags & 2); residual [M, N] f32 (flags & 4); out [M, N] f32.
 *   Unused pointers may be 0. out must not overlap x, w, bias or residual.
 *
 * Every output is a dot product over a row of x and a row of w, both contiguous. A decode
 * step (M = 1) takes one weight row at a time, front to back, with four partial sums: in
 * wasmtime that streams at the memory's speed, where interleaving 2 or 4 weight rows ran at
 * half of it. More rows are tiled: 4 rows of x times 2 rows of w per inner loop, over a
 * block of w rows small enough to stay in the core's cache while every row passes over it,
 * so the weights come from memory once per call rather than once per row; float16 blocks
 * are widened once into a float32 buffer first. A float16 decode step widens each weight as
 * it streams by, with shifts and a mask only (no multiply: x is scaled instead, see
 * dot_row_packed), so that it takes about half of float32's time, as its bytes do. A linear
 * layer's float16 weight is stored in panels instead, and its decode step sums 32 outputs
 * at a time, k by k (panel_sums): fewer instructions per weight, which is what bounds a
 * float16 step; more rows widen the block's rows out of the panels first.
 */
#include "common.h"
#include "dot.h"
#include "pool.h"

#define F_BIAS 1
#define F_GELU 2
#define F_RESIDUAL 4
#define F_W16 8
#define F_PANELS 16 /* with F_W16: w is in panels (common.h), a linear layer's float16 weight */

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e^-2u), u = sqrt(2/pi) (x + 0.044715 x^3):
 * the sigmoid form has no cancellation near 0 and saturates cleanly at both ends. */
INLINE v128_t gelu_f32x4(v128_t x) {
    v128_t x3 = MUL(MUL(x, x), x);
    v128_t u = MUL(wasm_f32x4_splat(-2.0f * 0.7978845608028654f),
                   ADD(x, MUL(wasm_f32x4_splat(0.044715f), x3)));
    return wasm_f32x4_div(x, ADD(wasm_f32x4_splat(1.0f), exp_f32x4(u)));
}

/* The products are stored with their bias; GELU and the residual follow in one vector pass
 * over each thread's part of the output (a scalar e^x per output cost a quarter of an MLP's
 * first product). */
INLINE void store(float *out, const float *bias, int flags, long m, int n, int N, float s) {
    if (flags & F_BIAS) s += bias[n];
    out[m * N + n] = s;
}

static void epilogue(float *out, const float *residual, int flags, long count) {
    long i = 0;
    if (flags & F_GELU) {
        for (; i + 4 <= count; i += 4) {
            v128_t y = gelu_f32x4(LOAD(out + i));
            if (flags & F_RESIDUAL) y = ADD(y, LOAD(residual + i));
            wasm_v128_store(out + i, y);
        }
        for (; i < count; i++) {
            float y = wasm_f32x4_extract_lane(gelu_f32x4(wasm_f32x4_splat(out[i])), 0);
            out[i] = (flags & F_RESIDUAL) ? y + residual[i] : y;
        }
    } else if (flags & F_RESIDUAL) {
        for (; i + 4 <= count; i += 4)
            wasm_v128_store(out + i, ADD(LOAD(out + i), LOAD(residual + i)));
        for (; i < count; i++) out[i] += residual[i];
    }
}

/* 4 rows of x (stride K) against 2 rows of w (stride K): sums[r][c]. */
INLINE void tile_4x2(const float *x, const float *w, int K, float sums[4][2]) {
    const float *x0 = x, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K, *w0 = w, *w1 = w + K;
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0,
           d0 = a0, d1 = a0;
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        v128_t u = LOAD(w0 + k), v = LOAD(w1 + k), t;
        t = LOAD(x0 + k); a0 = MADD(a0, t, u); a1 = MADD(a1, t, v);
        t = LOAD(x1 + k); b0 = MADD(b0, t, u); b1 = MADD(b1, t, v);
        t = LOAD(x2 + k); c0 = MADD(c0, t, u); c1 = MADD(c1, t, v);
        t = LOAD(x3 + k); d0 = MADD(d0, t, u); d1 = MADD(d1, t, v);
    }
    sums[0][0] = hsum(a0); sums[0][1] = hsum(a1);
    sums[1][0] = hsum(b0); sums[1][1] = hsum(b1);
    sums[2][0] = hsum(c0); sums[2][1] = hsum(c1);
    sums[3][0] = hsum(d0); sums[3][1] = hsum(d1);
    for (; k < K; k++)
        for (int r = 0; r < 4; r++) {
            sums[r][0] += x[(long)r * K + k] * w0[k];
            sums[r][1] += x[(long)r * K + k] * w1[k];
        }
}

#define MAX_THREADS POOL_MAX_THREADS

/* Float16 weights of a row-tiled call are widened a block at a time into this buffer, so
 * that each weight is converted once per call rather than once per row tile; a streamed
 * call keeps its scaled row of x here (or a widened weight row, when x cannot be scaled).
 * One buffer per thread. */
static float widened[MAX_THREADS][SCRATCH] __attribute__((aligned(64)));

/* Outputs [nb, ne) of every row: each thread of a split product takes one such range. */
static void rows_streamed(const float *x, const void *w, const float *bias, float *out, int M,
                          int K, int N, int flags, int f16, int nb, int ne, int thread) {
    float *scratch = widened[thread];
    for (int m = 0; m < M; m++) {
        const float *xr = x + (long)m * K;
        const float *xs = f16 && K % 8 == 0 && K <= SCRATCH && scale_row(xr, scratch, K)
                              ? scratch : 0;
        for (int n = nb; n < ne; n++)
            store(out, bias, flags, m, n, N, row_output(xr, xs, w, n, K, f16, scratch));
    }
}

/* Outputs 32 p .. 32 p + 31 of one row of x against the panel at w (64-byte aligned):
 * each output in a lane of its own, summed over k in order (acc + x w). With scaled, x is
 * xs (x 2^102, dot.h's scale_row) and the weights widen raw; else x is as it is and the
 * weights widen exactly: the same products either way, so the same sums. Why this order
 * for a decode step: one broadcast of x_k serves 32 weights, where a row at a time loads x
 * once per 4; in Chromium the float16 products ran 10-35% faster than dot_row_packed's. */
INLINE void panel_sums(const float *x, const u16 *w, int K, int scaled, float sums[32]) {
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0, lo, hi;
    const u16 *p = __builtin_assume_aligned(w, 64);
    for (const float *end = x + K; x < end; x++, p += PANEL_OUTPUTS) {
        v128_t xk = wasm_v128_load32_splat(x);
        if (scaled) {
            load_packed_raw(p, &lo, &hi); a0 = MADD(a0, xk, lo); a1 = MADD(a1, xk, hi);
            load_packed_raw(p + 8, &lo, &hi); a2 = MADD(a2, xk, lo); a3 = MADD(a3, xk, hi);
            load_packed_raw(p + 16, &lo, &hi); a4 = MADD(a4, xk, lo); a5 = MADD(a5, xk, hi);
            load_packed_raw(p + 24, &lo, &hi); a6 = MADD(a6, xk, lo); a7 = MADD(a7, xk, hi);
        } else {
            load_packed(p, &lo, &hi); a0 = MADD(a0, xk, lo); a1 = MADD(a1, xk, hi);
            load_packed(p + 8, &lo, &hi); a2 = MADD(a2, xk, lo); a3 = MADD(a3, xk, hi);
            load_packed(p + 16, &lo, &hi); a4 = MADD(a4, xk, lo); a5 = MADD(a5, xk, hi);
            load_packed(p + 24, &lo, &hi); a6 = MADD(a6, xk, lo); a7 = MADD(a7, xk, hi);
        }
    }
    wasm_v128_store(sums, a0); wasm_v128_store(sums + 4, a1);
    wasm_v128_store(sums + 8, a2); wasm_v128_store(sums + 12, a3);
    wasm_v128_store(sums + 16, a4); wasm_v128_store(sums + 20, a5);
    wasm_v128_store(sums + 24, a6); wasm_v128_store(sums + 28, a7);
}

/* rows_streamed for a weight in panels: outputs [nb, ne), nb a multiple of 32. */
static void panels_streamed(const float *x, const u16 *w, const float *bias, float *out,
                            int M, int K, int N, int flags, int nb, int ne, int thread) {
    float *scratch = widened[thread];
    for (int m = 0; m < M; m++) {
        const float *xr = x + (long)m * K;
        int scaled = K % 4 == 0 && K <= SCRATCH && scale_row(xr, scratch, K);
        for (int n0 = nb; n0 < ne; n0 += PANEL_OUTPUTS) {
            float sums[PANEL_OUTPUTS];
            panel_sums(scaled ? scratch : xr, w + (long)n0 * K, K, scaled, sums);
            for (int n = n0; n < n0 + PANEL_OUTPUTS && n < ne; n++)
                store(out, bias, flags, m, n, N, sums[n - n0]);
        }
    }
}

/* The 4 x 4 transpose of rows a, b, c, d: out[i] = (a[i], b[i], c[i], d[i]). */
INLINE void transpose4(v128_t a, v128_t b, v128_t c, v128_t d, v128_t out[4]) {
    v128_t t0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
    v128_t t2 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
    out[0] = wasm_i64x2_shuffle(t0, t2, 0, 2);
    out[1] = wasm_i64x2_shuffle(t0, t2, 1, 3);
    out[2] = wasm_i64x2_shuffle(t1, t3, 0, 2);
    out[3] = wasm_i64x2_shuffle(t1, t3, 1, 3);
}

/* Rows [n0, n1) of a weight in panels, widened exactly into dst [n1 - n0, K]: 4 k at a time,
 * each group of 8 outputs widened for k .. k + 3 and transposed in registers into 4 floats
 * of each output's row (a float at a time cost a prompt's products twice their time). */
static void unpack_panel_rows(const u16 *w, int K, int n0, int n1, float *dst) {
    for (int p0 = n0 & ~(PANEL_OUTPUTS - 1); p0 < n1; p0 += PANEL_OUTPUTS) {
        const u16 *panel = w + (long)p0 * K;
        int k = 0;
        for (; k + 4 <= K; k += 4)
            for (int g = 0; g < PANEL_OUTPUTS; g += 8) {
                v128_t lo[4], hi[4], rows[8];
                for (int i = 0; i < 4; i++)
                    load_packed(panel + (long)(k + i) * PANEL_OUTPUTS + g, &lo[i], &hi[i]);
                transpose4(lo[0], lo[1], lo[2], lo[3], rows);
                transpose4(hi[0], hi[1], hi[2], hi[3], rows + 4);
                for (int j = 0; j < 8; j++) {
                    int n = p0 + g + j;
                    if (n >= n0 && n < n1) wasm_v128_store(dst + (long)(n - n0) * K + k, rows[j]);
                }
            }
        for (; k < K; k++)
            for (int n = p0 > n0 ? p0 : n0; n < p0 + PANEL_OUTPUTS && n < n1; n++)
                dst[(long)(n - n0) * K + k] = packed_value(panel[panel_index(n - p0, k, K)]);
    }
}

static void rows_tiled(const float *x, const void *w, const float *bias, float *out, int M,
                       int K, int N, int flags, int f16, int nb, int ne, int thread) {
    int block = (int)(BLOCK_BYTES / ((long)K * 4));
    block = block < 8 ? 8 : block & ~1;
    if (f16 && (long)block * K > BLOCK_BYTES / 4) { /* rows too long to widen a block */
        if (flags & F_PANELS)
            panels_streamed(x, w, bias, out, M, K, N, flags, nb, ne, thread);
        else
            rows_streamed(x, w, bias, out, M, K, N, flags, f16, nb, ne, thread);
        return;
    }
    float sums[4][2];
    for (int n0 = nb; n0 < ne; n0 += block) {
        int n1 = n0 + block < ne ? n0 + block : ne;
        const float *wb = (const float *)w + (long)n0 * K;
        if (f16) {
            float *buffer = widened[thread];
            if (flags & F_PANELS)
                unpack_panel_rows(w, K, n0, n1, buffer);
            else
                unpack_f16(w, (long)n0 * K, (long)(n1 - n0) * K, buffer);
            wb = buffer;
        }
        int m = 0;
        for (; m + 4 <= M; m += 4) {
            const float *xr = x + (long)m * K;
            int n = n0;
            for (; n + 2 <= n1; n += 2) {
                tile_4x2(xr, wb + (long)(n - n0) * K, K, sums);
                for (int r = 0; r < 4; r++) {
                    store(out, bias, flags, m + r, n, N, sums[r][0]);
                    store(out, bias, flags, m + r, n + 1, N, sums[r][1]);
                }
            }
            for (; n < n1; n++)
                for (int r = 0; r < 4; r++)
                    store(out, bias, flags, m + r, n, N,
                          dot_row_f32(xr + (long)r * K, wb + (long)(n - n0) * K, K));
        }
        for (; m < M; m++)
            for (int n = n0; n < n1; n++)
                store(out, bias, flags, m, n, N,
                      dot_row_f32(x + (long)m * K, wb + (long)(n - n0) * K, K));
    }
}

/* One product's arguments, as the pool's threads read them. */
struct product {
    const float *x;
    const void *w;
    const float *bias;
    const float *residual;
    float *out;
    int M, K, N, flags;
};

/* Chunk `chunk` of `chunks`: a range of outputs, even so that the 2-wide tiles stay whole,
 * with its GELU and residual. */
static void product_part(const void *args, int chunk, int chunks, int thread) {
    const struct product *p = args;
    int f16 = (p->flags & F_W16) != 0, panels = f16 && (p->flags & F_PANELS);
    int unit = panels ? PANEL_OUTPUTS : 2; /* whole panels, or whole 2-wide tiles */
    int share = ((p->N + chunks - 1) / chunks + unit - 1) / unit * unit;
    int nb = chunk * share, ne = nb + share < p->N ? nb + share : p->N;
    if (nb >= ne) return;
    /* One row has nothing to reuse: stream w once, front to back. A few rows of float16
     * weights also go row by row: widening the weights costs more than reading them. */
    if (panels && p->M < 4)
        panels_streamed(p->x, p->w, p->bias, p->out, p->M, p->K, p->N, p->flags, nb, ne,
                        thread);
    else if (p->M == 1 || (f16 && p->M < 4))
        rows_streamed(p->x, p->w, p->bias, p->out, p->M, p->K, p->N, p->flags, f16, nb, ne,
                      thread);
    else
        rows_tiled(p->x, p->w, p->bias, p->out, p->M, p->K, p->N, p->flags, f16, nb, ne,
                   thread);
    if (p->flags & (F_GELU | F_RESIDUAL))
        for (long m = 0; m < p->M; m++)
            epilogue(p->out + m * p->N + nb, p->residual + m * p->N + nb, p->flags, ne - nb);
}

/* Products smaller than this many multiply-adds run on one thread: handing parts to the
 * others costs more than they would save (threaded build; see pool.c). */
#define MIN_SPLIT_WORK (64 * 1024)

EXPORT(linear)
void linear(const float *x, const void *w, const float *bias, const float *residual,
            float *out, int M, int K, int N, int flags) {
    struct product p = {x, w, bias, residual, out, M, K, N, flags};
    int parts = (long long)M * K * N >= MIN_SPLIT_WORK && N >= 64 ? pool_parts() : 1;
    pool_run(product_part, &p, parts > 1 ? parts * POOL_CHUNKS_PER_THREAD : 1, parts);
}

/* The streaming floor for benchmarks: reads n bytes at p (16 at a time) and returns a value
 * that depends on all of them, so that nothing is skipped. */
EXPORT(stream)
u32 stream(const v128_t *p, int n) {
    v128_t a = wasm_i32x4_splat(0), b = a;
    int i = 0, words = n / 16;
    for (; i + 2 <= words; i += 2) {
        a = wasm_v128_xor(a, wasm_v128_load(p + i));
        b = wasm_v128_xor(b, wasm_v128_load(p + i + 1));
    }
    for (; i < words; i++) a = wasm_v128_xor(a, wasm_v128_load(p + i));
    a = wasm_v128_xor(a, b);
    return (u32)wasm_i32x4_extract_lane(a, 0) ^ (u32)wasm_i32x4_extract_lane(a, 3);
}
