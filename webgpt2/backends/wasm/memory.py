"""Allocation of the kernels module's linear memory, on the host side.

Blocks are rounded up to 64 bytes (whole cache lines, aligned for every vector load) and
come from free lists of exactly that size, else from a bump pointer that grows the memory as
it goes. A model's steps ask for the same few sizes over and over, so after the first step
nearly every block comes from a free list. A block freed at the top lowers the bump pointer
(with any free blocks below it), and when the memory cannot grow further the free blocks are
merged and searched first-fit before giving up with `WasmOutOfMemoryError`.

Blocks are freed by tensors' `__del__`, which can run at any point of the host's code (the
garbage collector); they only queue the block, and the queue is drained on the next
allocation, so the lists never change under a running allocation.
"""

from __future__ import annotations

from webgpt2.backends.host import BackendError
from webgpt2.backends.wasm.driver import PAGE_SIZE, Driver, DriverError

ALIGNMENT = 64
MIN_GROWTH = 256 * PAGE_SIZE  # grow 16 MiB at least: fewer, larger grows


class WasmOutOfMemoryError(BackendError, MemoryError):
    """The kernels module's linear memory cannot hold an allocation."""


def _round_up(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


class LinearMemory:
    """A free-list and bump-pointer allocator over [base, limit) of a driver's memory.

    Example:
        >>> from webgpt2.backends.wasm.backend import load_module
        >>> from webgpt2.backends.wasm.native import NativeDriver
        >>> d = NativeDriver(load_module())
        >>> m = LinearMemory(d, d.call("heap_base"))
        >>> a = m.allocate(100)
        >>> m.free(a, 100)
        >>> m.allocate(128) == a   # the same 128-byte block, from the free list
        True
    """

    def __init__(self, driver: Driver, base: int, limit: int = 1 << 32) -> None:
        self._driver = driver
        self.limit = limit
        self._base = _round_up(base)
        self._top = self._base
        self._free: dict[int, list[int]] = {}  # size -> offsets of free blocks
        self._free_ends: dict[int, tuple[int, int]] = {}  # end -> (offset, size)
        self._queued: list[tuple[int, int]] = []
        self.bytes_in_use = 0
        self.bytes_free = 0
        self.allocations = 0  # blocks handed out so far (a replayed step checks it)
        # The memory's size as last seen: it never shrinks, so only an end past it asks the
        # driver again (in the page each ask crosses Pyodide's bridge, and the bump pointer
        # moves up and down dozens of times per decode step).
        self._size = 0

    @property
    def top(self) -> int:
        """One past the highest byte ever handed out and not given back at the top."""
        return self._top

    def allocate(self, nbytes: int) -> int:
        """The offset of a 64-byte-aligned block of at least `nbytes` bytes (contents
        undefined). Raises WasmOutOfMemoryError naming the sizes when it cannot."""
        if self._queued:
            self._drain()
        self.allocations += 1
        size = _round_up(max(nbytes, 1))
        offsets = self._free.get(size)
        if offsets:
            offset = offsets.pop()
            del self._free_ends[offset + size]
            self.bytes_free -= size
        else:
            offset = self._bump(size)
        self.bytes_in_use += size
        return offset

    def free(self, offset: int, nbytes: int) -> None:
        """Give a block back (`nbytes` as it was asked for). Safe from a finalizer."""
        self._queued.append((offset, _round_up(max(nbytes, 1))))

    def _drain(self) -> None:
        while self._queued:
            offset, size = self._queued.pop()
            self.bytes_in_use -= size
            self._add_free(offset, size)
        self._lower_top()

    def _lower_top(self) -> None:
        """Free blocks at the top go back to the bump pointer."""
        while self._top in self._free_ends:
            offset, size = self._free_ends[self._top]
            self._remove_free(offset, size)
            self._top = offset

    def _add_free(self, offset: int, size: int) -> None:
        self._free.setdefault(size, []).append(offset)
        self._free_ends[offset + size] = (offset, size)
        self.bytes_free += size

    def _remove_free(self, offset: int, size: int) -> None:
        self._free[size].remove(offset)
        del self._free_ends[offset + size]
        self.bytes_free -= size

    def _bump(self, size: int) -> int:
        end = self._top + size
        if end > self.limit:
            offset = self._first_fit(size)
            if offset is not None:
                return offset
            end = self._top + size  # merging may have lowered the top
            if end > self.limit:
                raise WasmOutOfMemoryError(
                    f"cannot allocate {size} bytes: {self.bytes_in_use} bytes are in use and "
                    f"{self.bytes_free} free in pieces, of the wasm memory's "
                    f"{self.limit}-byte limit (wasm32 addresses reach 4 GiB at most)")
        if end > self._size:
            self._size = self._driver.memory_size()
        current = self._size
        if end > current:
            wanted = max(end - current, MIN_GROWTH)
            pages = -(-min(wanted, self.limit - current) // PAGE_SIZE)
            try:
                self._driver.grow(pages)
            except DriverError as e:
                raise WasmOutOfMemoryError(
                    f"cannot allocate {size} bytes: growing the wasm memory from {current} "
                    f"bytes by {pages * PAGE_SIZE} failed ({e})") from e
            self._size = self._driver.memory_size()
        self._top = end
        return end - size

    def _first_fit(self, size: int) -> int | None:
        """Merge adjacent free blocks, then take the lowest one that holds `size` bytes."""
        blocks = sorted(self._free_ends.values())
        self._free.clear()
        self._free_ends.clear()
        self.bytes_free = 0
        merged: list[list[int]] = []
        for offset, block in blocks:
            if merged and merged[-1][0] + merged[-1][1] == offset:
                merged[-1][1] += block
            else:
                merged.append([offset, block])
        chosen = None
        for offset, block in merged:
            if chosen is None and block >= size:
                chosen = offset
                if block > size:
                    self._add_free(offset + size, block - size)
            else:
                self._add_free(offset, block)
        self._lower_top()
        return chosen
