// linear_half: linear_subgroups.wgsl's float16 decode kernel with float16 arithmetic, for
// adapters with the "shader-f16" feature (WebGPU's f16 type). Same Params, results (to
// float16's precision) and workgroups as matvec_subgroups_f16; the lines below make the loader
// prepend that family.
enable f16;
//!include linear_subgroups.wgsl
// matvec_half: the packed weight words are read as vec4<f16> (binding 6, the same buffer
// linear.wgsl binds as vec4<u32> at 2), x is rounded to f16 once per word for all ROWS rows,
// and each word's 8 products and their first sums are f16 (a GPU's f16 arithmetic runs at
// twice its f32 rate or more, and nothing is unpacked); every word's partial sum is added in
// f32, so rounding does not grow with K. |x| and each product must stay below 65504.
// Whether it pays is the adapter's: on a CPU adapter f16 is emulated through f32 conversions
// and the f16 loads are twice as many (device_profile.py decides, tuning.py measures).
// Binding: 6 W (vec4<f16>, two per vec4<u32> word of linear.wgsl's layout).

@group(0) @binding(6) var<storage, read> w_half: array<vec4<f16>>;

@compute @workgroup_size(64)
fn matvec_half(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let lane = lid & 7u;
    let bp = block_part(wid, nwg);
    let n = bp.x * COLUMNS + (lid >> 3u) * ROWS;
    let last = p.n - 1u;
    var base: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        base[r] = min(n + r, last) * p.w_stride * 2u;
    }
    let range = part_words(bp.y, p.k >> 3u);
    for (var m = 0u; m < p.m; m++) {
        let xv = (p.x_offset + m * p.k) >> 2u;
        var acc = array<vec4<f32>, ROWS>();
        for (var i = range.x + lane; i < range.y; i += 8u) {
            let lo = vec4<f16>(x[xv + 2u * i]);
            let hi = vec4<f16>(x[xv + 2u * i + 1u]);
            for (var r = 0u; r < ROWS; r++) {
                acc[r] += vec4<f32>(w_half[base[r] + 2u * i] * lo
                                    + w_half[base[r] + 2u * i + 1u] * hi);
            }
        }
        finish_rows(lane, bp.y, m, n, acc[0], acc[1], acc[2], acc[3]);
        finish_rows(lane, bp.y, m, n + 4u, acc[4], acc[5], acc[6], acc[7]);
    }
}
