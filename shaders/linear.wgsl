// linear: y[m, n] = act(sum_k x[m, k] * W[n, k] + bias[n]) + residual[m, n], the fused
// linear layer (act: identity or GPT-2's tanh GELU) and, without bias, the tied LM head.
// W is stored [N, K] (a Conv1D [K, N] weight transposed at upload, or an embedding table
// chunk), each row padded to whole vec4<u32>: 4 float32 values, or 8 float16 values packed
// two per word (w_f16 = 1). Arithmetic is float32.
// Output element (m, n) lands at y[y_offset + m * y_stride + y_column + n], so a dispatch per
// table chunk writes its own columns of the logits; the residual uses the same indexing.
// Bindings: 0 uniform Params, 1 x (f32 values read as vec4<f32>), 2 W (vec4<u32>), 3 bias
// (f32), 4 residual (f32), 5 y (f32). Unused bias / residual bindings get a small
// placeholder buffer.
// Entry points and workgroups (linear_subgroups.wgsl adds the faster decode kernels):
//   matvec: small M (decode) without subgroups, or rows that are not whole vec4 words;
//     64 invocations, one output column n each, looping over m.
//   Split K (splits > 1, the matrix-vector kernels only, for devices with many compute
//     units): workgroup w takes column block w % n_blocks and part w / n_blocks of K, and
//     writes its raw partial sums to y as row (part * m + row) of an [splits * m, n] scratch
//     (flags 0); combine_splits then adds the parts (bound as x) and applies the epilogue,
//     one invocation per output, 64 per workgroup.
//   matmul: larger M (prefill) on GPUs, and on every device for rows that are not whole vec4
//     words; 8x8 invocations, each a 4x4 block of a TILE x TILE (32x32) output tile, K in
//     steps of TILE through workgroup memory. CPU adapters take linear_rows.wgsl instead.
// Workgroups are flattened over x and y.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    w_stride: u32,   // vec4<u32> words per W row
    x_offset: u32,   // element offsets of the bound windows
    y_offset: u32,
    y_stride: u32,
    y_column: u32,
    r_offset: u32,
    flags: u32,      // 1 bias, 2 gelu, 4 residual
    w_f16: u32,
    n_blocks: u32,   // output column blocks (of the workgroup grid)
    splits: u32,     // parts of K (matrix-vector kernels), 1 = no split
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn gelu(v: f32) -> f32 {
    // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))); tanh saturates long before |15|, and
    // clamping keeps an exp-based tanh from overflowing to NaN.
    let inner = clamp(0.7978845608028654 * (v * (1.0 + 0.044715 * v * v)), -15.0, 15.0);
    return 0.5 * v * (1.0 + tanh(inner));
}

fn finish(m: u32, n: u32, acc: f32) {
    var v = acc;
    if ((p.flags & 1u) != 0u) {
        v += bias[n];
    }
    if ((p.flags & 2u) != 0u) {
        v = gelu(v);
    }
    let o = m * p.y_stride + p.y_column + n;
    if ((p.flags & 4u) != 0u) {
        v += residual[p.r_offset + o];
    }
    y[p.y_offset + o] = v;
}

// The result of output (m, n), or with split K this part's partial sum of it.
fn store(part: u32, m: u32, n: u32, acc: f32) {
    if (p.splits > 1u) {
        y[p.y_offset + (part * p.m + m) * p.n + n] = acc;
    } else {
        finish(m, n, acc);
    }
}

// The vec4 words [first, end) of K that K-part `part` of `words` covers.
fn part_words(part: u32, words: u32) -> vec2<u32> {
    let per = (words + p.splits - 1u) / p.splits;
    return vec2<u32>(min(part * per, words), min(part * per + per, words));
}

@compute @workgroup_size(64)
fn combine_splits(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (i >= p.m * p.n) {
        return;
    }
    let m = i / p.n;
    let n = i % p.n;
    var acc = 0.0;
    for (var part = 0u; part < p.splits; part++) {
        acc += xs(p.x_offset + (part * p.m + m) * p.n + n);
    }
    finish(m, n, acc);
}

fn weight(n: u32, k: u32) -> f32 {
    if (p.w_f16 == 1u) {
        let word = w[n * p.w_stride + (k >> 3u)][(k >> 1u) & 3u];
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, (k & 1u) == 1u);
    }
    return bitcast<f32>(w[n * p.w_stride + (k >> 2u)][k & 3u]);
}

