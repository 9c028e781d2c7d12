// attention_blocks: prompt attention (S > 1) in blocks, flash-attention style, for devices
// with many compute units (the "large" device profile). The same results as attention.wgsl's
// attend, which reads every key and value row once per 4 queries; this reads each once per
// BLOCK_QUERIES (16) queries, from workgroup memory, so a long prompt is bounded by
// arithmetic rather than by loads from the cache.
//   attend_blocks: one workgroup of 64 invocations per block of BLOCK_QUERIES consecutive
//   queries of one (head, batch row). The block's queries (scaled by 1/sqrt(hd)) are staged
//   once; then per tile of BLOCK_KEYS (32) cache positions, up to the block's last visible
//   position:
//   1. the tile's keys are staged in workgroup memory (positions past the block's last are
//      zeros, so that a poisoned or stale row never meets a zero weight as NaN * 0);
//   2. invocation t scores query t / 4 against keys t % 4, t % 4 + 4, ... (8 keys), masked
//      causally (key position <= the query's position start + s), into `scores`;
//   3. the tile's values replace its keys, and the 4 invocations of a query take the tile's
//      maximum of that query's scores (the same value, read the same way, in all four);
//   4. online softmax: each invocation rescales its running sum and its 16 output
//      dimensions (t % 4, t % 4 + 4, ...) by exp(old max - new max) and adds the tile's
//      weights exp(score - max) times the value rows.
//   The output is written once, divided by the running sum. Four barriers per tile.
// No subgroup operations, so the kernel does not depend on a device's subgroup size. The
// head size must be at most MAX_HEAD_DIM (64, every GPT-2), which keeps the tiles within
// WebGPU's default 16 KiB of workgroup memory; the backend uses attend for larger heads.
// The step's keys and values are written to the cache beforehand by attention.wgsl's
// kv_write (another workgroup's queries read them, which one dispatch cannot order).
// Params are attention_params.wgsl's (same names and meaning: the cache's layout and strides
// are described in attention.wgsl) and first_query: queries first_query .. S - 1 are
// computed, written as rows 0 .. S - 1 - first_query of `out` (last_position_only computes
// only the last query).
// Bindings: 0 uniform Params, 1 qkv (f32), 2 cache (read through cache_load:
// attention_load.wgsl float32, attention_load_f16.wgsl float16), 3 out (f32).
// Workgroups are flattened over x and y.

//!include attention_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
//!include attention_load.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const BLOCK_QUERIES: u32 = 16u;
const BLOCK_KEYS: u32 = 32u;
const MAX_HEAD_DIM: u32 = 64u;
// Rows of the tiles are ROW (not 64) floats apart, so that the 4 invocations of a query,
// reading 4 different key rows at the same dimension, hit different memory banks.
const ROW: u32 = 65u;
const LOWEST: f32 = -3.0e38;
var<workgroup> queries: array<f32, 1040>;  // [BLOCK_QUERIES][ROW]
var<workgroup> rows: array<f32, 2080>;  // [BLOCK_KEYS][ROW]: the tile's keys, then values
var<workgroup> scores: array<f32, 512>;  // [BLOCK_QUERIES][BLOCK_KEYS]

// The tile's rows of keys or values (base: the head's first position), zeros past `last`.
fn stage(base: u32, j0: u32, last: u32, lid: u32) {
    if (lid < p.head_dim) {
        for (var c = 0u; c < BLOCK_KEYS; c++) {
            var v = 0.0;
            if (j0 + c <= last) {
                v = cache_load(base + (j0 + c) * p.position_stride + lid);
            }
            rows[c * ROW + lid] = v;
        }
    }
}

@compute @workgroup_size(64)
fn attend_blocks(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let count = p.seq_len - p.first_query;  // queries computed
    let blocks = (count + BLOCK_QUERIES - 1u) / BLOCK_QUERIES;
    let s0 = p.first_query + (flat % blocks) * BLOCK_QUERIES;
    let h = (flat / blocks) % p.heads;
    let b = flat / (blocks * p.heads);
    if (b >= p.batch) {
        return;
    }
    let hd = p.head_dim;
    // The block's rows past S repeat the last query (computed, never written).
    if (lid < hd) {
        for (var r = 0u; r < BLOCK_QUERIES; r++) {
            let row = b * p.seq_len + min(s0 + r, p.seq_len - 1u);
            queries[r * ROW + lid] = qkv[p.qkv_offset + row * 3u * p.hidden + h * hd + lid]
                                     * p.scale;
        }
    }
    let r = lid >> 2u;  // this invocation's query in the block
    let col = lid & 3u;  // its first key of a tile and its first output dimension
    let position = p.start + min(s0 + r, p.seq_len - 1u);  // the query sees keys 0..position
    let last = p.start + min(s0 + BLOCK_QUERIES - 1u, p.seq_len - 1u);  // the block's last
    let keys = p.cache_offset + b * p.batch_stride + h * p.head_stride;
    let values = keys + p.kv_stride;
    var running_max = LOWEST;
    var running_sum = 0.0;
    var acc: array<f32, 16>;  // output dimensions col + 4 * i
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;  // explicitly: a var in a loop is not re-zeroed by every compiler
    }
    for (var j0 = 0u; j0 <= last; j0 += BLOCK_KEYS) {
        workgroupBarrier();  // the previous tile's values are read (the first: queries staged)
        stage(keys, j0, last, lid);
        workgroupBarrier();
        var s: array<f32, 8>;
        for (var i = 0u; i < 8u; i++) {
            s[i] = 0.0;
        }
        for (var d = 0u; d < hd; d++) {
            let q = queries[r * ROW + d];
            for (var i = 0u; i < 8u; i++) {
                s[i] += q * rows[(col + 4u * i) * ROW + d];
            }
        }
        for (var i = 0u; i < 8u; i++) {
            let c = col + 4u * i;
            scores[r * BLOCK_KEYS + c] = select(LOWEST, s[i], j0 + c <= position);
        }
        workgroupBarrier();  // scores written, keys read
        stage(values, j0, last, lid);
        // Key 0 is visible to every query, so the first tile makes the maximum finite and
        // masked keys' weights exp(LOWEST - max) are 0; they are also skipped explicitly.
        var tile_max = LOWEST;
        for (var c = 0u; c < BLOCK_KEYS; c++) {
            tile_max = max(tile_max, scores[r * BLOCK_KEYS + c]);
        }
        workgroupBarrier();  // values staged
        let new_max = max(running_max, tile_max);
        let rescale = exp(running_max - new_max);
        running_max = new_max;
        for (var i = 0u; i < 16u; i++) {
            acc[i] *= rescale;
        }
        var tile_sum = 0.0;
        let visible = min(BLOCK_KEYS, position + 1u - min(j0, position + 1u));
        for (var c = 0u; c < visible; c++) {
            let weight = exp(scores[r * BLOCK_KEYS + c] - new_max);
            tile_sum += weight;
            for (var i = 0u; i < 16u; i++) {
                acc[i] += weight * rows[c * ROW + col + 4u * i];
            }
        }
        running_sum = running_sum * rescale + tile_sum;
    }
    if (s0 + r < p.seq_len) {
        let o = p.out_offset + (b * count + s0 + r - p.first_query) * p.hidden + h * hd;
        for (var i = 0u; i < 16u; i++) {
            let d = col + 4u * i;
            if (d < hd) {
                out[o + d] = acc[i] / running_sum;
            }
        }
    }
}
