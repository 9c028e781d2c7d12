// attention_subgroups: decode attention (one new position per sequence, S = 1) for devices
// with the "subgroups" feature; attention.wgsl's attend does every other case. Same Params
// and results as attention.wgsl (see there for the cache's strides). The head size must be a
// multiple of 4 (at most 256) and every offset and stride a multiple of 4, which the backend
// checks.
//   attend_decode: one workgroup of 64 invocations per (head, batch row), in four phases:
//   0. the step's key and value of its head into the cache (kv_write's work, done here so
//      that a decode step has one dispatch fewer per layer), then a storage barrier;
//   1. scores: lane groups of 8 invocations each take every 8th key; a lane group reads one
//      key's head slice as vec4 words, lane i every 8th word, and sums them with
//      lane_group_sum (lane_groups.wgsl). The scaled scores go to
//      `scratch` (T floats per workgroup).
//   2. softmax weights exp(score - max) in place in `scratch`, and their sum.
//   3. out = sum_j weight_j V[j] / sum: invocation t owns dimensions 4*(t % (hd/4))..+3 for
//      every (64 / (hd/4))-th key; the partial vectors meet in workgroup memory.
// A workgroup has only five barriers, which CPU implementations such as lavapipe need, as
// they make barriers expensive.
// Bindings: 0 uniform Params, 1 qkv (f32 read as vec4), 2 cache (vec4s of values through
// cache_load4 / cache_store4: attention_cache4.wgsl float32, attention_subgroups_f16.wgsl
// float16), 3 out (f32), 4 scratch (f32, B * nh * T). Workgroups are flattened over x and y.

//!include attention_params.wgsl
//!include lane_groups.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
//!include attention_cache4.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;

const LOWEST: f32 = -3.0e38;
var<workgroup> group_values: array<f32, 8>;
var<workgroup> partials: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn attend_decode(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;  // b * heads + h
    let h = flat % p.heads;
    let b = flat / p.heads;
    if (b >= p.batch) {
        return;
    }
    let lane = lid & 7u;
    let group = lid >> 3u;
    let words = p.head_dim >> 2u;
    let row_words = p.position_stride >> 2u;
    let position = p.start;
    let q = (p.qkv_offset + b * 3u * p.hidden + h * p.head_dim) >> 2u;
    let keys = (p.cache_offset + b * p.batch_stride + h * p.head_stride) >> 2u;
    let values = keys + (p.kv_stride >> 2u);
    let weights = flat * p.max_length;

    // 0. This step's key and value: qkv row b holds them H and 2H values after its query.
    if (lid < words) {
        let kv = q + (p.hidden >> 2u) + lid;
        cache_store4(keys + position * row_words + lid, qkv[kv]);
        cache_store4(values + position * row_words + lid, qkv[kv + (p.hidden >> 2u)]);
    }
    storageBarrier();

    // 1. Scores. Every lane group runs the same number of iterations (keys past the
    // position are computed on a clamped row and dropped), so the shuffles are uniform.
    var group_max = LOWEST;
    for (var first = 0u; first <= position; first += 8u) {
        let j = first + group;
        let key = keys + min(j, position) * row_words;
        var partial = 0.0;
        for (var i = lane; i < words; i += 8u) {
            partial += dot(qkv[q + i], cache_load4(key + i));
        }
        let score = lane_group_sum(partial) * p.scale;
        if (j <= position) {
            group_max = max(group_max, score);
            if (lane == 0u) {
                scratch[weights + j] = score;
            }
        }
    }
    if (lane == 0u) {
        group_values[group] = group_max;
    }
    storageBarrier();
    workgroupBarrier();
    var peak = LOWEST;
    for (var g = 0u; g < 8u; g++) {
        peak = max(peak, group_values[g]);
    }
    workgroupBarrier();

    // 2. Weights and their sum.
    var partial_sum = 0.0;
    for (var j = lid; j <= position; j += 64u) {
        let weight = exp(scratch[weights + j] - peak);
        scratch[weights + j] = weight;
        partial_sum += weight;
    }
    let lane_sum = lane_group_sum(partial_sum);
    if (lane == 0u) {
        group_values[group] = lane_sum;
    }
    storageBarrier();
    workgroupBarrier();
    var total = 0.0;
    for (var g = 0u; g < 8u; g++) {
        total += group_values[g];
    }

    // 3. The weighted sum of the values.
    let key_lanes = 64u / words;  // keys handled side by side
    let d = lid % words;
    let first_key = lid / words;
    var acc = vec4<f32>(0.0);
    if (first_key < key_lanes) {
        for (var j = first_key; j <= position; j += key_lanes) {
            acc += scratch[weights + j] * cache_load4(values + j * row_words + d);
        }
    }
    partials[lid] = acc;
    workgroupBarrier();
    if (lid < words) {
        var sum = vec4<f32>(0.0);
        for (var k = 0u; k < key_lanes; k++) {
            sum += partials[k * words + lid];
        }
        let o = p.out_offset + b * p.hidden + h * p.head_dim + 4u * lid;
        let result = sum / total;
        out[o] = result.x;
        out[o + 1u] = result.y;
        out[o + 2u] = result.z;
        out[o + 3u] = result.w;
    }
}

