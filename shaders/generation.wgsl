// generation: the per-step operations of beam and contrastive search and of the logits
// processors, on the device, so that a step reads back only what the host decides with
// (ids and scores of k candidates, one penalty per candidate), never a row of logits.
//   log_softmax: out[r, i] = x[r, i] - max_r - log(sum_j exp(x[r, j] - max_r)); one
//     workgroup of 256 invocations per row (reductions in workgroup memory).
//   top_k: the k (<= MAX_K) largest values of each row, largest first, equal values in index
//     order; out[r] = k values (f32 bits) then k indices. One workgroup of 64 per row: each
//     invocation keeps a sorted list of its every-64th elements, invocation 0 merges them.
//   scatter_tokens: out[targets[e]] = value (mode 0, token masks), or out[t] * penalty where
//     < 0, else out[t] / penalty (mode 1, repetition penalty; targets distinct), for e <
//     entries; targets are flat element indices. One invocation per entry, 64 per workgroup.
//   cosine_scores: scores[n * S + s] = cos(context[n / per_row, s], candidates[n]), no epsilon;
//     one invocation per (n, s), 64 per workgroup. row_max: out[n] = max over s of them; one
//     invocation per candidate, 64 per workgroup.
//   cache_gather / cache_scatter (beam search's reorder): with a head-major KV cache
//     [B, L, 2, nh, T, hd], gather copies positions [start, start + count) of row
//     indices[b] into slab[b, L, 2, nh, count, hd]; scatter copies the slab back into row b.
//     One invocation per element, 256 per workgroup.
// Bindings: 0 uniform Params, 1 x (f32; for scatter_tokens, targets as u32), 2 out (f32 or
// u32 words), 3 indices (i32), 4 context (f32), 5 scores scratch (f32). Workgroups are
// flattened over x and y.

struct Params {
    rows: u32,
    width: u32,       // elements per row (V; for cosine H; for the cache hd)
    x_offset: u32,
    out_offset: u32,
    k: u32,
    entries: u32,     // scatter entries; cosine: candidates N; cache: elements of the slab
    mode: u32,
    value: f32,       // mask value, or the repetition penalty
    per_row: u32,     // candidates per context row
    seq_len: u32,     // context positions S; cache: positions T
    count: u32,       // cache: positions copied
    start: u32,       // cache: first position copied
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> indices: array<i32>;
@group(0) @binding(4) var<storage, read> context: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;

const LOWEST: f32 = -3.40282346e38;  // -FLT_MAX; -inf still compares below it
const NONE: u32 = 0xffffffffu;
const MAX_K: u32 = 16u;

var<workgroup> reduce: array<f32, 256>;
var<workgroup> list_values: array<f32, 1024>;  // 64 invocations x MAX_K
var<workgroup> list_ids: array<u32, 1024>;

fn flat_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn reduce_256(lid: u32, v: f32, take_max: bool) -> f32 {
    reduce[lid] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            let a = reduce[lid];
            let b = reduce[lid + stride];
            reduce[lid] = select(a + b, max(a, b), take_max);
        }
        workgroupBarrier();
    }
    let result = reduce[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = p.x_offset + row * p.width;
    var peak = LOWEST;
    for (var i = lid; i < p.width; i += 256u) {
        peak = max(peak, x[base + i]);
    }
    peak = reduce_256(lid, peak, true);
    var total = 0.0;
    for (var i = lid; i < p.width; i += 256u) {
        total += exp(x[base + i] - peak);
    }
    let log_norm = log(reduce_256(lid, total, false)) + peak;
    let o = p.out_offset + row * p.width;
    for (var i = lid; i < p.width; i += 256u) {
        out[o + i] = x[base + i] - log_norm;
    }
}

// Whether (va, ia) comes before (vb, ib): larger value first, then lower index; NONE (an
// empty slot) comes last.
fn before(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if (ib == NONE) {
        return ia != NONE;
    }
    return ia != NONE && (va > vb || (va == vb && ia < ib));
}

