/* Matrix products: y = act(x @ W^T + bias) + residual, for linear layers and the tied LM head.
 *
 * linear(x, w, bias, residual, out, M, K, N, flags)
 *   x [M, K] f32; w [N, K] (one row per output: a Conv1D weight [K, N] transposed at upload,
 *   or the token table [V, H] as it is), f32 or, with flags & 8, packed f16 (common.h);
 *   bias [N] f32 (flags & 1); GELU, tanh approximation (flags & 2); residual [M, N] f32
 *   (flags & 4); out [M, N] f32.
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
 * dot_row_packed), so that it takes about half of float32's time, as its bytes do.
 */
#include "common.h"
#include "dot.h"
#include "pool.h"

#define F_BIAS 1
#define F_GELU 2
#define F_RESIDUAL 4
#define F_W16 8

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

static void rows_tiled(const float *x, const void *w, const float *bias, float *out, int M,
                       int K, int N, int flags, int f16, int nb, int ne, int thread) {
    int block = (int)(BLOCK_BYTES / ((long)K * 4));
    block = block < 8 ? 8 : block & ~1;
    if (f16 && (long)block * K > BLOCK_BYTES / 4) { /* rows too long to widen a block */
        rows_streamed(x, w, bias, out, M, K, N, flags, f16, nb, ne, thread);
        return;
    }
    float sums[4][2];
    for (int n0 = nb; n0 < ne; n0 += block) {
        int n1 = n0 + block < ne ? n0 + block : ne;
        const float *wb = (const float *)w + (long)n0 * K;
        if (f16) {
            float *buffer = widened[thread];
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
    int f16 = (p->flags & F_W16) != 0;
    int share = ((p->N + chunks - 1) / chunks + 1) & ~1;
    int nb = chunk * share, ne = nb + share < p->N ? nb + share : p->N;
    if (nb >= ne) return;
    /* One row has nothing to reuse: stream w once, front to back. A few rows of float16
     * weights also go row by row: widening the weights costs more than reading them. */
    if (p->M == 1 || (f16 && p->M < 4))
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
