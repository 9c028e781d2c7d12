/* The greedy head: each row's argmax over the vocabulary of x . table^T (the tied LM head's
 * logits) without computing most logits, through a screen of the table in 8-bit integers.
 *
 * screen_table(table, N, K, f16, screen, scratch) -> i32
 *   Builds the screen of a token table [N, K] (float32, or packed float16 with f16 = 1) into
 *   `screen` (screen_bytes(N, K) bytes): per row v a scale s_v = max|E_v| / 127 and the row
 *   quantised, q_v = round(E_v / s_v) in [-127, 127]; and two bounds, alpha_v = |E_v - s_v q_v|
 *   + gamma |E_v| and beta_v = |s_v q_v| (Euclidean norms, rounded up; gamma below). Rows
 *   are stored in panels of 4, interleaved 16 bytes at a time, K padded to a multiple of 16.
 *   scratch: K floats. Returns 1, or 0 (no screen) when an element is not finite or
 *   |E| >= 2^40.
 *
 * greedy_head(x, table, screen, out, M, K, N, f16, scratch)
 *   out [2 M] i32: for each row of x [M, K], M < 4, out[m] the first index of the largest
 *   logit x . E_v, with the logits as linear() computes them for M < 4 rows (dot.h), so
 *   that it equals argmax(linear(x, table)); out[M + m] how many logits it computed.
 *   scratch: greedy_scratch_bytes(N, K) bytes.
 *
 * top_k_logits(x, table, screen, logits, counts, M, K, N, f16, k, scratch)
 *   logits [M, N] f32: for each row of x (M < 4) the logits, as linear computes them, of every
 *   vocabulary row that may be among the row's k largest, and -inf for the others (which are
 *   below the k-th largest: top-k sampling keeps none of them); counts [M] i32: how many were
 *   computed. scratch: greedy_scratch_bytes(N, K) + (N + k) * 4 bytes.
 *
 * Why it is exact. Let L_v be the logit as linear computes it in float32, and S_v the
 * screen's value t s_v (p . q_v), where x ~ t p is x quantised to integers |p_k| <= P
 * (|x_k - t p_k| <= 0.51 t). p . q_v is exact in i32 (K P 127 < 2^31). Then
 *   |L_v - x . E_v| <= gamma |x| |E_v|, gamma = K u / (1 - K u), u = 2^-24
 * (any order of K float32 multiply-adds), and
 *   x . E_v - S_v = x . (E_v - s_v q_v) + (x - t p) . s_v q_v,
 * so |L_v - S_v| <= |x| alpha_v + e beta_v =: B_v, with e = 0.51 t sqrt(K) >= |x - t p|.
 * With lower = max_v (S_v - B_v) <= max_v L_v, a row whose S_v + B_v < lower has L_v below
 * the largest logit: only the others ("candidates", usually one or two for GPT-2) have
 * their logits computed, exactly as linear would, and the first largest of those wins. A row
 * of x with a non-finite element, all zeros or |x_k| >= 2^40 takes every logit instead, and
 * argmax's own rule (sampling.c).
 *
 * The screen pass reads N K bytes (a quarter of the float32 table, half of the float16 one)
 * and is shared between the pool's threads like a product.
 */
#include "common.h"
#include "dot.h"
#include "pool.h"

typedef signed char i8;

#define PANEL 4
#define HUGE_ABS 1099511627776.0 /* 2^40 */

int row_argmax(const float *row, int V);

INLINE int padded_k(int K) { return (K + 15) & ~15; }
INLINE long padded_n(int N) { return ((long)N + PANEL - 1) / PANEL * PANEL; }

/* The screen: the panels of q, then per row (s, alpha, beta) as f32. */
EXPORT(screen_bytes)
long screen_bytes(int N, int K) { return padded_n(N) * padded_k(K) + (long)N * 12; }

/* Panel of row v: rows v & ~3 .. +3, 16 bytes of each in turn. */
INLINE i8 *panel_of(i8 *q, long v, int Kp) { return q + (v / PANEL) * PANEL * Kp; }

