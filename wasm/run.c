/* The command interpreter: many kernel calls in one call of the module.
 *
 * Each call into the module from the host costs far more than a small kernel's work: about
 * 24 us through Pyodide's JavaScript bridge (a decode step of GPT-2 makes ~90 calls, 2 ms
 * against a ~20 ms step), a few us through wasmtime. So the host records kernel calls as
 * words in linear memory and `run` executes them in order, in one crossing.
 *
 * run(commands, count)
 *   commands [1 + ...] u32: word 0 is written by run (the index of the command being run, so
 *   that the host can name the kernel that trapped); then `count` commands, each an opcode
 *   followed by that kernel's arguments, one word each, in its exported order (pointers and
 *   ints as they are, f32 arguments as their bit patterns). The opcodes and arities are
 *   OPCODES in webgpt2/backends/wasm/commands.py, in this file's order. An unknown opcode
 *   traps.
 */
#include "common.h"

typedef unsigned long size_t;

void attention(const float *, float *, float *, float *, int, int, int, int, int, int, int,
               int, int);
void reorder_cache(float *, float *, const int *, int, int, int, int, int, int, int);
void embedding(const int *, const void *, const float *, float *, int, int, int, int, int);
void layer_norm(const float *, const float *, const float *, float *, int, int, float);
void transpose_32(const u32 *, u32 *, int, int);
void narrow_f16(const float *, u16 *, int);
void widen_f16(const u16 *, float *, int);
void widen_bf16(const u16 *, u32 *, int);
void linear(const float *, const void *, const float *, const float *, float *, int, int, int,
            int);
void *memcpy(void *, const void *, size_t);
void *memset(void *, int, size_t);
void fill_u32(u32 *, u32, int);
void argmax(const float *, int, int, int *);
void log_softmax(const float *, float *, int, int);
void token_log_probs(const float *, const int *, float *, int, int);
void sample(const float *, const double *, int *, int, int, float, int, int, float, u32 *);
void top_k(const float *, int, int, int, float *, int *, u32 *);
void repetition_penalty(float *, int, const int *, int, float);
void mask_tokens(float *, int, const int *, int, float);
void max_cosine_similarity(const float *, const float *, float *, int, int, int, int);
void greedy_head(const float *, const void *, const signed char *, int *, int, int, int, int,
                 u8 *);
void top_k_logits(const float *, const void *, const signed char *, float *, int *, int, int,
                  int, int, int, u8 *);

#define P(i) ((void *)a[i])
#define I(i) ((int)a[i])
#define F(i) bits_to_f32(a[i])

EXPORT(run)
void run(u32 *commands, int count) {
    const u32 *c = commands + 1;
    for (int i = 0; i < count; i++) {
        const u32 *a = c + 1;
        commands[0] = (u32)i;
        switch (c[0]) {
        case 0: linear(P(0), P(1), P(2), P(3), P(4), I(5), I(6), I(7), I(8)); c += 10; break;
        case 1: layer_norm(P(0), P(1), P(2), P(3), I(4), I(5), F(6)); c += 8; break;
        case 2: attention(P(0), P(1), P(2), P(3), I(4), I(5), I(6), I(7), I(8), I(9), I(10),
                          I(11), I(12)); c += 14; break;
        case 3: embedding(P(0), P(1), P(2), P(3), I(4), I(5), I(6), I(7), I(8)); c += 10; break;
        case 4: memcpy(P(0), P(1), a[2]); c += 4; break;
        case 5: memset(P(0), I(1), a[2]); c += 4; break;
        case 6: fill_u32(P(0), a[1], I(2)); c += 4; break;
        case 7: argmax(P(0), I(1), I(2), P(3)); c += 5; break;
        case 8: log_softmax(P(0), P(1), I(2), I(3)); c += 5; break;
        case 9: token_log_probs(P(0), P(1), P(2), I(3), I(4)); c += 6; break;
        case 10: sample(P(0), P(1), P(2), I(3), I(4), F(5), I(6), I(7), F(8), P(9)); c += 11;
            break;
        case 11: top_k(P(0), I(1), I(2), I(3), P(4), P(5), P(6)); c += 8; break;
        case 12: repetition_penalty(P(0), I(1), P(2), I(3), F(4)); c += 6; break;
        case 13: mask_tokens(P(0), I(1), P(2), I(3), F(4)); c += 6; break;
        case 14: max_cosine_similarity(P(0), P(1), P(2), I(3), I(4), I(5), I(6)); c += 8; break;
        case 15: reorder_cache(P(0), P(1), P(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9));
            c += 11; break;
        case 16: transpose_32(P(0), P(1), I(2), I(3)); c += 5; break;
        case 17: narrow_f16(P(0), P(1), I(2)); c += 4; break;
        case 18: widen_f16(P(0), P(1), I(2)); c += 4; break;
        case 19: widen_bf16(P(0), P(1), I(2)); c += 4; break;
        case 20: greedy_head(P(0), P(1), P(2), P(3), I(4), I(5), I(6), I(7), P(8)); c += 10;
            break;
        case 21: top_k_logits(P(0), P(1), P(2), P(3), P(4), I(5), I(6), I(7), I(8), I(9), P(10));
            c += 12; break;
        default: __builtin_trap();
        }
    }
}
