// attention_blocks_f16: attention_blocks.wgsl over a float16 KV cache (attention_load_f16.wgsl
// replaces its float32 cache binding and accessor). Same Params, bindings, entry point and
// workgroups otherwise.
//!include attention_load_f16.wgsl
//!include attention_blocks.wgsl
