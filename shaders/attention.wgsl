// attention: causal multi-head attention through the KV cache.
//   kv_write (attention_cache.wgsl; attention_f16.wgsl: kv_write_f16):
//     cache[b, layer, 0|1, start + s, :] = keys | values of qkv[b, s] (qkv is [B, S, 3H]:
//     queries, keys, values).
//   attend: out[b, s, h*hd:(h+1)*hd] = softmax(q . K^T / sqrt(hd)) V over cache positions
//     0..start+s of head h, with an online (running max) softmax over chunks of 64 keys so
//     the cache length is not limited by workgroup memory. One workgroup of 64 invocations
//     per block of QUERIES (4) consecutive queries of one (h, b): an invocation scores one
//     key of each chunk against the block's queries, and accumulates output dimensions lid,
//     lid+64, lid+128, lid+192 (head size <= MAX_HEAD_DIM, 256) of all of them, so each key
//     and value row is read once per block, not once per query (a prompt's attention 4x
//     fewer loads and barriers).
// The cache is [B, L, 2, T, nh, hd] to the host, float32 here and float16 (two values per u32
// word, element offsets still counted in values) in attention_f16.wgsl; in memory, position and
// head are `position_stride` and `head_stride` elements apart ([.., T, nh, hd]: H and hd; the
// backend's own caches are head-major, [.., nh, T, hd]: hd and T * hd, so that one head's keys
// are contiguous). Keys sit at kv 0 and values `kv_stride` (T * H) elements after them. The
// bound window starts at this dispatch's first batch row's (layer, kv 0) slice, element
// `cache_offset` of the binding; batch rows are `batch_stride` elements apart.
// Bindings: 0 uniform Params, 1 qkv (f32), 2 cache (read_write; read through cache_load),
// 3 out (f32).
// Workgroups are flattened over x and y.

//!include attention_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
//!include attention_cache.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Where value e (keys first, then values: e < 2H) of row b * S + s lands in the cache.
fn kv_destination(row: u32, e: u32) -> u32 {
    let b = row / p.seq_len;
    let s = row % p.seq_len;
    let c = e % p.hidden;
    return p.cache_offset + b * p.batch_stride + (e / p.hidden) * p.kv_stride
        + (p.start + s) * p.position_stride + (c / p.head_dim) * p.head_stride
        + c % p.head_dim;
}

// qkv[b, s]'s key or value e (e < 2H).
fn kv_source(row: u32, e: u32) -> f32 {
    return qkv[p.qkv_offset + row * 3u * p.hidden + p.hidden + e];
}

const CHUNK: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;  // 4 output dimensions per invocation
const QUERIES: u32 = 4u;  // queries per workgroup (components of the vec4s below)
const LOWEST: f32 = -3.0e38;
var<workgroup> query: array<f32, 1024>;  // [QUERIES][MAX_HEAD_DIM]
var<workgroup> weights: array<f32, 256>;  // [QUERIES][CHUNK]

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let blocks = (p.seq_len + QUERIES - 1u) / QUERIES;
    let s0 = (flat % blocks) * QUERIES;
    let h = (flat / blocks) % p.heads;
    let b = flat / (blocks * p.heads);
    if (b >= p.batch) {
        return;
    }
    let hd = p.head_dim;
    for (var e = lid; e < QUERIES * hd; e += CHUNK) {
        let row = b * p.seq_len + min(s0 + e / hd, p.seq_len - 1u);
        query[(e / hd) * MAX_HEAD_DIM + e % hd] = qkv[p.qkv_offset + row * 3u * p.hidden
                                                      + h * hd + e % hd];
    }
    workgroupBarrier();
    // Query i sees the keys up to positions[i]; the block's rows past S repeat the last.
    let positions = vec4<u32>(p.start) + min(vec4<u32>(s0) + vec4<u32>(0u, 1u, 2u, 3u),
                                             vec4<u32>(p.seq_len - 1u));
    let last_position = positions.w;
    let k_base = p.cache_offset + b * p.batch_stride + h * p.head_stride;
    let v_base = k_base + p.kv_stride;
    var running_max = vec4<f32>(LOWEST);
    var running_sum = vec4<f32>(0.0);
    // acc_c[i]: output dimension lid + 64 * c of query i.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var first = 0u; first <= last_position; first += CHUNK) {
        let count = min(CHUNK, last_position + 1u - first);
        let j = first + lid;
        var score = vec4<f32>(LOWEST);
        if (lid < count) {
            let key = k_base + j * p.position_stride;
            var dots = vec4<f32>(0.0);
            for (var d = 0u; d < hd; d++) {
                let k = cache_load(key + d);
                dots += k * vec4<f32>(query[d], query[MAX_HEAD_DIM + d],
                                      query[2u * MAX_HEAD_DIM + d], query[3u * MAX_HEAD_DIM + d]);
            }
            score = select(vec4<f32>(LOWEST), dots * p.scale, vec4<u32>(j) <= positions);
        }
        for (var i = 0u; i < QUERIES; i++) {
            weights[i * CHUNK + lid] = score[i];
        }
        workgroupBarrier();
        var chunk_max = vec4<f32>(LOWEST);
        for (var t = 0u; t < count; t++) {
            chunk_max = max(chunk_max, vec4<f32>(weights[t], weights[CHUNK + t],
                                                 weights[2u * CHUNK + t], weights[3u * CHUNK + t]));
        }
        let new_max = max(running_max, chunk_max);
        let rescale = exp(running_max - new_max);
        workgroupBarrier();
        let live = vec4<bool>(lid < count) & (vec4<u32>(j) <= positions);
        let weight = select(vec4<f32>(0.0), exp(score - new_max), live);
        for (var i = 0u; i < QUERIES; i++) {
            weights[i * CHUNK + lid] = weight[i];
        }
        workgroupBarrier();
        var chunk_sum = vec4<f32>(0.0);
        var c0 = vec4<f32>(0.0);
        var c1 = vec4<f32>(0.0);
        var c2 = vec4<f32>(0.0);
        var c3 = vec4<f32>(0.0);
        for (var t = 0u; t < count; t++) {
            let wt = vec4<f32>(weights[t], weights[CHUNK + t], weights[2u * CHUNK + t],
                               weights[3u * CHUNK + t]);
            chunk_sum += wt;
            let value = v_base + (first + t) * p.position_stride + lid;
            // Each value is loaded once for the block's queries.
            if (lid < hd) {
                c0 += wt * cache_load(value);
            }
            if (lid + CHUNK < hd) {
                c1 += wt * cache_load(value + CHUNK);
            }
            if (lid + 2u * CHUNK < hd) {
                c2 += wt * cache_load(value + 2u * CHUNK);
            }
            if (lid + 3u * CHUNK < hd) {
                c3 += wt * cache_load(value + 3u * CHUNK);
            }
        }
        running_sum = running_sum * rescale + chunk_sum;
        acc0 = acc0 * rescale + c0;
        acc1 = acc1 * rescale + c1;
        acc2 = acc2 * rescale + c2;
        acc3 = acc3 * rescale + c3;
        running_max = new_max;
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0 / running_sum, acc1 / running_sum, acc2 / running_sum,
                                   acc3 / running_sum);
    for (var i = 0u; i < QUERIES; i++) {
        if (s0 + i < p.seq_len) {
            let out_base = p.out_offset + (b * p.seq_len + s0 + i) * p.hidden + h * hd;
            for (var c = 0u; c < 4u; c++) {
                let d = lid + c * CHUNK;
                if (d < hd) {
                    out[out_base + d] = accs[c][i];
                }
            }
        }
    }
}
