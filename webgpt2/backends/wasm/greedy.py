"""The wasm backend's greedy head: argmax over the vocabulary of the tied LM head's logits,
through an 8-bit screen of the token table (wasm/greedy.c says why the ids are exactly
argmax's), so that a greedy decode step reads a quarter of the float32 table (half of the
float16 one) instead of all of it. The same screen gives top-k sampling its logits: only
those that may be among each row's k largest are computed, the others are -inf.

The screen is built on a table's first greedy step (a pass over the table, and V x H bytes
more memory) and freed with the table. Where it cannot be had (a table with a non-finite or
huge element, no memory left for it) or does not apply (4 rows or more, which linear tiles
differently), the backend takes the interface's default: every logit, then argmax.
"""

from __future__ import annotations

from array import array
from typing import Any

from webgpt2.backends import host_ops
from webgpt2.backends.wasm.memory import WasmOutOfMemoryError
from webgpt2.backends.wasm.tensor import WasmTensor


class Screen:
    """A token table's screen: its block of linear memory and the kernel's scratch size."""

    __slots__ = ("block", "scratch_bytes")

    def __init__(self, block: WasmTensor, scratch_bytes: int) -> None:
        self.block = block
        self.scratch_bytes = scratch_bytes


def _screen(b: Any, table: WasmTensor) -> Screen | None:
    """table's screen, built now if it has none yet; None where it cannot have one."""
    if table.screen is None:
        table.screen = False
        vocabulary, hidden = table.shape
        nbytes = int(b._call("screen_bytes", vocabulary, hidden))
        try:
            block = b._new((nbytes,), "int32", nbytes=nbytes)
        except WasmOutOfMemoryError:
            return None
        scratch = b._temporary(hidden * 4)
        try:
            built = b._call("screen_table", table.offset, vocabulary, hidden,
                            int(table.dtype == "float16"), block.offset, scratch)
        finally:
            b._done(scratch, hidden * 4)
        if not built:  # a non-finite or huge element
            b.release(block)
            return None
        table.screen = Screen(block, int(b._call("greedy_scratch_bytes", vocabulary, hidden)))
    return table.screen or None


def reverse_embedding_argmax(b: Any, x: WasmTensor, table: WasmTensor) -> list[int]:
    """Backend.reverse_embedding_argmax on the wasm backend (arguments checked)."""
    screened = screened_argmax(b, x, table)
    if screened is None:
        return host_ops.reverse_embedding_argmax(b, x, table)
    return screened[0]


def _rows_and_screen(b: Any, x: WasmTensor, table: WasmTensor) -> tuple[int, Screen | None]:
    """How many rows x has, and table's screen if it applies to them: fewer than 4 rows
    (linear tiles more differently) and a table stored row by row."""
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    return rows, _screen(b, table) if 0 < rows < 4 and table.layout != "linear" else None


def screened_argmax(b: Any, x: WasmTensor, table: WasmTensor
                    ) -> tuple[list[int], list[int]] | None:
    """(ids, how many logits each row computed) through the screen; None where it does not
    apply (see the module docstring)."""
    rows, screen = _rows_and_screen(b, x, table)
    if screen is None:
        return None
    vocabulary, hidden = table.shape
    nbytes = rows * 8 + screen.scratch_bytes
    out = b._temporary(nbytes)
    try:
        b._call("greedy_head", x.offset, table.offset, screen.block.offset, out, rows, hidden,
                vocabulary, int(table.dtype == "float16"), out + rows * 8)
        values = array("i", b._read(out, rows * 8)).tolist()
        return values[:rows], values[rows:]
    finally:
        b._done(out, nbytes)


# Above this k the screen's heap (and the candidates) cost more than they save.
_MAX_TOP_K = 1024


def screened_top_k(b: Any, x: WasmTensor, table: WasmTensor, k: int, counts: bool = False
                   ) -> tuple[WasmTensor, list[int] | None] | None:
    """(logits, with counts how many each row computed, else None): every logit that may be
    among the row's k largest, exactly as reverse_embedding computes it, and -inf for the
    others; None where the screen does not apply. Without counts nothing is read back, so
    the kernel stays in the command list with the step's others."""
    rows, screen = _rows_and_screen(b, x, table) if k <= _MAX_TOP_K else (0, None)
    if screen is None:
        return None
    vocabulary, hidden = table.shape
    logits = b._new(x.shape[:-1] + (vocabulary,))
    nbytes = rows * 4 + screen.scratch_bytes + (vocabulary + k) * 4
    scratch = b._temporary(nbytes)
    try:
        b._call("top_k_logits", x.offset, table.offset, screen.block.offset, logits.offset,
                scratch, rows, hidden, vocabulary, int(table.dtype == "float16"), k,
                scratch + rows * 4)
        computed = array("i", b._read(scratch, rows * 4)).tolist() if counts else None
    finally:
        b._done(scratch, nbytes)
    return logits, computed


def reverse_embedding_top_k(b: Any, x: WasmTensor, table: WasmTensor, k: int) -> WasmTensor:
    """Backend.reverse_embedding(x, table, top_k=k) on the wasm backend (arguments checked)."""
    screened = screened_top_k(b, x, table, k)
    return b._reverse_embedding(x, table) if screened is None else screened[0]
