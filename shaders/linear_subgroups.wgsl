// linear_subgroups: the decode (small M) kernel of linear.wgsl for devices with the
// "subgroups" feature and subgroups of at least 8 invocations. Same Params, bindings and
// results as linear.wgsl's matvec; the lines below make the loader prepend linear.wgsl and
// the lane-group reduction.
//!include linear.wgsl
//!include lane_groups.wgsl
// matvec_subgroups_f32 / matvec_subgroups_f16: 8 consecutive invocations (a lane group
// inside one subgroup) share ROWS adjacent W rows: each reads every 8th vec4 word of the rows,
// so a lane group streams contiguous memory and loads each x vector once for all its rows;
// the partial sums meet in lane_group_sum. Eight rows rather than four: on CPU adapters a
// load costs more than the arithmetic it feeds, and more rows share each x load (sixteen
// rows' accumulators no longer fit the registers and spill). Rows must be whole words (K a
// multiple of 4 for f32, of 8 for f16) and x rows start on a vec4 boundary; other shapes use
// linear.wgsl's matvec. Each dtype has its own entry point, so that the inner loop is short
// and carries no dtype branch: not every shader compiler hoists a uniform branch out of a
// loop, and CPU implementations such as lavapipe run the branching loop markedly slower.
// Workgroup: 64 invocations = 8 lane groups = COLUMNS output columns, which the backend
// sizes its grid by; flattened over x and y. With split K (linear.wgsl) a workgroup covers
// its columns over one part of K.

const ROWS: u32 = 8u;  // W rows per lane group
const COLUMNS: u32 = 64u;  // 8 lane groups x ROWS

fn horizontal(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The workgroup's column block and part of K.
fn block_part(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let flat = wid.y * nwg.x + wid.x;
    return vec2<u32>(flat % p.n_blocks, flat / p.n_blocks);
}

// Lane 0 writes the four rows' results (every lane took part in the shuffles, so rows past
// N were clamped, not skipped).
fn finish_rows(lane: u32, part: u32, m: u32, n: u32, a0: vec4<f32>, a1: vec4<f32>,
               a2: vec4<f32>, a3: vec4<f32>) {
    let s = vec4<f32>(lane_group_sum(horizontal(a0)), lane_group_sum(horizontal(a1)),
                      lane_group_sum(horizontal(a2)), lane_group_sum(horizontal(a3)));
    if (lane == 0u) {
        for (var r = 0u; r < 4u; r++) {
            if (n + r < p.n) {
                store(part, m, n + r, s[r]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn matvec_subgroups_f32(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let lane = lid & 7u;
    let bp = block_part(wid, nwg);
    let n = bp.x * COLUMNS + (lid >> 3u) * ROWS;
    let last = p.n - 1u;
    var base: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        base[r] = min(n + r, last) * p.w_stride;
    }
    let range = part_words(bp.y, p.k >> 2u);
    for (var m = 0u; m < p.m; m++) {
        let xv = (p.x_offset + m * p.k) >> 2u;
        var acc = array<vec4<f32>, ROWS>();
        for (var i = range.x + lane; i < range.y; i += 8u) {
            let xi = x[xv + i];
            for (var r = 0u; r < ROWS; r++) {
                acc[r] += bitcast<vec4<f32>>(w[base[r] + i]) * xi;
            }
        }
        finish_rows(lane, bp.y, m, n, acc[0], acc[1], acc[2], acc[3]);
        finish_rows(lane, bp.y, m, n + 4u, acc[4], acc[5], acc[6], acc[7]);
    }
}

@compute @workgroup_size(64)
fn matvec_subgroups_f16(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let lane = lid & 7u;
    let bp = block_part(wid, nwg);
    let n = bp.x * COLUMNS + (lid >> 3u) * ROWS;
    let last = p.n - 1u;
    var base: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        base[r] = min(n + r, last) * p.w_stride;
    }
    let range = part_words(bp.y, p.k >> 3u);
    for (var m = 0u; m < p.m; m++) {
        let xv = (p.x_offset + m * p.k) >> 2u;
        var acc = array<vec4<f32>, ROWS>();
        for (var i = range.x + lane; i < range.y; i += 8u) {
            let lo = x[xv + 2u * i];
            let hi = x[xv + 2u * i + 1u];
            for (var r = 0u; r < ROWS; r++) {
                let q = w[base[r] + i];
                acc[r] += vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)) * lo
                    + vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)) * hi;
            }
        }
        finish_rows(lane, bp.y, m, n, acc[0], acc[1], acc[2], acc[3]);
        finish_rows(lane, bp.y, m, n + 4u, acc[4], acc[5], acc[6], acc[7]);
    }
}

// probe_lane_groups: y[i] = the sum of i's lane group's invocation indices plus p.m (0), which
// the backend checks once to learn whether lane groups work on this device.
@compute @workgroup_size(64)
fn probe_lane_groups(@builtin(local_invocation_index) lid: u32) {
    y[lid] = lane_group_sum(f32(lid)) + f32(p.m);
}
