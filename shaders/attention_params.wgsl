// attention_params: the uniform parameters that attention.wgsl, attention_subgroups.wgsl and
// attention_blocks.wgsl share (the backend packs them once, in this order, for all).
struct Params {
    batch: u32,         // batch rows in this dispatch
    seq_len: u32,       // S
    hidden: u32,        // H
    heads: u32,         // nh
    head_dim: u32,      // hd
    max_length: u32,    // T
    start: u32,         // cache_update_index
    batch_stride: u32,  // L * 2 * T * H
    qkv_offset: u32,
    cache_offset: u32,
    out_offset: u32,
    scale: f32,
    position_stride: u32,
    head_stride: u32,
    kv_stride: u32,
    first_query: u32,   // the first query computed (attend_blocks; 0 elsewhere)
}
