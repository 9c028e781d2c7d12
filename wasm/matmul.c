/* Matrix products: y = act(x @ W^T + bias) + residual, for linear layers and the tied LM head.
 *
 * linear(x, w, bias, residual, out, M, K, N, flags)
 *   x [M, K] f32; w [N, K] (one row per output: a Conv1D weight [K, N] transposed at upload,
 *   or the token table [V, H] as it is), f32 or, with flags & 8, f16; bias [N] f32 (flags & 1);
 *   GELU, tanh approximation (flags & 2); residual [M, N] f32 (flags & 4); out [M, N] f32.
 *   Unused pointers may be 0. out must not overlap x, w or bias (it may be residual).
 *
 * Every output is a dot product over a row of x and a row of w, both contiguous, so a decode
 * step (M = 1) streams each weight row once, front to back (the fastest way to read the
 * weights). Longer inputs are tiled: 4 rows of x times 2 rows of w per inner loop, over a block
 * of w rows small enough to stay in the core's cache while every row tile passes over it, so
 * the weights come from memory once per call rather than once per row.
 */
#include "common.h"

#define F_BIAS 1
#define F_GELU 2
#define F_RESIDUAL 4
#define F_W16 8

/* Bytes of w per block of outputs: about half a typical 512 KiB L2. */
#define BLOCK_BYTES (192 * 1024)

INLINE void load_w8(const void *w, int f16, long i, v128_t *lo, v128_t *hi) {
    if (f16) {
        load_f16x8((const u16 *)w + i, lo, hi);
    } else {
        *lo = wasm_v128_load((const float *)w + i);
        *hi = wasm_v128_load((const float *)w + i + 4);
    }
}

INLINE float load_w1(const void *w, int f16, long i) {
    return f16 ? f16_to_f32(((const u16 *)w)[i]) : ((const float *)w)[i];
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e^-2u), u = sqrt(2/pi) (x + 0.044715 x^3):
 * the sigmoid form has no cancellation near 0 and saturates cleanly at both ends. */
INLINE float gelu(float x) {
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_f32(-2.0f * u));
}

INLINE void store(float *out, const float *bias, const float *residual, int flags, long m,
                  int n, int N, float s) {
    if (flags & F_BIAS) s += bias[n];
    if (flags & F_GELU) s = gelu(s);
    if (flags & F_RESIDUAL) s += residual[m * N + n];
    out[m * N + n] = s;
}

/* sums[r][c] = x[r] . w[c] for R rows of x (stride K) and C rows of w (stride K). */
INLINE void tile(const float *x, const void *w, int f16, int K, int R, int C,
                 float sums[4][4]) {
    v128_t acc[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = wasm_f32x4_splat(0.0f);
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        v128_t wl[4], wh[4];
        for (int c = 0; c < C; c++) load_w8(w, f16, (long)c * K + k, &wl[c], &wh[c]);
        for (int r = 0; r < R; r++) {
            v128_t xl = wasm_v128_load(x + (long)r * K + k);
            v128_t xh = wasm_v128_load(x + (long)r * K + k + 4);
            for (int c = 0; c < C; c++) {
                acc[r][c] = wasm_f32x4_add(acc[r][c], wasm_f32x4_mul(xl, wl[c]));
                acc[r][c] = wasm_f32x4_add(acc[r][c], wasm_f32x4_mul(xh, wh[c]));
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float s = hsum(acc[r][c]);
            for (int kk = k; kk < K; kk++) s += x[(long)r * K + kk] * load_w1(w, f16, (long)c * K + kk);
            sums[r][c] = s;
        }
}

INLINE void linear_impl(const float *x, const void *w, const float *bias, const float *residual,
                        float *out, int M, int K, int N, int flags, int f16) {
    long row_bytes = (long)K * (f16 ? 2 : 4);
    int block = (int)(BLOCK_BYTES / (row_bytes ? row_bytes : 1));
    block = block < 8 ? 8 : block & ~3;
    if (M < 4) block = N; /* nothing to reuse: stream w once, front to back */
    float sums[4][4];
    for (int n0 = 0; n0 < N; n0 += block) {
        int n1 = n0 + block < N ? n0 + block : N;
        int m = 0;
        for (; m + 4 <= M; m += 4) {
            const float *xr = x + (long)m * K;
            int n = n0;
            for (; n + 2 <= n1; n += 2) {
                tile(xr, (const char *)w + n * row_bytes, f16, K, 4, 2, sums);
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 2; c++)
                        store(out, bias, residual, flags, m + r, n + c, N, sums[r][c]);
            }
            for (; n < n1; n++) {
                tile(xr, (const char *)w + n * row_bytes, f16, K, 4, 1, sums);
                for (int r = 0; r < 4; r++)
                    store(out, bias, residual, flags, m + r, n, N, sums[r][0]);
            }
        }
        for (; m < M; m++) {
            const float *xr = x + (long)m * K;
            int n = n0;
            for (; n + 4 <= n1; n += 4) {
                tile(xr, (const char *)w + n * row_bytes, f16, K, 1, 4, sums);
                for (int c = 0; c < 4; c++)
                    store(out, bias, residual, flags, m, n + c, N, sums[0][c]);
            }
            for (; n < n1; n++) {
                tile(xr, (const char *)w + n * row_bytes, f16, K, 1, 1, sums);
                store(out, bias, residual, flags, m, n, N, sums[0][0]);
            }
        }
    }
}

EXPORT(linear)
void linear(const float *x, const void *w, const float *bias, const float *residual,
            float *out, int M, int K, int N, int flags) {
    if (flags & F_W16)
        linear_impl(x, w, bias, residual, out, M, K, N, flags, 1);
    else
        linear_impl(x, w, bias, residual, out, M, K, N, flags, 0);
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
