"""The webgpu backend's cached attention: which kernels a step records, and their parameters.

The step's keys and values go into the cache, then the queries attend to it:
- decode (S = 1) with lane-group reductions: attention_subgroups.wgsl's attend_decode, which
  writes the step's key and value itself;
- a prompt on the "large" device profile (a GPU; head size up to 64): kv_write, then
  attention_blocks.wgsl's attend_blocks (query blocks against key tiles staged in workgroup
  memory, online softmax), which computes only the last query with last_position_only;
- a prompt on a small device whose subgroups are exactly 8 lanes: kv_write, then
  attention_subgroups.wgsl's attend_prompt;
- otherwise kv_write, then attention.wgsl's attend (every head size up to 256, any adapter).
The cache is head-major in memory ([B, L, 2, nh, T, hd]; a float16 cache two values per
word, its bindings in words and the kernels' offsets still in values).
"""

from __future__ import annotations

import math
from typing import Any

from webgpt2.backends.webgpu.driver import DriverError
from webgpt2.backends.webgpu.tensor import WebGPUTensor, ceil_div


def _blocks_family(f16: bool) -> str:
    return "attention_blocks_f16.wgsl" if f16 else "attention_blocks.wgsl"


def uses_blocks(backend: Any, seq_len: int, head_dim: int, f16: bool) -> bool:
    """Whether a prompt of seq_len queries runs attention_blocks.wgsl here."""
    if seq_len < 2 or not backend.device_profile.block_attention:
        return False
    try:  # kept off where the adapter cannot build it (attend then does every prompt)
        kernel = backend.recorder.kernel(_blocks_family(f16), "attend_blocks")
    except DriverError:
        return False
    return head_dim <= kernel.constants["MAX_HEAD_DIM"]


def cached_attention(backend: Any, qkv: WebGPUTensor, cache: WebGPUTensor, layer_index: int,
                     start: int, num_heads: int, last_position_only: bool) -> WebGPUTensor:
    """Backend._cached_attention for WebGPUBackend (arguments already checked)."""
    recorder, buffers = backend.recorder, backend.buffers
    batch, seq_len, three_hidden = qkv.shape
    hidden = three_hidden // 3
    head_dim = hidden // num_heads
    f16 = cache.dtype == "float16"
    blocks = uses_blocks(backend, seq_len, head_dim, f16)
    if last_position_only and not blocks:
        # Every query is computed (one dispatch for all of them), then the last selected.
        full = cached_attention(backend, qkv, cache, layer_index, start, num_heads, False)
        last = backend._select_position(full, full.shape[1] - 1)
        backend.release(full)
        return last
    first_query = seq_len - 1 if last_position_only else 0
    layers, max_length = cache.shape[1], cache.shape[3]
    unit = 2 if f16 else 1
    family = "attention_f16.wgsl" if f16 else "attention.wgsl"
    kv_write = recorder.kernel(family, "kv_write_f16" if f16 else "kv_write")
    attend = recorder.kernel(family, "attend")
    max_head_dim = attend.constants["MAX_HEAD_DIM"]
    if head_dim > max_head_dim or head_dim % unit:
        raise ValueError(f"head size {head_dim}; the attention kernel supports up to "
                         f"{max_head_dim}" + (", even sizes for a float16 cache" * f16))
    rows = seq_len - first_query  # output rows per batch row
    out = buffers.new((batch, rows, hidden))
    layer_span = 2 * max_length * hidden  # elements of cache[b, layer]
    batch_stride = layers * layer_span
    if cache.layout == "cache":  # head-major: [.., nh, T, hd] in memory
        position_stride, head_stride = head_dim, max_length * head_dim
    else:
        position_stride, head_stride = hidden, head_dim
    bind = buffers.bind
    for b0, b1 in buffers.batch_chunks(batch, cache, batch_stride // unit, layer_span // unit):
        first = b0 * batch_stride + layer_index * layer_span
        end = (b1 - 1) * batch_stride + layer_index * layer_span + layer_span
        c_binding, c_shift = bind(2, cache, first // unit, ceil_div(end, unit))
        c_shift *= unit
        q_binding, q_shift = bind(1, qkv, b0 * seq_len * three_hidden,
                                  b1 * seq_len * three_hidden)
        o_binding, o_shift = bind(3, out, b0 * rows * hidden, b1 * rows * hidden)
        params = dict(batch=b1 - b0, seq_len=seq_len, hidden=hidden, heads=num_heads,
                      head_dim=head_dim, max_length=max_length, start=start,
                      batch_stride=batch_stride, qkv_offset=q_shift, cache_offset=c_shift,
                      out_offset=o_shift, scale=1.0 / math.sqrt(head_dim),
                      position_stride=position_stride, head_stride=head_stride,
                      kv_stride=max_length * hidden, first_query=first_query)
        vector_rows = head_dim % 4 == 0 and hidden % 4 == 0 and q_shift % 4 == 0 \
            and c_shift % 4 == 0 and o_shift % 4 == 0
        lanes = "attention_subgroups_f16.wgsl" if f16 else "attention_subgroups.wgsl"
        decode = seq_len == 1 and backend.subgroup_matvec and vector_rows
        if not decode:  # attend_decode writes the step's keys and values itself
            recorder.dispatch(  # an invocation per value (f16: per pair of values)
                kv_write, [q_binding, c_binding],
                ceil_div((b1 - b0) * seq_len * 2 * hidden // unit, kv_write.workgroup_size),
                **params)
        if decode:
            scratch = buffers.new(((b1 - b0) * num_heads, max_length))
            recorder.dispatch(
                recorder.kernel(lanes, "attend_decode"),
                [q_binding, c_binding, o_binding, bind(4, scratch)[0]],
                (b1 - b0) * num_heads, **params)  # a workgroup per (head, batch row)
        elif blocks:
            kernel = recorder.kernel(_blocks_family(f16), "attend_blocks")
            query_blocks = ceil_div(rows, kernel.constants["BLOCK_QUERIES"])
            recorder.dispatch(kernel, [q_binding, c_binding, o_binding],
                              (b1 - b0) * query_blocks * num_heads, **params)
        elif backend._cpu_lanes() and vector_rows and head_dim <= 64:
            prompt = recorder.kernel(lanes, "attend_prompt")
            query_blocks = ceil_div(seq_len, prompt.constants["PROMPT_QUERIES"])
            recorder.dispatch(prompt, [q_binding, c_binding, o_binding],
                              (b1 - b0) * query_blocks * num_heads, **params)
        else:
            query_blocks = ceil_div(seq_len, attend.constants["QUERIES"])
            recorder.dispatch(attend, [q_binding, c_binding, o_binding],
                              (b1 - b0) * query_blocks * num_heads, **params)
    return out