// x[i] as a flat f32 array.
fn xs(i: u32) -> f32 {
    return x[i >> 2u][i & 3u];
}

// x[i..i+4] from four scalar loads (for rows that do not start on a vec4 boundary).
fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(xs(i), xs(i + 1u), xs(i + 2u), xs(i + 3u));
}

// Partial dot product of x row `xb` (an element index) with W row `n` over the whole vec4<u32>
// words first, first + step, ... < end. Rows starting on a vec4 boundary (x_offset and K
// multiples of 4, the usual case) read x as vectors.
fn dot_words(xb: u32, n: u32, first: u32, end: u32, step: u32) -> f32 {
    let wb = n * p.w_stride;
    var acc = vec4<f32>(0.0);
    let aligned = (xb & 3u) == 0u;
    let xv = xb >> 2u;
    if (p.w_f16 == 1u) {
        if (aligned) {
            for (var i = first; i < end; i += step) {
                let q = w[wb + i];
                acc += vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)) * x[xv + 2u * i];
                acc += vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)) * x[xv + 2u * i + 1u];
            }
        } else {
            for (var i = first; i < end; i += step) {
                let q = w[wb + i];
                let b = xb + 8u * i;
                acc += vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)) * x4(b);
                acc += vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)) * x4(b + 4u);
            }
        }
    } else {
        if (aligned) {
            for (var i = first; i < end; i += step) {
                acc += bitcast<vec4<f32>>(w[wb + i]) * x[xv + i];
            }
        } else {
            for (var i = first; i < end; i += step) {
                acc += bitcast<vec4<f32>>(w[wb + i]) * x4(xb + 4u * i);
            }
        }
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}

fn full_words() -> u32 {
    return select(p.k >> 2u, p.k >> 3u, p.w_f16 == 1u);
}

// The values of a row past its last whole word.
fn dot_tail(xb: u32, n: u32) -> f32 {
    var sum = 0.0;
    for (var k = full_words() * select(4u, 8u, p.w_f16 == 1u); k < p.k; k++) {
        sum += xs(xb + k) * weight(n, k);
    }
    return sum;
}

@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let part = flat / p.n_blocks;
    let n = (flat % p.n_blocks) * 64u + lid;
    if (n >= p.n) {
        return;
    }
    let range = part_words(part, full_words());
    let last = part + 1u == p.splits;
    for (var m = 0u; m < p.m; m++) {
        let xb = p.x_offset + m * p.k;
        var acc = dot_words(xb, n, range.x, range.y, 1u);
        if (last) {
            acc += dot_tail(xb, n);
        }
        store(part, m, n, acc);
    }
}

const TILE: u32 = 32u;
var<workgroup> x_tile: array<f32, 1024>;  // [TILE m][TILE k]
var<workgroup> w_tile: array<f32, 1024>;  // [TILE n][TILE k]

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) local: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let tile = wid.y * nwg.x + wid.x;
    let m0 = (tile / p.n_blocks) * TILE;
    let n0 = (tile % p.n_blocks) * TILE;
    if (m0 >= p.m) {
        return;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let tm = local.y * 4u;
    let tn = local.x * 4u;
    for (var k0 = 0u; k0 < p.k; k0 += TILE) {
        for (var e = lid; e < TILE * TILE; e += 64u) {
            let r = e / TILE;
            let c = e % TILE;
            var xv = 0.0;
            if (m0 + r < p.m && k0 + c < p.k) {
                xv = xs(p.x_offset + (m0 + r) * p.k + k0 + c);
            }
            x_tile[e] = xv;
            var wv = 0.0;
            if (n0 + r < p.n && k0 + c < p.k) {
                wv = weight(n0 + r, k0 + c);
            }
            w_tile[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            let b = vec4<f32>(w_tile[tn * TILE + kk], w_tile[(tn + 1u) * TILE + kk],
                              w_tile[(tn + 2u) * TILE + kk], w_tile[(tn + 3u) * TILE + kk]);
            acc0 += x_tile[tm * TILE + kk] * b;
            acc1 += x_tile[(tm + 1u) * TILE + kk] * b;
            acc2 += x_tile[(tm + 2u) * TILE + kk] * b;
            acc3 += x_tile[(tm + 3u) * TILE + kk] * b;
        }
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm + i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tn + j;
            if (m < p.m && n < p.n) {
                finish(m, n, rows[i][j]);
            }
        }
    }
}