// attend_prompt: attention for a prompt (S > 1) on CPU adapters whose subgroups are aligned
// groups of exactly 8 invocations (the backend's broadcast probe), the same results as
// attention.wgsl's attend. There a storage load is a loop over the SIMD lanes, so this reads
// each key and value row once per block of PROMPT_QUERIES queries and moves values between
// lanes with subgroupShuffle (a register permute) instead:
//   a workgroup is one subgroup of 8 lanes for PROMPT_QUERIES consecutive queries of one
//   (head, batch row); lane i holds words i and i + 8 of every query (head size <= 64);
//   per block of 8 keys, lane i scores key i against all the queries (the query words shuffled
//   to it), the block updates each query's running max and sum (online softmax, as attend),
//   and lane i accumulates output words i and i + 8 from the 8 value rows, each weight
//   shuffled from the lane that scored its key.
const PROMPT_QUERIES: u32 = 8u;

@compute @workgroup_size(8)
fn attend_prompt(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lane: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let blocks = (p.seq_len + PROMPT_QUERIES - 1u) / PROMPT_QUERIES;
    let s0 = (flat % blocks) * PROMPT_QUERIES;
    let h = (flat / blocks) % p.heads;
    let b = flat / (blocks * p.heads);
    if (b >= p.batch) {
        return;
    }
    let words = p.head_dim >> 2u;
    let low_words = min(words, 8u);
    let row_words = p.position_stride >> 2u;
    let keys = (p.cache_offset + b * p.batch_stride + h * p.head_stride) >> 2u;
    let values = keys + (p.kv_stride >> 2u);
    let word0 = min(lane, words - 1u);
    let word1 = min(lane + 8u, words - 1u);
    var q0: array<vec4<f32>, PROMPT_QUERIES>;
    var q1: array<vec4<f32>, PROMPT_QUERIES>;
    for (var r = 0u; r < PROMPT_QUERIES; r++) {
        let row = b * p.seq_len + min(s0 + r, p.seq_len - 1u);
        let base = (p.qkv_offset + row * 3u * p.hidden + h * p.head_dim) >> 2u;
        q0[r] = select(vec4<f32>(0.0), qkv[base + word0] * p.scale, lane < words);
        q1[r] = select(vec4<f32>(0.0), qkv[base + word1] * p.scale, lane + 8u < words);
    }
    let last = p.start + min(s0 + PROMPT_QUERIES - 1u, p.seq_len - 1u);
    var running_max: array<f32, PROMPT_QUERIES>;
    var running_sum: array<f32, PROMPT_QUERIES>;
    var o0: array<vec4<f32>, PROMPT_QUERIES>;
    var o1: array<vec4<f32>, PROMPT_QUERIES>;
    for (var r = 0u; r < PROMPT_QUERIES; r++) {
        running_max[r] = LOWEST;
    }
    for (var j0 = 0u; j0 <= last; j0 += 8u) {
        // Scores of key j0 + lane (a clamped row past the last key, masked below).
        let key = keys + min(j0 + lane, last) * row_words;
        var s: array<f32, PROMPT_QUERIES>;
        for (var r = 0u; r < PROMPT_QUERIES; r++) {
            s[r] = 0.0;  // explicitly: a var in a loop is not re-zeroed by every compiler
        }
        for (var w = 0u; w < low_words; w++) {
            let k = cache_load4(key + w);
            for (var r = 0u; r < PROMPT_QUERIES; r++) {
                s[r] += dot(subgroupShuffle(q0[r], w), k);
            }
        }
        for (var w = 8u; w < words; w++) {
            let k = cache_load4(key + w);
            for (var r = 0u; r < PROMPT_QUERIES; r++) {
                s[r] += dot(subgroupShuffle(q1[r], w - 8u), k);
            }
        }
        // Online softmax: query r sees the keys up to position start + s0 + r.
        for (var r = 0u; r < PROMPT_QUERIES; r++) {
            let live = j0 + lane <= p.start + s0 + r && s0 + r < p.seq_len;
            let score = select(LOWEST, s[r], live);
            let new_max = max(running_max[r], subgroupMax(score));
            let rescale = exp(running_max[r] - new_max);
            s[r] = select(0.0, exp(score - new_max), live);
            running_sum[r] = running_sum[r] * rescale + subgroupAdd(s[r]);
            running_max[r] = new_max;
            o0[r] *= rescale;
            o1[r] *= rescale;
        }
        // The block's weighted value rows.
        for (var t = 0u; t < 8u; t++) {
            let value = values + min(j0 + t, last) * row_words;
            let v0 = cache_load4(value + word0);
            let v1 = cache_load4(value + word1);
            for (var r = 0u; r < PROMPT_QUERIES; r++) {
                let weight = subgroupShuffle(s[r], t);
                o0[r] += weight * v0;
                o1[r] += weight * v1;
            }
        }
    }
    for (var r = 0u; r < PROMPT_QUERIES; r++) {
        if (s0 + r < p.seq_len) {
            let o = p.out_offset + (b * p.seq_len + s0 + r) * p.hidden + h * p.head_dim;
            if (lane < words) {
                let result = o0[r] / running_sum[r];
                out[o + 4u * lane] = result.x;
                out[o + 4u * lane + 1u] = result.y;
                out[o + 4u * lane + 2u] = result.z;
                out[o + 4u * lane + 3u] = result.w;
            }
            if (lane + 8u < words) {
                let result = o1[r] / running_sum[r];
                out[o + 4u * lane + 32u] = result.x;
                out[o + 4u * lane + 33u] = result.y;
                out[o + 4u * lane + 34u] = result.z;
                out[o + 4u * lane + 35u] = result.w;
            }
        }
    }
}
