// sampling: token ids and log-probabilities from logits rows, so that a decode step reads
// back one number per row instead of a vocabulary of logits.
//   argmax: out_ids[row] = the index of the row's largest logit, the first on ties.
//   sample: out_ids[row] = one id drawn from softmax(filtered logits / temperature): top-k
//     keeps logits >= the k-th largest, then top-p removes the tokens whose cumulative
//     probability in ascending (value, id) order is <= 1 - top_p (the most probable stays),
//     as transformers' warpers do; the draw is the first id, in increasing id order, whose
//     cumulative weight exceeds uniforms[row] * total. Thresholds are found by bisection on
//     the order-preserving u32 key of each float32 score, 32 passes over the row each.
//   log_probs: out_values[row] = logits[row, target] - logsumexp(logits[row]).
// Bindings: 0 uniform Params, 1 logits (f32), 2 out_ids (i32), 3 targets (i32),
// 4 out_values (f32), 5 uniforms (f32), 6 scratch weights (f32, one row per logits row).
// Workgroup: 256 invocations per row, reductions in workgroup memory; one workgroup per
// row, flattened over x and y.

struct Params {
    rows: u32,
    vocab: u32,
    x_offset: u32,
    out_offset: u32,      // element offset into out_ids / out_values / targets / uniforms
    scratch_offset: u32,
    top_k: u32,
    temperature: f32,
    top_p: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out_ids: array<i32>;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read_write> out_values: array<f32>;
@group(0) @binding(5) var<storage, read> uniforms: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;

const THREADS: u32 = 256u;
const NONE: u32 = 0xffffffffu;

var<workgroup> reduce_f: array<f32, 256>;
var<workgroup> reduce_u: array<u32, 256>;
var<workgroup> result_f: f32;
var<workgroup> result_u: u32;

// Below every finite logit (an -inf constant is rejected by some WGSL compilers); -inf
// logits still compare below it.
const LOWEST: f32 = -3.40282346e38;  // -FLT_MAX

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// The results of these reductions are uniform across the workgroup (workgroupUniformLoad),
// so control flow may depend on them.
fn sum_f(lid: u32, v: f32) -> f32 {
    reduce_f[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            reduce_f[lid] = reduce_f[lid] + reduce_f[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result_f = reduce_f[0];
    }
    return workgroupUniformLoad(&result_f);
}

fn max_f(lid: u32, v: f32) -> f32 {
    reduce_f[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            reduce_f[lid] = max(reduce_f[lid], reduce_f[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result_f = reduce_f[0];
    }
    return workgroupUniformLoad(&result_f);
}

fn sum_u(lid: u32, v: u32) -> u32 {
    reduce_u[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            reduce_u[lid] = reduce_u[lid] + reduce_u[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result_u = reduce_u[0];
    }
    return workgroupUniformLoad(&result_u);
}

fn min_u(lid: u32, v: u32) -> u32 {
    reduce_u[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            reduce_u[lid] = min(reduce_u[lid], reduce_u[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result_u = reduce_u[0];
    }
    return workgroupUniformLoad(&result_u);
}

fn max_u(lid: u32, v: u32) -> u32 {
    reduce_u[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            reduce_u[lid] = max(reduce_u[lid], reduce_u[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result_u = reduce_u[0];
    }
    return workgroupUniformLoad(&result_u);
}

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = p.x_offset + row * p.vocab;
    var best = LOWEST;
    var best_index = NONE;
    for (var i = lid; i < p.vocab; i += THREADS) {
        let v = logits[base + i];
        if (best_index == NONE || v > best) {
            best = v;
            best_index = i;
        }
    }
    reduce_f[lid] = best;
    reduce_u[lid] = best_index;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            let other = reduce_u[lid + stride];
            let mine = reduce_u[lid];
            let v = reduce_f[lid + stride];
            if (other != NONE && (mine == NONE || v > reduce_f[lid]
                                  || (v == reduce_f[lid] && other < mine))) {
                reduce_f[lid] = v;
                reduce_u[lid] = other;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out_ids[p.out_offset + row] = i32(reduce_u[0]);
    }
}

@compute @workgroup_size(256)
fn log_probs(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = p.x_offset + row * p.vocab;
    var peak = LOWEST;
    for (var i = lid; i < p.vocab; i += THREADS) {
        peak = max(peak, logits[base + i]);
    }
    peak = max_f(lid, peak);
    var total = 0.0;
    for (var i = lid; i < p.vocab; i += THREADS) {
        total += exp(logits[base + i] - peak);
    }
    total = sum_f(lid, total);
    if (lid == 0u) {
        let target_id = u32(targets[p.out_offset + row]);
        out_values[p.out_offset + row] = logits[base + target_id] - (log(total) + peak);
    }
}

// Order-preserving map of a float32 to a u32: a < b as floats <=> key(a) < key(b).
fn key(v: f32) -> u32 {
    let u = bitcast<u32>(v);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

fn score(base: u32, i: u32) -> f32 {
    return logits[base + i] / p.temperature;
}

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let vocab = p.vocab;
    let base = p.x_offset + row * vocab;
    let weights = p.scratch_offset + row * vocab;

    // top-k: the largest key t with count(key >= t) >= k is the k-th largest score's key.
    var keep_key = 0u;
    if (p.top_k > 0u && p.top_k < vocab) {
        var lo = 0u;
        var hi = NONE;
        for (var step = 0u; step < 32u; step++) {
            let mid = lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
            var count = 0u;
            for (var i = lid; i < vocab; i += THREADS) {
                count += select(0u, 1u, key(score(base, i)) >= mid);
            }
            if (sum_u(lid, count) >= p.top_k) {
                lo = mid;
            } else {
                hi = mid - 1u;
            }
        }
        keep_key = lo;
    }

    // Weights exp(score - max) of the kept tokens (the maximum is always kept).
    var peak = LOWEST;
    for (var i = lid; i < vocab; i += THREADS) {
        peak = max(peak, score(base, i));
    }
    peak = max_f(lid, peak);
    var total = 0.0;
    for (var i = lid; i < vocab; i += THREADS) {
        let s = score(base, i);
        let w = select(0.0, exp(s - peak), key(s) >= keep_key);
        scratch[weights + i] = w;
        total += w;
    }
    total = sum_f(lid, total);

    // top-p: in ascending (score, id) order, remove the tokens whose cumulative probability
    // is <= 1 - top_p. They are all tokens with key < boundary plus the first `removed`
    // ids of the tokens whose key equals it.
    var boundary = 0u;
    var cut_id = 0u;
    if (p.top_p < 1.0) {
        let threshold = 1.0 - p.top_p;
        var lo = 0u;
        var hi = NONE;
        for (var step = 0u; step < 32u; step++) {
            let mid = lo + ((hi - lo) >> 1u);
            var mass = 0.0;
            for (var i = lid; i < vocab; i += THREADS) {
                let w = scratch[weights + i];
                mass += select(0.0, w, w > 0.0 && key(score(base, i)) <= mid);
            }
            if (sum_f(lid, mass) / total > threshold) {
                hi = mid;
            } else {
                lo = mid + 1u;
            }
        }
        boundary = lo;
        var below = 0.0;
        var members = 0u;
        var member_weight = 0.0;
        for (var i = lid; i < vocab; i += THREADS) {
            let w = scratch[weights + i];
            let k = key(score(base, i));
            if (w > 0.0 && k < boundary) {
                below += w;
            }
            if (w > 0.0 && k == boundary) {
                members += 1u;
                member_weight = w;
            }
        }
        let below_mass = sum_f(lid, below) / total;
        let count = sum_u(lid, members);
        let q = max_f(lid, member_weight) / total;
        var removed = 0u;
        if (count > 0u && q > 0.0) {
            removed = u32(clamp(floor((threshold - below_mass) / q), 0.0, f32(count)));
            // Rounding may put floor() one too far: re-check the last one removed.
            if (removed > 0u && below_mass + f32(removed) * q > threshold) {
                removed -= 1u;
            }
            if (boundary == key(peak) && removed == count) {
                removed = count - 1u;  // the most probable token always stays
            }
        }
        // The smallest id x with `removed` members below it.
        if (removed > 0u) {
            var lo_id = 0u;
            var hi_id = vocab;
            for (var step = 0u; step < 32u; step++) {
                let mid = lo_id + ((hi_id - lo_id) >> 1u);
                var c = 0u;
                for (var i = lid; i < mid; i += THREADS) {
                    let w = scratch[weights + i];
                    c += select(0u, 1u, w > 0.0 && key(score(base, i)) == boundary);
                }
                if (sum_u(lid, c) >= removed) {
                    hi_id = mid;
                } else {
                    lo_id = mid + 1u;
                }
            }
            cut_id = lo_id;
        }
    }

    // Inverse CDF over ids in increasing order: each invocation owns a contiguous block.
    let block = (vocab + THREADS - 1u) / THREADS;
    let first = min(lid * block, vocab);
    let end = min(first + block, vocab);
    var block_sum = 0.0;
    var last_kept = 0u;
    var any_kept = false;
    for (var i = first; i < end; i++) {
        var w = scratch[weights + i];
        if (p.top_p < 1.0 && w > 0.0) {
            let k = key(score(base, i));
            if (k < boundary || (k == boundary && i < cut_id)) {
                w = 0.0;
                scratch[weights + i] = 0.0;
            }
        }
        if (w > 0.0) {
            last_kept = i;
            any_kept = true;
        }
        block_sum += w;
    }
    last_kept = max_u(lid, select(0u, last_kept, any_kept));
    reduce_f[lid] = block_sum;
    workgroupBarrier();
    var before = 0.0;
    var grand_total = 0.0;
    for (var t = 0u; t < THREADS; t++) {
        if (t == lid) {
            before = grand_total;
        }
        grand_total += reduce_f[t];
    }
    let goal = uniforms[p.out_offset + row] * grand_total;
    var found = NONE;
    if (before <= goal) {
        var running = 0.0;
        for (var i = first; i < end; i++) {
            running += scratch[weights + i];
            if (running > goal - before) {
                found = i;
                break;
            }
        }
    }
    workgroupBarrier();
    found = min_u(lid, found);
    if (lid == 0u) {
        out_ids[p.out_offset + row] = i32(min(found, last_kept));
    }
}