@compute @workgroup_size(64)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = p.x_offset + row * p.width;
    let mine = lid * MAX_K;
    for (var j = 0u; j < p.k; j++) {
        list_ids[mine + j] = NONE;
        list_values[mine + j] = LOWEST;
    }
    let last = mine + p.k - 1u;
    for (var i = lid; i < p.width; i += 64u) {
        let v = x[base + i];
        if (!before(v, i, list_values[last], list_ids[last])) {
            continue;
        }
        // Insertion into the sorted list (ascending i within an invocation keeps ties in
        // index order).
        var j = last;
        while (j > mine && before(v, i, list_values[j - 1u], list_ids[j - 1u])) {
            list_values[j] = list_values[j - 1u];
            list_ids[j] = list_ids[j - 1u];
            j -= 1u;
        }
        list_values[j] = v;
        list_ids[j] = i;
    }
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    var heads: array<u32, 64>;
    let o = p.out_offset + row * 2u * p.k;
    for (var j = 0u; j < p.k; j++) {
        var best = 0u;
        for (var t = 1u; t < 64u; t++) {
            let a = t * MAX_K + heads[t];
            let b = best * MAX_K + heads[best];
            if (heads[t] < p.k && (heads[best] >= p.k
                    || before(list_values[a], list_ids[a], list_values[b], list_ids[b]))) {
                best = t;
            }
        }
        let e = best * MAX_K + heads[best];
        out[o + j] = list_values[e];
        out[o + p.k + j] = bitcast<f32>(list_ids[e]);
        heads[best] += 1u;
    }
}

@compute @workgroup_size(64)
fn scatter_tokens(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg) * 64u + lid;
    if (e >= p.entries) {
        return;
    }
    let t = p.out_offset + u32(indices[e]);
    if (p.mode == 0u) {
        out[t] = p.value;
    } else {
        let v = out[t];
        out[t] = select(v / p.value, v * p.value, v < 0.0);
    }
}

@compute @workgroup_size(64)
fn cosine_scores(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg) * 64u + lid;
    if (i >= p.entries * p.seq_len) {
        return;
    }
    let n = i / p.seq_len;
    let s = i % p.seq_len;
    let a = p.x_offset + n * p.width;
    let b = ((n / p.per_row) * p.seq_len + s) * p.width;
    var dot = 0.0;
    var aa = 0.0;
    var bb = 0.0;
    for (var d = 0u; d < p.width; d++) {
        let u = x[a + d];
        let v = context[b + d];
        dot += u * v;
        aa += u * u;
        bb += v * v;
    }
    scores[i] = dot / (sqrt(aa) * sqrt(bb));
}

@compute @workgroup_size(64)
fn row_max(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let n = flat_id(wid, nwg) * 64u + lid;
    if (n >= p.entries) {
        return;
    }
    var best = LOWEST;
    for (var s = 0u; s < p.seq_len; s++) {
        best = max(best, scores[n * p.seq_len + s]);
    }
    out[n] = best;
}

// Element e of the slab [B, L, 2, nh, count, hd] and its place in row `row` of the cache.
fn cache_element(e: u32, row: u32) -> u32 {
    let d = e % p.width;
    let t = (e / p.width) % p.count;
    let slice = (e / (p.width * p.count)) % p.k;  // (layer, kv, head), k = L * 2 * nh
    return ((row * p.k + slice) * p.seq_len + p.start + t) * p.width + d;
}

@compute @workgroup_size(256)
fn cache_gather(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg) * 256u + lid;
    if (e >= p.entries) {
        return;
    }
    let b = e / (p.width * p.count * p.k);
    out[e] = x[p.x_offset + cache_element(e, u32(indices[b]))];
}

@compute @workgroup_size(256)
fn cache_scatter(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg) * 256u + lid;
    if (e >= p.entries) {
        return;
    }
    let b = e / (p.width * p.count * p.k);
    out[p.out_offset + cache_element(e, b)] = x[e];
}
