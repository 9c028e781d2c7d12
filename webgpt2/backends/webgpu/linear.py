"""Recording the linear layers' matrix products for the webgpu backend (linear.wgsl,
linear_subgroups.wgsl, linear_rows.wgsl, linear_broadcast.wgsl): which kernel an m x k by
k x n product gets, its workgroup grid, and split K where the device profile asks for more
workgroups than the columns give.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webgpt2.backends.webgpu.driver import Binding
from webgpt2.backends.webgpu.tensor import WebGPUTensor, ceil_div

if TYPE_CHECKING:
    from webgpt2.backends.webgpu.backend import WebGPUBackend

MATVEC_MAX_ROWS = 4  # up to this many rows (decode) the matrix-vector kernels are used


def record_matmul(b: WebGPUBackend, x: WebGPUTensor, rows: int, k: int,
                  weight_binding: Binding, words: int, n: int, w_f16: bool, out: WebGPUTensor,
                  out_width: int, out_column: int, bias: WebGPUTensor | None = None,
                  gelu: bool = False, residual: WebGPUTensor | None = None) -> None:
    """Record y[:, out_column:out_column+n] = act(x @ W^T + bias) + residual."""
    chunk_tensors = [(x, k), (out, out_width)]
    if residual is not None:
        chunk_tensors.append((residual, out_width))
    buffers = b.buffers
    for r0, r1 in buffers.row_chunks(rows, chunk_tensors):
        x_binding, x_shift = buffers.bind(1, x, r0 * k, r1 * k)
        y_binding, y_shift = buffers.bind(5, out, r0 * out_width, r1 * out_width)
        if residual is not None:
            r_binding, r_shift = buffers.bind(4, residual, r0 * out_width, r1 * out_width)
        else:
            r_binding, r_shift = buffers.placeholder(4), 0
        b_binding = buffers.bind(3, bias)[0] if bias is not None else buffers.placeholder(3)
        flags = (1 if bias is not None else 0) | (2 if gelu else 0) \
            | (4 if residual is not None else 0)
        m = r1 - r0
        kernel, workgroups, n_blocks, splits = _matmul_kernel(b, m, n, k, x_shift, w_f16)
        if kernel.label.endswith(":matvec_half"):  # the f16 view of the same weight words
            weight_binding = Binding(6, weight_binding.buffer, weight_binding.offset,
                                     weight_binding.size)
        params = dict(m=m, n=n, k=k, w_stride=words, x_offset=x_shift, y_offset=y_shift,
                      y_stride=out_width, y_column=out_column, r_offset=r_shift,
                      flags=flags, w_f16=w_f16, n_blocks=n_blocks, splits=splits)
        if splits == 1:
            b.recorder.dispatch(kernel, [x_binding, weight_binding, b_binding, r_binding,
                                         y_binding], workgroups, **params)
            continue
        # Split K: the parts' partial sums go to a scratch [splits * m, n], and a second
        # pass adds them and applies the epilogue.
        scratch = buffers.new((splits * m, n))
        b.recorder.dispatch(
            kernel, [x_binding, weight_binding, buffers.placeholder(3),
                     buffers.placeholder(4), buffers.bind(5, scratch)[0]], workgroups,
            **dict(params, y_offset=0, y_stride=n, y_column=0, flags=0, r_offset=0))
        combine = b.recorder.kernel("linear.wgsl", "combine_splits")
        b.recorder.dispatch(
            combine, [buffers.bind(1, scratch)[0], b_binding, r_binding, y_binding],
            ceil_div(m * n, combine.workgroup_size), **dict(params, x_offset=0))
        b.release(scratch)


def _matmul_kernel(b: WebGPUBackend, m: int, n: int, k: int, x_shift: int,
                   w_f16: bool) -> tuple:
    """The linear kernel for an m x k by k x n product, its workgroup count, its count
    of output column blocks (how the kernels split their workgroups), and the parts K
    is split into (matrix-vector kernels on large devices)."""
    kernel = b.recorder.kernel
    aligned = x_shift % 4 == 0 and k % 4 == 0  # whole vec4 words of x per row
    if m <= MATVEC_MAX_ROWS:
        if b.subgroup_matvec and aligned and k % (8 if w_f16 else 4) == 0:
            if w_f16 and b.f16_arithmetic:
                chosen = kernel("linear_half.wgsl", "matvec_half")
            else:
                chosen = kernel("linear_subgroups.wgsl",
                                "matvec_subgroups_f16" if w_f16 else "matvec_subgroups_f32")
            columns = chosen.constants["COLUMNS"]
        else:
            chosen = kernel("linear.wgsl", "matvec")
            columns = chosen.workgroup_size
        n_blocks = ceil_div(n, columns)
        splits = b.device_profile.matvec_splits(n_blocks, k // (8 if w_f16 else 4))
        return chosen, n_blocks * splits, n_blocks, splits
    if aligned and b.device_profile.name == "small" and b.lane_broadcast and k % 32 == 0:
        # CPU adapters with subgroups of 8: x words broadcast across lanes, so each load
        # feeds 8 outputs or more (linear_broadcast.wgsl).
        chosen = kernel("linear_broadcast.wgsl",
                        "matmul_broadcast_f16" if w_f16 else "matmul_broadcast_f32")
        n_blocks = ceil_div(n, chosen.constants["BROADCAST_COLUMNS"])
        return chosen, ceil_div(m, chosen.constants["BROADCAST_ROWS"]) * n_blocks, n_blocks, 1
    if aligned and b.device_profile.name == "small":
        # CPU adapters: register blocks straight from storage, no barriers (linear_rows.wgsl).
        chosen = kernel("linear_rows.wgsl", "matmul_rows_f16" if w_f16 else "matmul_rows_f32")
        n_blocks = ceil_div(n, 4 * chosen.workgroup_size)  # 4 W rows per invocation
        return chosen, ceil_div(m, chosen.constants["ROWS_M"]) * n_blocks, n_blocks, 1
    # GPUs: 32 x 32 output tiles through workgroup memory, so that each weight is read from
    # memory once per 32 rows of x.
    chosen = kernel("linear.wgsl", "matmul")
    tile = chosen.constants["TILE"]
    n_blocks = ceil_div(n, tile)
    return chosen, ceil_div(m, tile) * n_blocks, n_blocks, 1
