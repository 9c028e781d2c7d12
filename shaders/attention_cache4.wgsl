// attention_cache4: attention_subgroups.wgsl's float32 KV cache, read four values at a time.
//   cache_load4(i): values 4i .. 4i+3 of the bound cache window.
// Binding: 2 cache (vec4<f32>, read). No entry point.

@group(0) @binding(2) var<storage, read> cache: array<vec4<f32>>;

fn cache_load4(i: u32) -> vec4<f32> {
    return cache[i];
}
