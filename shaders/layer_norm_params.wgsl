// layer_norm_params: the uniform parameters that layer_norm.wgsl and layer_norm_lanes.wgsl
// share (the backend packs them by name for either).
struct Params {
    rows: u32,
    hidden: u32,
    epsilon: f32,
    x_offset: u32,
    y_offset: u32,
}
