// stream: reads every vec4<u32> word of a weight buffer once and nothing else, the floor
// that a matrix-vector decode kernel over the same buffer can approach
// (benchmarks/webgpu_stream.py).
// The access pattern is linear_subgroups.wgsl's: lane groups of 8 invocations walk two
// adjacent rows of `row_words` words, every 8th word each, so both see the same memory
// traffic. The sum is written only if it equals an impossible value, which keeps the
// reads from being optimised away without adding writes.
// Bindings: 0 uniform Params, 1 weights (vec4<u32>), 2 sink (u32, written never in practice).
// Workgroup: 64 invocations = ROWS_PER_WORKGROUP (16) rows; flattened over x and y.

struct Params {
    rows: u32,
    row_words: u32,
}

const ROWS_PER_WORKGROUP: u32 = 16u;  // 8 lane groups x 2 rows

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(64)
fn stream(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let lane = lid & 7u;
    let n = (wid.y * nwg.x + wid.x) * ROWS_PER_WORKGROUP + (lid >> 3u) * 2u;
    if (n >= p.rows) {
        return;
    }
    let second = select(n, n + 1u, n + 1u < p.rows);
    var acc = vec4<u32>(0u);
    for (var i = lane; i < p.row_words; i += 8u) {
        acc += weights[n * p.row_words + i] + weights[second * p.row_words + i];
    }
    if (all(acc == vec4<u32>(0x12345678u))) {
        sink[0] = acc.x;
    }
}
