"""The runtime boundary of the `wasm` backend.

The backend (memory management, the order of kernel calls) is written once against this
small surface; a driver instantiates the kernels module (`kernels.wasm`) with a linear memory
it creates and exposes five things: call an export, write and read bytes at an offset, the
memory's size, and growing it. `NativeDriver` runs the module in wasmtime; a browser driver
(phase 2) will do the same with `WebAssembly.instantiate` in the page's worker, reached
through Pyodide's JS FFI. Every method is synchronous, and arguments are plain ints, floats
and bytes, so the backend code is the same in both places.

The module imports its memory as `env.memory` (declared with a maximum of 65536 pages of
64 KiB: 4 GiB, all a 32-bit address can reach) and exports its kernels, plus `heap_base`
(the first byte the host may use) and `memcpy`/`memset`/`fill_u32`.
"""

from __future__ import annotations

PAGE_SIZE = 65536
MAX_PAGES = 65536  # 4 GiB: every address a wasm32 pointer can hold


class DriverError(RuntimeError):
    """The runtime failed: a module that does not instantiate, a trap, a refused grow."""


class Driver:
    """Abstract driver; see the module docstring."""

    def call(self, name: str, *args: int | float) -> int | float | None:
        """Call the export `name` with i32 / f32 / f64 arguments as its signature declares;
        returns its one result, or None. A trap raises DriverError naming the export."""
        raise NotImplementedError

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into linear memory at `offset` (any buffer, read-only ones included)."""
        raise NotImplementedError

    def read(self, offset: int, nbytes: int) -> bytes:
        """A copy of `nbytes` bytes of linear memory from `offset`."""
        raise NotImplementedError

    def memory_size(self) -> int:
        """The linear memory's current size in bytes (a multiple of PAGE_SIZE)."""
        raise NotImplementedError

    def grow(self, pages: int) -> None:
        """Grow the memory by `pages` pages of 64 KiB; DriverError if the runtime refuses."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What the driver runs on, for `webgpt2 info`."""
        return {"driver": type(self).__name__}


def _leb128(data: bytes, position: int) -> tuple[int, int]:
    """An unsigned LEB128 number at position: (value, the position after it)."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def memory_import_pages(module_bytes: bytes) -> int:
    """The minimum size, in pages, of the memory the module imports (its data and stack need
    that much), read from the module's import section; 1 when it imports none.

    Example:
        >>> from webgpt2.backends.wasm.backend import load_module
        >>> memory_import_pages(load_module()) >= 1
        True
    """
    if module_bytes[:4] != b"\0asm":
        raise DriverError(f"not a WebAssembly module: it starts {bytes(module_bytes[:4])!r}; "
                          "expected b'\\x00asm'")
    position = 8
    while position < len(module_bytes):
        section = module_bytes[position]
        size, position = _leb128(module_bytes, position + 1)
        end = position + size
        if section == 2:  # imports: (module name, field name, kind, type) each
            count, position = _leb128(module_bytes, position)
            for _ in range(count):
                for _ in range(2):
                    length, position = _leb128(module_bytes, position)
                    position += length
                kind = module_bytes[position]
                position += 1
                if kind == 0:  # a function: its type index
                    _, position = _leb128(module_bytes, position)
                elif kind == 1:  # a table: element type, then limits
                    flags = module_bytes[position + 1]
                    _, position = _leb128(module_bytes, position + 2)
                    if flags & 1:
                        _, position = _leb128(module_bytes, position)
                elif kind == 2:  # the memory: limits flags, then the minimum
                    minimum, _ = _leb128(module_bytes, position + 1)
                    return max(1, minimum)
                else:  # a global: value type and mutability
                    position += 2
            return 1
        position = end
    return 1
