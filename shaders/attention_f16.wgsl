// attention_f16: attention.wgsl over a float16 KV cache (attention_cache_f16.wgsl replaces
// its float32 cache binding, accessor and writer: kv_write_f16 for kv_write). Same Params,
// bindings, entry points and workgroups otherwise.
//!include attention_cache_f16.wgsl
//!include attention.wgsl
