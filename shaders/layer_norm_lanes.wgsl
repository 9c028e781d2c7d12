// layer_norm_lanes: layer_norm.wgsl's results for CPU adapters whose subgroups are aligned
// groups of exactly 8 invocations (the backend's broadcast probe), rows of whole vec4 words
// (hidden and both offsets multiples of 4). A workgroup is one subgroup of 8 lanes per row,
// each lane reading every 8th vec4 word, and the sums are subgroupAdd: no workgroup memory and
// no barriers, which a CPU adapter runs as a switch of every subgroup of the workgroup (the
// 64-invocation tree of layer_norm.wgsl takes 14 of them per row). Same two-pass mean and
// variance and the same Params (layer_norm_params.wgsl).
// Bindings: 0 uniform Params, 1 x (vec4<f32>), 2 gamma, 3 beta (vec4<f32>), 4 y (vec4<f32>).
// Workgroups: one per row, flattened over x and y.

//!include layer_norm_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gamma: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> beta: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(8)
fn layer_norm_lanes(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lane: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let words = p.hidden >> 2u;
    let xb = (p.x_offset >> 2u) + row * words;
    var sum = vec4<f32>(0.0);
    for (var i = lane; i < words; i += 8u) {
        sum += x[xb + i];
    }
    let mean = subgroupAdd((sum.x + sum.y) + (sum.z + sum.w)) / f32(p.hidden);
    var squares = vec4<f32>(0.0);
    for (var i = lane; i < words; i += 8u) {
        let d = x[xb + i] - mean;
        squares += d * d;
    }
    let variance = subgroupAdd((squares.x + squares.y) + (squares.z + squares.w))
        / f32(p.hidden);
    let inv = 1.0 / sqrt(variance + p.epsilon);
    let yb = (p.y_offset >> 2u) + row * words;
    for (var i = lane; i < words; i += 8u) {
        y[yb + i] = (x[xb + i] - mean) * inv * gamma[i] + beta[i];
    }
}
