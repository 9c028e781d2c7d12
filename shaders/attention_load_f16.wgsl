// attention_load_f16: a float16 KV cache for attention_blocks.wgsl, two values per u32 word
// (element indices still count values, as in attention_cache_f16.wgsl).
//   cache_load(i): value i of the bound window, widened to f32.
// Binding: 2 cache (u32 words, read_write).
//!provides attention_load.wgsl

@group(0) @binding(2) var<storage, read_write> cache: array<u32>;

fn cache_load(i: u32) -> f32 {
    return unpack2x16float(cache[i >> 1u])[i & 1u];
}