/* f64 sums over 4 elements: r2 += (e - s q)^2, n2 += e^2, q2 += (s q)^2, two lanes at a time
 * (each product and difference exact or rounded in f64, ~1e-16 relative). */
INLINE void add_squares(v128_t e, v128_t q, v128_t s, v128_t *r2, v128_t *n2, v128_t *q2) {
    for (int half = 0; half < 2; half++) {
        v128_t e2 = wasm_f64x2_promote_low_f32x4(e), sq = wasm_f64x2_mul(
            wasm_f64x2_promote_low_f32x4(q), s), d = wasm_f64x2_sub(e2, sq);
        *r2 = wasm_f64x2_add(*r2, wasm_f64x2_mul(d, d));
        *n2 = wasm_f64x2_add(*n2, wasm_f64x2_mul(e2, e2));
        *q2 = wasm_f64x2_add(*q2, wasm_f64x2_mul(sq, sq));
        e = wasm_i64x2_shuffle(e, e, 1, 0);
        q = wasm_i64x2_shuffle(q, q, 1, 0);
    }
}

INLINE double sum2(v128_t v) {
    return wasm_f64x2_extract_lane(v, 0) + wasm_f64x2_extract_lane(v, 1);
}

EXPORT(screen_table)
int screen_table(const void *table, int N, int K, int f16, i8 *screen, float *scratch) {
    int Kp = padded_k(K), K16 = K & ~15;
    float *consts = (float *)(screen + padded_n(N) * Kp);
    double gamma = K * 0x1p-24 / (1.0 - K * 0x1p-24);
    v128_t huge = wasm_f32x4_splat((float)HUGE_ABS), top = wasm_f32x4_splat(127.0f);
    __builtin_memset(screen, 0, (unsigned long)(padded_n(N) * Kp));
    for (long v = 0; v < N; v++) {
        const float *e = (const float *)table + v * K;
        if (f16) {
            unpack_f16(table, v * K, K, scratch);
            e = scratch;
        }
        v128_t peak = wasm_f32x4_splat(0.0f), ok = wasm_i32x4_splat(-1);
        int k = 0;
        for (; k + 4 <= K; k += 4) {
            v128_t a = wasm_f32x4_abs(wasm_v128_load(e + k));
            ok = wasm_v128_and(ok, wasm_f32x4_lt(a, huge)); /* false for NaN too */
            peak = wasm_f32x4_max(peak, a);
        }
        if (!wasm_i32x4_all_true(ok)) return 0; /* NaN, infinity or huge */
        double amax = hmax(peak);
        for (; k < K; k++) {
            double a = __builtin_fabs((double)e[k]);
            if (!(a < HUGE_ABS)) return 0;
            amax = a > amax ? a : amax;
        }
        float s = (float)(amax / 127.0);
        /* Any q will do (the bounds are of the q chosen): E (1 / s) rounded, or 0 where 1 / s
         * would overflow. */
        v128_t inverse = wasm_f32x4_splat(s > 0x1p-100f ? 1.0f / s : 0.0f);
        v128_t sd = wasm_f64x2_splat(s);
        v128_t r2 = wasm_f64x2_splat(0.0), n2 = r2, q2 = r2;
        i8 *panel = panel_of(screen, v, Kp) + (v % PANEL) * 16;
        for (k = 0; k < K16; k += 16) { /* 16 at a time: one store into the panel */
            v128_t q[4];
            for (int j = 0; j < 4; j++) {
                v128_t x = wasm_v128_load(e + k + 4 * j);
                q[j] = wasm_f32x4_max(wasm_f32x4_min(
                           wasm_f32x4_nearest(wasm_f32x4_mul(x, inverse)), top),
                           wasm_f32x4_neg(top));
                add_squares(x, q[j], sd, &r2, &n2, &q2);
            }
            v128_t lo = wasm_i16x8_narrow_i32x4(wasm_i32x4_trunc_sat_f32x4(q[0]),
                                                wasm_i32x4_trunc_sat_f32x4(q[1]));
            v128_t hi = wasm_i16x8_narrow_i32x4(wasm_i32x4_trunc_sat_f32x4(q[2]),
                                                wasm_i32x4_trunc_sat_f32x4(q[3]));
            wasm_v128_store(panel + (k / 16) * PANEL * 16, wasm_i8x16_narrow_i16x8(lo, hi));
        }
        double r2s = sum2(r2), n2s = sum2(n2), q2s = sum2(q2);
        for (; k < K; k++) {
            int q = 0;
            if (s > 0.0f) {
                float f = __builtin_rintf(e[k] / s);
                q = f > 127.0f ? 127 : f < -127.0f ? -127 : (int)f;
            }
            panel[(k / 16) * PANEL * 16 + k % 16] = (i8)q;
            double exact = (double)s * q, d = e[k] - exact;
            r2s += d * d;
            n2s += (double)e[k] * e[k];
            q2s += exact * exact;
        }
        /* Rounded up: the f64 sums' own errors are ~1e-13 relative. */
        consts[3 * v] = s;
        consts[3 * v + 1] =
            (float)((__builtin_sqrt(r2s) + gamma * __builtin_sqrt(n2s)) * (1 + 1e-6));
        consts[3 * v + 2] = (float)(__builtin_sqrt(q2s) * (1 + 1e-6));
    }
    return 1;
}

