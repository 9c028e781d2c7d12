// attention_subgroups_f16: attention_subgroups.wgsl over a float16 KV cache, two values per
// u32 word: cache_load4(i) widens values 4i .. 4i+3 (one vec2<u32>) to f32. Same Params,
// bindings, entry point and workgroups otherwise. Binding: 2 cache (vec2<u32>, read).
//!provides attention_cache4.wgsl

@group(0) @binding(2) var<storage, read> cache: array<vec2<u32>>;

fn cache_load4(i: u32) -> vec4<f32> {
    let q = cache[i];
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}

//!include attention_subgroups.wgsl
