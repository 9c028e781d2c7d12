// layer_norm: y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis, with the
// biased variance (torch.nn.LayerNorm), computed two-pass (mean first, then the centred
// squares) for accuracy.
// Bindings: 0 uniform Params, 1 x (f32), 2 gamma (f32), 3 beta (f32), 4 y (f32).
// Workgroup: 64 invocations per row, tree reductions in workgroup memory; one workgroup per
// row, flattened over x and y.

//!include layer_norm_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let xb = p.x_offset + row * p.hidden;
    var sum = 0.0;
    for (var h = lid; h < p.hidden; h += 64u) {
        sum += x[xb + h];
    }
    let mean = workgroup_sum(lid, sum) / f32(p.hidden);
    var squares = 0.0;
    for (var h = lid; h < p.hidden; h += 64u) {
        let d = x[xb + h] - mean;
        squares += d * d;
    }
    let variance = workgroup_sum(lid, squares) / f32(p.hidden);
    let inv = 1.0 / sqrt(variance + p.epsilon);
    let yb = p.y_offset + row * p.hidden;
    for (var h = lid; h < p.hidden; h += 64u) {
        y[yb + h] = (x[xb + h] - mean) * inv * gamma[h] + beta[h];
    }
}
