/* What a freestanding module needs besides the kernels: memcpy, memmove and memset (clang
 * emits calls to them for struct copies and loops it recognises; with -mbulk-memory each is
 * one memory.copy / memory.fill instruction), a 32-bit fill for NaN poisoning, and the first
 * free byte above the module's stack and data.
 *
 * memcpy(dst, src, n), memmove(dst, src, n), memset(dst, byte, n): as in C; exported, so the
 * host copies inside memory without a round trip. fill_u32(dst, value, count): count words.
 * heap_base() -> i32: the lowest address the host may allocate from.
 */
#include "common.h"

typedef unsigned long size_t;

extern unsigned char __heap_base;

EXPORT(memcpy)
void *memcpy(void *dst, const void *src, size_t n) {
    __builtin_memcpy(dst, src, n);
    return dst;
}

EXPORT(memmove)
void *memmove(void *dst, const void *src, size_t n) {
    __builtin_memmove(dst, src, n);
    return dst;
}

EXPORT(memset)
void *memset(void *dst, int c, size_t n) {
    __builtin_memset(dst, c, n);
    return dst;
}

EXPORT(fill_u32)
void fill_u32(u32 *dst, u32 value, int count) {
    v128_t v = wasm_i32x4_splat((int)value);
    int i = 0;
    for (; i + 4 <= count; i += 4) wasm_v128_store(dst + i, v);
    for (; i < count; i++) dst[i] = value;
}

EXPORT(heap_base)
int heap_base(void) { return (int)(long)&__heap_base; }
