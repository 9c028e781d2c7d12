// linear_rows: the prefill (M > 4) kernels of linear.wgsl for small devices (CPU adapters
// such as lavapipe and SwiftShader), where workgroup memory and barriers are expensive and a
// load that every invocation of a workgroup shares costs one load. Same Params, bindings
// and results as linear.wgsl's kernels; the line below makes the loader prepend it.
//!include linear.wgsl
// matmul_rows_f32 / matmul_rows_f16: each invocation computes an 8 x 4 block of y (8 rows of x,
// which all 64 invocations of the workgroup share, times 4 adjacent W rows of its own) straight
// from storage, so every W word loaded feeds 8 rows and every x word 4 columns (lavapipe:
// 1.3-1.5x faster in float32 and 2x in float16 than 4 x 4 blocks, whose W loads, a gather
// across invocations, dominate). One entry point per dtype keeps the inner loop free of the
// dtype branch (lavapipe does not hoist it). K must be a multiple of 4 (f16: whole words with
// zero padding add nothing) and x rows start on a vec4 boundary.
// Workgroup: 64 invocations = ROWS_M x (64 * 4) outputs; n_blocks column blocks per row
// block; flattened over x and y.

const ROWS_M: u32 = 8u;

fn dots(a: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
}

struct Block {
    m0: u32,
    n0: u32,
    w: vec4<u32>,  // first word of each of the 4 W rows (clamped to the last row)
}

fn block_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Block {
    let tile = wid.y * nwg.x + wid.x;
    let n0 = ((tile % p.n_blocks) * 64u + lid) * 4u;
    let last = p.n - 1u;
    let w = vec4<u32>(min(n0, last), min(n0 + 1u, last), min(n0 + 2u, last),
                      min(n0 + 3u, last)) * p.w_stride;
    return Block((tile / p.n_blocks) * ROWS_M, n0, w);
}

// The vec4 index of row m0 + i of x (clamped to the last row).
fn x_row(m0: u32, i: u32) -> u32 {
    return (p.x_offset + min(m0 + i, p.m - 1u) * p.k) >> 2u;
}

fn finish_block(b: Block, c: array<vec4<f32>, 8>) {
    for (var i = 0u; i < ROWS_M; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (b.m0 + i < p.m && b.n0 + j < p.n) {
                finish(b.m0 + i, b.n0 + j, c[i][j]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn matmul_rows_f32(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let b = block_of(wid, nwg, lid);
    if (b.m0 >= p.m) {
        return;
    }
    let x0 = x_row(b.m0, 0u);
    let x1 = x_row(b.m0, 1u);
    let x2 = x_row(b.m0, 2u);
    let x3 = x_row(b.m0, 3u);
    let x4 = x_row(b.m0, 4u);
    let x5 = x_row(b.m0, 5u);
    let x6 = x_row(b.m0, 6u);
    let x7 = x_row(b.m0, 7u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    let words = p.k >> 2u;
    for (var j = 0u; j < words; j++) {
        let w0 = bitcast<vec4<f32>>(w[b.w.x + j]);
        let w1 = bitcast<vec4<f32>>(w[b.w.y + j]);
        let w2 = bitcast<vec4<f32>>(w[b.w.z + j]);
        let w3 = bitcast<vec4<f32>>(w[b.w.w + j]);
        c0 += dots(x[x0 + j], w0, w1, w2, w3);
        c1 += dots(x[x1 + j], w0, w1, w2, w3);
        c2 += dots(x[x2 + j], w0, w1, w2, w3);
        c3 += dots(x[x3 + j], w0, w1, w2, w3);
        c4 += dots(x[x4 + j], w0, w1, w2, w3);
        c5 += dots(x[x5 + j], w0, w1, w2, w3);
        c6 += dots(x[x6 + j], w0, w1, w2, w3);
        c7 += dots(x[x7 + j], w0, w1, w2, w3);
    }
    finish_block(b, array<vec4<f32>, 8>(c0, c1, c2, c3, c4, c5, c6, c7));
}

fn lo(q: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}

fn hi(q: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
}

@compute @workgroup_size(64)
fn matmul_rows_f16(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let b = block_of(wid, nwg, lid);
    if (b.m0 >= p.m) {
        return;
    }
    let x0 = x_row(b.m0, 0u);
    let x1 = x_row(b.m0, 1u);
    let x2 = x_row(b.m0, 2u);
    let x3 = x_row(b.m0, 3u);
    let x4 = x_row(b.m0, 4u);
    let x5 = x_row(b.m0, 5u);
    let x6 = x_row(b.m0, 6u);
    let x7 = x_row(b.m0, 7u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    // A W word holds 8 values: the x words 2i and 2i + 1. An odd last x word (K = 4 mod 8)
    // meets the zero padding of the W row's last word.
    let words = p.k >> 2u;
    let f16_words = (p.k + 4u) >> 3u;
    for (var i = 0u; i < f16_words; i++) {
        let q0 = w[b.w.x + i];
        let q1 = w[b.w.y + i];
        let q2 = w[b.w.z + i];
        let q3 = w[b.w.w + i];
        let j = 2u * i;
        var w0 = lo(q0);
        var w1 = lo(q1);
        var w2 = lo(q2);
        var w3 = lo(q3);
        c0 += dots(x[x0 + j], w0, w1, w2, w3);
        c1 += dots(x[x1 + j], w0, w1, w2, w3);
        c2 += dots(x[x2 + j], w0, w1, w2, w3);
        c3 += dots(x[x3 + j], w0, w1, w2, w3);
        c4 += dots(x[x4 + j], w0, w1, w2, w3);
        c5 += dots(x[x5 + j], w0, w1, w2, w3);
        c6 += dots(x[x6 + j], w0, w1, w2, w3);
        c7 += dots(x[x7 + j], w0, w1, w2, w3);
        if (j + 1u < words) {
            w0 = hi(q0);
            w1 = hi(q1);
            w2 = hi(q2);
            w3 = hi(q3);
            c0 += dots(x[x0 + j + 1u], w0, w1, w2, w3);
            c1 += dots(x[x1 + j + 1u], w0, w1, w2, w3);
            c2 += dots(x[x2 + j + 1u], w0, w1, w2, w3);
            c3 += dots(x[x3 + j + 1u], w0, w1, w2, w3);
            c4 += dots(x[x4 + j + 1u], w0, w1, w2, w3);
            c5 += dots(x[x5 + j + 1u], w0, w1, w2, w3);
            c6 += dots(x[x6 + j + 1u], w0, w1, w2, w3);
            c7 += dots(x[x7 + j + 1u], w0, w1, w2, w3);
        }
    }
    finish_block(b, array<vec4<f32>, 8>(c0, c1, c2, c3, c4, c5, c6, c7));
}
