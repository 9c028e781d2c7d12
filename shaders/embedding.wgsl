// embedding: hidden[row, h] = token_table[ids[row], h] + position_table[start + row % S, h].
// The token table may be split into row chunks (one buffer each, so that every chunk fits a
// storage binding); one dispatch per chunk writes the rows whose ids fall in that chunk.
// Table rows are u32 words: one float32 each, or two packed float16 (table_f16 = 1).
// Bindings: 0 uniform Params, 1 ids (i32), 2 table chunk (u32 words), 3 position table
// (f32), 4 hidden output (f32).
// Workgroup: 64 invocations along h; workgroups flattened over (h blocks, rows).

struct Params {
    rows: u32,           // B * S
    seq_len: u32,        // S
    hidden: u32,         // H
    table_stride: u32,   // u32 words per table row
    chunk_first: u32,    // first token id held by this chunk
    chunk_rows: u32,
    start_position: u32,
    table_f16: u32,
    ids_offset: u32,     // element offsets of the bound windows
    position_offset: u32,
    out_offset: u32,
    h_blocks: u32,       // ceil(H / 64)
    row_first: u32,      // global row of this dispatch's first row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> positions: array<f32>;
@group(0) @binding(4) var<storage, read_write> hidden: array<f32>;

@compute @workgroup_size(64)
fn embed(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let flat = wid.y * nwg.x + wid.x;
    let row = flat / p.h_blocks;
    let h = (flat % p.h_blocks) * 64u + lid;
    if (row >= p.rows || h >= p.hidden) {
        return;
    }
    let id = u32(ids[p.ids_offset + row]);
    if (id < p.chunk_first || id >= p.chunk_first + p.chunk_rows) {
        return;
    }
    let local_row = id - p.chunk_first;
    var value: f32;
    if (p.table_f16 == 1u) {
        let pair = unpack2x16float(table[local_row * p.table_stride + (h >> 1u)]);
        value = select(pair.x, pair.y, (h & 1u) == 1u);
    } else {
        value = bitcast<f32>(table[local_row * p.table_stride + h]);
    }
    let position = p.start_position + (p.row_first + row) % p.seq_len;
    hidden[p.out_offset + row * p.hidden + h] =
        value + positions[p.position_offset + position * p.hidden + h];
}
