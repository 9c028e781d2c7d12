// attention_cache4: attention_subgroups.wgsl's float32 KV cache, four values at a time.
//   cache_load4(i): values 4i .. 4i+3 of the bound cache window.
//   cache_store4(i, v): writes them (attend_decode writes the step's key and value itself).
// Binding: 2 cache (vec4<f32>, read_write). No entry point.

@group(0) @binding(2) var<storage, read_write> cache: array<vec4<f32>>;

fn cache_load4(i: u32) -> vec4<f32> {
    return cache[i];
}

fn cache_store4(i: u32, v: vec4<f32>) {
    cache[i] = v;
}