INLINE long align64(long n) { return (n + 63) & ~63L; }

EXPORT(greedy_scratch_bytes)
long greedy_scratch_bytes(int N, int K) {
    return align64((long)N * 4) + align64(padded_k(K) * 2) +
           (long)(K > SCRATCH ? SCRATCH : K) * 4 + 64;
}

/* The screen pass's arguments, as the pool's threads read them. */
struct screen_pass {
    const short *p;
    const i8 *q;
    const float *consts;
    float *upper, *lows; /* lows: each S_v - B_v, when wanted (top_k_logits) */
    double scale, error, norm;
    double lower[256];
    int N, Kp;
};

/* The scratch's layout (greedy_scratch_bytes): upper bounds [N] f32, x's screen form p
 * [Kp] i16, then a buffer for x scaled or a widened weight row, each on a 64-byte boundary
 * when the scratch is (the loops over p and over the buffer then take their aligned paths);
 * the pass over them. */
static struct screen_pass start_pass(const i8 *screen, u8 *scratch, int N, int K, short **p,
                                     float **buffer, float *lows) {
    int Kp = padded_k(K);
    *p = (short *)(scratch + align64((long)N * 4));
    *buffer = (float *)((u8 *)*p + align64(Kp * 2));
    struct screen_pass pass = {*p, screen, (const float *)(screen + padded_n(N) * Kp),
                               (float *)scratch, lows, 0, 0, 0, {0}, N, Kp};
    return pass;
}

/* Integer sums of 4 lanes of each of a, b, c, d: [sum a, sum b, sum c, sum d]. */
INLINE v128_t sums4(v128_t a, v128_t b, v128_t c, v128_t d) {
    v128_t ab = wasm_i32x4_add(wasm_i32x4_shuffle(a, b, 0, 4, 1, 5),
                               wasm_i32x4_shuffle(a, b, 2, 6, 3, 7));
    v128_t cd = wasm_i32x4_add(wasm_i32x4_shuffle(c, d, 0, 4, 1, 5),
                               wasm_i32x4_shuffle(c, d, 2, 6, 3, 7));
    return wasm_i32x4_add(wasm_i64x2_shuffle(ab, cd, 0, 2), wasm_i64x2_shuffle(ab, cd, 1, 3));
}

INLINE v128_t dot16(v128_t q, v128_t lo, v128_t hi) {
    return wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(q), lo),
                          wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(q), hi));
}

/* dots[r] = p . q_r for the 4 rows of the panel at q. Where q and p are aligned (a screen and
 * its scratch are 64-byte aligned), the caller says so, and clang folds the loads' constant
 * offsets into the loads (see dot.h's dot_row_packed). */
