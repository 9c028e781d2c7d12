// linear_broadcast: the prefill (M > 4) kernels of linear.wgsl for CPU adapters whose
// subgroups are aligned groups of exactly 8 invocations (lavapipe; the backend checks once
// with probe_broadcast). Same Params, bindings and results as linear.wgsl's kernels; the line
// below makes the loader prepend it.
//!include linear.wgsl
// Why this shape: a CPU adapter runs a subgroup as one SIMD vector, and a storage load whose
// address differs per invocation is a loop over the lanes, many times dearer than the
// arithmetic; loads, not multiply-adds, are what a prefill product costs there. Here every
// value loaded is used by many outputs:
// - invocation n owns one output column (W row n) for BROADCAST_ROWS rows of x, and loads its
//   W row as whole vec4 words;
// - the 8 lanes of a subgroup load 8 consecutive vec4 words of an x row (32 values of K) once,
//   one word each, and subgroupBroadcast hands every word to all 8 lanes (a register
//   permute, not a load).
// So a chunk of 32 values of K costs each invocation 8 W words (f16: 4) and BROADCAST_ROWS x
// words for 32 * BROADCAST_ROWS multiply-adds, against 12 loads per 128 in linear_rows.wgsl.
// K must be a multiple of 32 and x rows start on a vec4 boundary (the backend checks).
// Workgroup: 64 invocations = 64 output columns x BROADCAST_ROWS rows of x; the row block
// varies fastest over the flattened x * y grid, so the workgroups that run one after the other
// share their W rows in cache.

const BROADCAST_ROWS: u32 = 8u;  // more rows' accumulators spill out of the registers
const BROADCAST_COLUMNS: u32 = 64u;

struct Tile {
    m0: u32,
    n: u32,
    w: u32,  // first word of W row n (clamped to the last row)
}

fn tile_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Tile {
    let tile = wid.y * nwg.x + wid.x;
    let row_blocks = (p.m + BROADCAST_ROWS - 1u) / BROADCAST_ROWS;
    let n = (tile / row_blocks) * BROADCAST_COLUMNS + lid;
    return Tile((tile % row_blocks) * BROADCAST_ROWS, n, min(n, p.n - 1u) * p.w_stride);
}

// acc[r] of lane `lane` plus x row m0 + r's 32 values of chunk c times W values w0..w7.
fn chunk_dots(t: Tile, lane: u32, c: u32, acc: ptr<function, array<f32, BROADCAST_ROWS>>,
              w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>, w4: vec4<f32>,
              w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>) {
    for (var r = 0u; r < BROADCAST_ROWS; r++) {
        let row = (p.x_offset + min(t.m0 + r, p.m - 1u) * p.k) >> 2u;
        let a = x[row + 8u * c + lane];
        (*acc)[r] += dot(subgroupBroadcast(a, 0u), w0) + dot(subgroupBroadcast(a, 1u), w1)
            + dot(subgroupBroadcast(a, 2u), w2) + dot(subgroupBroadcast(a, 3u), w3)
            + dot(subgroupBroadcast(a, 4u), w4) + dot(subgroupBroadcast(a, 5u), w5)
            + dot(subgroupBroadcast(a, 6u), w6) + dot(subgroupBroadcast(a, 7u), w7);
    }
}

fn finish_tile(t: Tile, acc: array<f32, BROADCAST_ROWS>) {
    if (t.n < p.n) {
        for (var r = 0u; r < BROADCAST_ROWS; r++) {
            if (t.m0 + r < p.m) {
                finish(t.m0 + r, t.n, acc[r]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn matmul_broadcast_f32(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wid, nwg, lid);
    var acc: array<f32, BROADCAST_ROWS>;
    for (var c = 0u; c < (p.k >> 5u); c++) {
        let i = t.w + 8u * c;
        chunk_dots(t, lid & 7u, c, &acc, bitcast<vec4<f32>>(w[i]),
                   bitcast<vec4<f32>>(w[i + 1u]), bitcast<vec4<f32>>(w[i + 2u]),
                   bitcast<vec4<f32>>(w[i + 3u]), bitcast<vec4<f32>>(w[i + 4u]),
                   bitcast<vec4<f32>>(w[i + 5u]), bitcast<vec4<f32>>(w[i + 6u]),
                   bitcast<vec4<f32>>(w[i + 7u]));
    }
    finish_tile(t, acc);
}

fn low(q: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}

fn high(q: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
}

@compute @workgroup_size(64)
fn matmul_broadcast_f16(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wid, nwg, lid);
    var acc: array<f32, BROADCAST_ROWS>;
    for (var c = 0u; c < (p.k >> 5u); c++) {
        let i = t.w + 4u * c;
        let q0 = w[i];
        let q1 = w[i + 1u];
        let q2 = w[i + 2u];
        let q3 = w[i + 3u];
        chunk_dots(t, lid & 7u, c, &acc, low(q0), high(q0), low(q1), high(q1), low(q2),
                   high(q2), low(q3), high(q3));
    }
    finish_tile(t, acc);
}

// probe_broadcast: y[i] = what lane 3 of i's subgroup holds, lane i holding i, plus p.m (0);
// the backend checks once that this is (i & ~7) + 3, i.e. subgroups of exactly 8 aligned
// invocations.
@compute @workgroup_size(64)
fn probe_broadcast(@builtin(local_invocation_index) lid: u32) {
    y[lid] = subgroupBroadcast(f32(lid), 3u) + f32(p.m);
}
