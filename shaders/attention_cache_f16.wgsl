// attention_cache_f16: a float16 KV cache for attention.wgsl, two values per u32 word
// (element indices and strides still count values; the head size must be even, so that a
// head's values pair up inside words).
//   cache_load(i): value i of the bound window, widened to f32.
//   kv_write_f16: one invocation per pair of adjacent values, written as one word (two
//     invocations never share a word), 256 per workgroup, flattened over x and y.
// Binding: 2 cache (u32 words, read_write).
//!provides attention_cache.wgsl

@group(0) @binding(2) var<storage, read_write> cache: array<u32>;

fn cache_load(i: u32) -> f32 {
    return unpack2x16float(cache[i >> 1u])[i & 1u];
}

@compute @workgroup_size(256)
fn kv_write_f16(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (i >= p.batch * p.seq_len * p.hidden) {
        return;
    }
    let row = i / p.hidden;
    let e = 2u * (i % p.hidden);
    cache[kv_destination(row, e) >> 1u] = pack2x16float(vec2<f32>(kv_source(row, e),
                                                                  kv_source(row, e + 1u)));
}
