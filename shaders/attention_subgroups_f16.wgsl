// attention_subgroups_f16: attention_subgroups.wgsl over a float16 KV cache, two values per
// u32 word: cache_load4(i) widens values 4i .. 4i+3 (one vec2<u32>) to f32, cache_store4
// rounds four values to float16 as kv_write_f16 does. Same Params, bindings, entry points
// and workgroups otherwise. Binding: 2 cache (vec2<u32>, read_write).
//!provides attention_cache4.wgsl

@group(0) @binding(2) var<storage, read_write> cache: array<vec2<u32>>;

fn cache_load4(i: u32) -> vec4<f32> {
    let q = cache[i];
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}

fn cache_store4(i: u32, v: vec4<f32>) {
    cache[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}

//!include attention_subgroups.wgsl
