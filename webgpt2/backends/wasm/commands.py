"""Kernel calls recorded into a command list and run in one crossing (`wasm/run.c`).

A call into the module costs far more than most kernels' work: about 24 us through
Pyodide's JavaScript bridge (~90 calls per GPT-2 decode step: 2 ms of a ~20 ms step) and a
few us through wasmtime. `CommandList.call` records a kernel that returns nothing as words
(its opcode, then its arguments) instead of calling it; `flush` writes the words into a
block of linear memory and calls the export `run` once, which executes them in order. As
the webgpu backend records dispatches and submits when it must read, the list is flushed
before the host reads or writes memory, and before any export that returns a value.

Memory stays consistent without more care: commands run in the order they were recorded,
so a scratch block freed after a recorded call and handed out again is only reused by later
commands; only the host's own reads and writes could overtake them, and they flush first.
"""

from __future__ import annotations

import struct
from array import array

from webgpt2.backends.wasm.driver import Driver, DriverError

# Export -> (opcode, argument kinds): "i" an i32 word, "f" an f32 as its bit pattern. The
# order is run.c's switch; tests/test_wasm.py checks every entry against the export's own
# signature.
OPCODES: dict[str, tuple[int, str]] = {
    "linear": (0, "iiiiiiiii"),
    "layer_norm": (1, "iiiiiif"),
    "attention": (2, "iiiiiiiiiiiii"),
    "embedding": (3, "iiiiiiiii"),
    "memcpy": (4, "iii"),
    "memset": (5, "iii"),
    "fill_u32": (6, "iii"),
    "argmax": (7, "iiii"),
    "log_softmax": (8, "iiii"),
    "token_log_probs": (9, "iiiii"),
    "sample": (10, "iiiiifiifi"),
    "top_k": (11, "iiiiiii"),
    "repetition_penalty": (12, "iiiif"),
    "mask_tokens": (13, "iiiif"),
    "max_cosine_similarity": (14, "iiiiiii"),
    "reorder_cache": (15, "iiiiiiiiii"),
    "transpose_32": (16, "iiii"),
    "narrow_f16": (17, "iii"),
    "widen_f16": (18, "iii"),
    "widen_bf16": (19, "iii"),
    "greedy_head": (20, "iiiiiiiii"),
    "top_k_logits": (21, "iiiiiiiiiii"),
}
# Float positions of each export, precomputed for `call`.
_FLOATS = {name: tuple(i for i, kind in enumerate(kinds) if kind == "f")
           for name, (_, kinds) in OPCODES.items()}
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
# Big enough for a few hundred commands (a decode step of GPT-2 124M records ~90 of 4-14
# words); a longer list is flushed as it fills.
DEFAULT_CAPACITY = 16384


def _f32_bits(value: float) -> int:
    return _U32.unpack(_F32.pack(value))[0]


class CommandList:
    """Records kernel calls for `driver` into `block` (capacity words of linear memory,
    allocated by the caller) and runs them with `flush`.

    Example:
        >>> from webgpt2.backends.wasm import WasmBackend
        >>> b = WasmBackend()
        >>> x = b.tensor([[1.0, 2.0]], "float32")
        >>> b.commands.call("fill_u32", x.offset, 0x40400000, 2)  # recorded, not run yet
        >>> b.to_list(x)  # reading flushes first
        [[3.0, 3.0]]
    """

    def __init__(self, driver: Driver, block: int, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 16:
            raise ValueError(f"capacity {capacity} words; expected at least 16")
        self.driver = driver
        self.block = block
        self.capacity = capacity - 1  # word 0 is run's progress
        self._words: list[int] = [0]
        self._names: list[str] = []
        self.flushes = 0  # how many times `run` was called (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._names)

    def call(self, name: str, *args: int | float) -> None:
        """Record the export `name` (one of OPCODES) with its arguments."""
        opcode, kinds = OPCODES[name]
        if len(args) != len(kinds):
            raise TypeError(f"kernel {name!r} takes {len(kinds)} arguments; got {len(args)}")
        words = self._words
        if len(words) + len(args) >= self.capacity:
            self.flush()
            words = self._words
        words.append(opcode)
        floats = _FLOATS[name]
        if floats:
            args = tuple(_f32_bits(a) if i in floats else a for i, a in enumerate(args))
        words.extend(args)
        self._names.append(name)

    def flush(self) -> None:
        """Run every recorded call, in order, in one call of `run`."""
        if not self._names:
            return
        words, names = self._words, self._names
        self._words, self._names = [0], []
        try:
            data = array("I", words)
        except OverflowError:  # a negative int: its 32-bit two's complement, as wasm reads it
            data = array("I", [w & 0xFFFFFFFF for w in words])
        self.driver.write(self.block, data)
        self.flushes += 1
        try:
            self.driver.call("run", self.block, len(names))
        except DriverError as e:
            index = _U32.unpack(self.driver.read(self.block, 4))[0]
            name = names[index] if index < len(names) else "?"
            raise DriverError(f"wasm kernel {name!r} (command {index + 1} of {len(names)} "
                              f"in one run) failed: {e}") from e
