// attention_cache: attention.wgsl's float32 KV cache, its accessor and writer.
//   cache_load(i): value i of the bound cache window.
//   kv_write: one invocation per written value (see attention.wgsl), 256 per workgroup,
//     flattened over x and y.
// Binding: 2 cache (f32, read_write). No other bindings of its own.

@group(0) @binding(2) var<storage, read_write> cache: array<f32>;

fn cache_load(i: u32) -> f32 {
    return cache[i];
}

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let two_h = 2u * p.hidden;
    if (i >= p.batch * p.seq_len * two_h) {
        return;
    }
    cache[kv_destination(i / two_h, i % two_h)] = kv_source(i / two_h, i % two_h);
}