INLINE void panel_dots(const i8 *q, const short *p, int Kp, int dots[4]) {
    v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
    for (const short *end = p + Kp; p < end; p += 16, q += PANEL * 16) {
        v128_t lo = wasm_v128_load(p), hi = wasm_v128_load(p + 8);
        a0 = wasm_i32x4_add(a0, dot16(wasm_v128_load(q), lo, hi));
        a1 = wasm_i32x4_add(a1, dot16(wasm_v128_load(q + 16), lo, hi));
        a2 = wasm_i32x4_add(a2, dot16(wasm_v128_load(q + 32), lo, hi));
        a3 = wasm_i32x4_add(a3, dot16(wasm_v128_load(q + 48), lo, hi));
    }
    wasm_v128_store(dots, sums4(a0, a1, a2, a3));
}

/* Chunk `chunk` of the rows (whole panels): upper[v] = S_v + B_v, lower[chunk] = the largest
 * S_v - B_v, both with a margin for their own rounding. */
static void screen_part(const void *args, int chunk, int chunks, int thread) {
    const struct screen_pass *a = args;
    (void)thread;
    long panels = ((long)a->N + PANEL - 1) / PANEL, share = (panels + chunks - 1) / chunks;
    long first = chunk * share, last = first + share < panels ? first + share : panels;
    double lower = -__builtin_inf();
    for (long panel = first; panel < last; panel++) {
        const i8 *q = a->q + panel * PANEL * a->Kp;
        int dots[4];
        if (!(((unsigned long)q & 63) | ((unsigned long)a->p & 31)))
            panel_dots(__builtin_assume_aligned(q, 64), __builtin_assume_aligned(a->p, 32),
                       a->Kp, dots);
        else
            panel_dots(q, a->p, a->Kp, dots);
        for (int r = 0; r < PANEL; r++) {
            long v = panel * PANEL + r;
            if (v >= a->N) break;
            const float *c = a->consts + 3 * v;
            double s = a->scale * c[0] * dots[r];
            double b = a->norm * c[1] + a->error * c[2];
            double up = s + b, down = s - b;
            up += __builtin_fabs(up) * 0x1p-20 + 1e-30;
            down -= __builtin_fabs(down) * 0x1p-20 + 1e-30;
            a->upper[v] = (float)up;
            if (a->lows) a->lows[v] = (float)down; /* the margin covers the cast */
            lower = down > lower ? down : lower;
        }
    }
    ((struct screen_pass *)a)->lower[chunk] = lower;
}

/* x's screen form: p [Kp] i16 = round(x / t), t = max|x| / P; returns t, or 0 when the row
 * takes every logit instead (see the top). *norm = |x| rounded up. */
static double quantise_row(const float *x, int K, short *p, double *norm) {
    double amax = 0.0, n2 = 0.0;
    for (int k = 0; k < K; k++) {
        double a = __builtin_fabs((double)x[k]);
        if (!(a < HUGE_ABS)) return 0.0;
        amax = a > amax ? a : amax;
        n2 += a * a;
    }
    long P = 2147483647L / (127L * K);
    P = P > 32767 ? 32767 : P;
    if (amax == 0.0 || P < 1024) return 0.0;
    double t = amax / (double)P;
    for (int k = 0; k < padded_k(K); k++) {
        double f = k < K ? __builtin_rint(x[k] / t) : 0.0;
        p[k] = (short)(f > P ? P : f < -P ? -P : f);
    }
    *norm = __builtin_sqrt(n2) * (1 + 1e-9);
    return t;
}

/* One logit as linear computes it (out of line: every path here calls it). */
__attribute__((noinline)) static float logit(const float *x, const float *xs, const void *table,
                                             long v, int K, int f16, float *buffer) {
    return row_output(x, xs, table, v, K, f16, buffer);
}

/* x's screen pass (quantised into p, shared between the pool's threads): 0 when the row takes
 * every logit instead, else 1 with *lower the largest S_v - B_v. */
