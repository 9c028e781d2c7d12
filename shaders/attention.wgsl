// attention: causal multi-head attention through the KV cache.
//   kv_write: cache[b, layer, 0|1, start + s, :] = keys | values of qkv[b, s] (qkv is
//     [B, S, 3H]: queries, keys, values). One invocation per written value; 256 per workgroup.
//   attend: out[b, s, h*hd:(h+1)*hd] = softmax(q . K^T / sqrt(hd)) V over cache positions
//     0..start+s of head h, with an online (running max) softmax over chunks of 64 keys so
//     the cache length is not limited by workgroup memory. One workgroup of 64 invocations
//     per (s, h, b): an invocation scores one key of each chunk and accumulates output
//     dimensions lid, lid+64, lid+128, lid+192 (head size <= MAX_HEAD_DIM, 256).
// The cache is [B, L, 2, T, nh, hd] float32 to the host; in memory, position and head are
// `position_stride` and `head_stride` elements apart ([.., T, nh, hd]: H and hd; the
// backend's own caches are head-major, [.., nh, T, hd]: hd and T * hd, so that one head's
// keys are contiguous). Keys sit at kv 0 and values `kv_stride` (T * H) elements after them.
// The bound window starts at this dispatch's first batch row's (layer, kv 0) slice, element
// `cache_offset` of the binding; batch rows are `batch_stride` elements apart.
// Bindings: 0 uniform Params, 1 qkv (f32), 2 cache (f32, read_write for kv_write, read for
// attend), 3 out (f32).
// Workgroups are flattened over x and y.

//!include attention_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let two_h = 2u * p.hidden;
    if (i >= p.batch * p.seq_len * two_h) {
        return;
    }
    let row = i / two_h;           // b * S + s
    let e = i % two_h;             // key values first, then value values
    let b = row / p.seq_len;
    let s = row % p.seq_len;
    let kv = e / p.hidden;
    let c = e % p.hidden;
    let destination = p.cache_offset + b * p.batch_stride + kv * p.kv_stride
        + (p.start + s) * p.position_stride + (c / p.head_dim) * p.head_stride
        + c % p.head_dim;
    cache[destination] = qkv[p.qkv_offset + row * 3u * p.hidden + p.hidden + e];
}

const CHUNK: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;  // 4 output dimensions per invocation
const LOWEST: f32 = -3.0e38;
var<workgroup> query: array<f32, MAX_HEAD_DIM>;
var<workgroup> weights: array<f32, 64>;

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let s = flat % p.seq_len;
    let h = (flat / p.seq_len) % p.heads;
    let b = flat / (p.seq_len * p.heads);
    if (b >= p.batch) {
        return;
    }
    let hd = p.head_dim;
    let row = b * p.seq_len + s;
    let q_base = p.qkv_offset + row * 3u * p.hidden + h * hd;
    for (var d = lid; d < hd; d += CHUNK) {
        query[d] = qkv[q_base + d];
    }
    workgroupBarrier();
    let position = p.start + s;
    let k_base = p.cache_offset + b * p.batch_stride + h * p.head_stride;
    let v_base = k_base + p.kv_stride;
    var running_max = LOWEST;
    var running_sum = 0.0;
    var acc = vec4<f32>(0.0);  // output dimensions lid + 64 * i
    for (var first = 0u; first <= position; first += CHUNK) {
        let count = min(CHUNK, position + 1u - first);
        var score = LOWEST;
        if (lid < count) {
            let key = k_base + (first + lid) * p.position_stride;
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot += query[d] * cache[key + d];
            }
            score = dot * p.scale;
        }
        weights[lid] = score;
        workgroupBarrier();
        var chunk_max = LOWEST;
        for (var j = 0u; j < count; j++) {
            chunk_max = max(chunk_max, weights[j]);
        }
        let new_max = max(running_max, chunk_max);
        let rescale = exp(running_max - new_max);
        workgroupBarrier();
        weights[lid] = select(0.0, exp(score - new_max), lid < count);
        workgroupBarrier();
        var chunk_sum = 0.0;
        var chunk_acc = vec4<f32>(0.0);
        for (var j = 0u; j < count; j++) {
            let wj = weights[j];
            chunk_sum += wj;
            let value = v_base + (first + j) * p.position_stride;
            for (var i = 0u; i < 4u; i++) {
                let d = lid + i * CHUNK;
                if (d < hd) {
                    chunk_acc[i] += wj * cache[value + d];
                }
            }
        }
        running_sum = running_sum * rescale + chunk_sum;
        acc = acc * rescale + chunk_acc;
        running_max = new_max;
        workgroupBarrier();
    }
    let out_base = p.out_offset + row * p.hidden + h * hd;
    for (var i = 0u; i < 4u; i++) {
        let d = lid + i * CHUNK;
        if (d < hd) {
            out[out_base + d] = acc[i] / running_sum;
        }
    }
}
