// select_rows: out[b, :] = x[b, index, :], taking one position of every sequence
// (x [B, S, H] -> out [B, 1, H]).
// Bindings: 0 uniform Params, 1 x (f32), 2 out (f32).
// Workgroup: 256 invocations, one output value each; flattened over x and y.

struct Params {
    batch: u32,
    seq_len: u32,
    hidden: u32,
    index: u32,
    x_offset: u32,
    out_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn select_rows(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (i >= p.batch * p.hidden) {
        return;
    }
    let b = i / p.hidden;
    let h = i % p.hidden;
    out[p.out_offset + i] = x[p.x_offset + (b * p.seq_len + p.index) * p.hidden + h];
}