static int screen_row(struct screen_pass *pass, short *p, const float *x, int K, int N,
                      double *lower) {
    double norm = 0.0, t = quantise_row(x, K, p, &norm);
    if (t == 0.0) return 0;
    pass->scale = t;
    pass->error = 0.51 * t * __builtin_sqrt((double)K);
    pass->norm = norm;
    int parts = (long long)N * K >= 64 * 1024 && N >= 64 ? pool_parts() : 1;
    int chunks = parts > 1 ? parts * POOL_CHUNKS_PER_THREAD : 1;
    pool_run(screen_part, pass, chunks, parts);
    *lower = -__builtin_inf();
    for (int c = 0; c < chunks; c++) *lower = pass->lower[c] > *lower ? pass->lower[c] : *lower;
    return 1;
}

INLINE const float *scaled_x(const float *x, int K, int f16, float *buffer) {
    return f16 && K % 8 == 0 && K <= SCRATCH && scale_row(x, buffer, K) ? buffer : 0;
}

EXPORT(greedy_head)
void greedy_head(const float *x, const void *table, const i8 *screen, int *out, int M, int K,
                 int N, int f16, u8 *scratch) {
    short *p;
    float *buffer;
    struct screen_pass pass = start_pass(screen, scratch, N, K, &p, &buffer, 0);
    float *upper = pass.upper;
    for (int m = 0; m < M; m++) {
        const float *xr = x + (long)m * K;
        double lower;
        if (!screen_row(&pass, p, xr, K, N, &lower)) { /* every logit, argmax's own rule */
            const float *xs = scaled_x(xr, K, f16, buffer);
            for (long v = 0; v < N; v++) upper[v] = logit(xr, xs, table, v, K, f16, buffer);
            out[m] = row_argmax(upper, N);
            out[M + m] = N;
            continue;
        }
        const float *xs = scaled_x(xr, K, f16, buffer);
        int best = -1, computed = 0;
        float peak = 0.0f;
        for (long v = 0; v < N; v++) {
            if (upper[v] < lower) continue;
            computed++;
            float value = logit(xr, xs, table, v, K, f16, buffer);
            if (best < 0 || value > peak) {
                best = (int)v;
                peak = value;
            }
        }
        out[m] = best;
        out[M + m] = computed;
    }
}

/* The k-th largest of a[0 .. n - 1], k <= n, through a min-heap of the k largest so far. */
static float kth_largest(const float *a, int n, int k, float *heap) {
    int size = 0;
    for (int i = 0; i < n; i++) {
        float value = a[i];
        int j;
        if (size < k) {
            for (j = size++; j > 0 && heap[(j - 1) / 2] > value; j = (j - 1) / 2)
                heap[j] = heap[(j - 1) / 2];
        } else if (value > heap[0]) {
            for (j = 0;;) {
                int c = 2 * j + 1;
                if (c >= k) break;
                if (c + 1 < k && heap[c + 1] < heap[c]) c++;
                if (heap[c] >= value) break;
                heap[j] = heap[c];
                j = c;
            }
        } else {
            continue;
        }
        heap[j] = value;
    }
    return heap[0];
}

EXPORT(top_k_logits)
void top_k_logits(const float *x, const void *table, const i8 *screen, float *logits,
                  int *counts, int M, int K, int N, int f16, int k, u8 *scratch) {
    float *lows = (float *)(scratch + greedy_scratch_bytes(N, K)), *heap = lows + N, *buffer;
    short *p;
    struct screen_pass pass = start_pass(screen, scratch, N, K, &p, &buffer, lows);
    float *upper = pass.upper;
    for (int m = 0; m < M; m++) {
        const float *xr = x + (long)m * K;
        float *row = logits + (long)m * N;
        double lower;
        int screened = k < N && screen_row(&pass, p, xr, K, N, &lower);
        const float *xs = scaled_x(xr, K, f16, buffer);
        float cut = screened ? kth_largest(lows, N, k, heap) : 0.0f;
        int computed = 0;
        for (long v = 0; v < N; v++) {
            if (screened && upper[v] < cut) {
                row[v] = -__builtin_inff();
                continue;
            }
            row[v] = logit(xr, xs, table, v, K, f16, buffer);
            computed++;
        }
        counts[m] = computed;
    }
}
