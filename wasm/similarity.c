/* Contrastive search's degeneration penalty.
 *
 * max_cosine_similarity(context, candidates, out, B, S, H, N)
 *   context [B, S, H] f32, candidates [N, H] f32 (candidate n belongs to context row
 *   n / (N / B)); out [N] f32 = max over s of a.b / (|a| |b|), no epsilon.
 */
#include "common.h"

EXPORT(max_cosine_similarity)
void max_cosine_similarity(const float *context, const float *candidates, float *out, int B,
                           int S, int H, int N) {
    int per_row = N / B;
    for (int n = 0; n < N; n++) {
        const float *c = candidates + (long)n * H;
        float c_norm = __builtin_sqrtf(dot_f32(c, c, H));
        const float *ctx = context + (long)(n / per_row) * S * H;
        float best = -__builtin_inff();
        for (int s = 0; s < S; s++) {
            const float *a = ctx + (long)s * H;
            float cosine = dot_f32(a, c, H) / (__builtin_sqrtf(dot_f32(a, a, H)) * c_norm);
            best = cosine > best ? cosine : best;
        }
        out[n] = best;
    }
}
