// attention_load: attention_blocks.wgsl's float32 KV cache, read only (the step's keys and
// values are written by attention.wgsl's kv_write before attend_blocks runs).
//   cache_load(i): value i of the bound cache window.
// Binding: 2 cache (f32; read_write, as kv_write binds the same window).

@group(0) @binding(2) var<storage, read_write> cache: array<f32>;

fn cache_load(i: u32) -> f32 {
    return cache[i];
}
