/* Token plus position embedding.
 *
 * embedding(ids, table, positions, out, rows, S, H, start, table_f16)
 *   ids [rows] i32 (rows = B * S, row i at position start + i % S; ids already checked to be
 *   in the table); table [V, H] f32, or packed f16 (common.h) when table_f16 != 0;
 *   positions [P, H] f32;
 *   out [rows, H] f32 = table[ids[i]] + positions[start + i % S].
 */
#include "common.h"

EXPORT(embedding)
void embedding(const int *ids, const void *table, const float *positions, float *out, int rows,
               int S, int H, int start, int table_f16) {
    for (int i = 0; i < rows; i++) {
        const float *p = positions + (long)(start + i % S) * H;
        float *y = out + (long)i * H;
        long base = (long)ids[i] * H;
        int h = 0;
        if (table_f16) { /* the row widened into y, then the positions added */
            unpack_f16(table, base, H, y);
            for (; h + 4 <= H; h += 4)
                wasm_v128_store(y + h, wasm_f32x4_add(wasm_v128_load(y + h),
                                                      wasm_v128_load(p + h)));
            for (; h < H; h++) y[h] += p[h];
        } else {
            const float *t = (const float *)table + base;
            for (; h + 4 <= H; h += 4)
                wasm_v128_store(y + h, wasm_f32x4_add(wasm_v128_load(t + h),
                                                      wasm_v128_load(p + h)));
            for (; h < H; h++) y[h] = t[h] + p[h];
        }
    }
}
