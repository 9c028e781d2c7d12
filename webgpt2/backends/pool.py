"""Released memory kept for reuse, by a key that says what can stand in for what.

Backends make the same intermediates over and over (every layer, every decode step), and new
memory costs more than reused memory: fresh host pages fault in and are zeroed on first
touch; a new GPU buffer is an allocation plus fresh bind groups. The cpu backend keys NumPy
arrays by (shape, dtype); the webgpu backend keys storage buffers by their byte size. What
is kept is bounded in all (`limit_bytes`) and per item (`max_item_bytes`): a few huge
buffers would otherwise hold the whole budget for sizes that rarely come back.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")

# The most memory one pool keeps for reuse (a 1024-token prefill of gpt2-xl needs about 200 MB
# of intermediates per layer).
DEFAULT_LIMIT_BYTES = 512 * 2**20


class FreeList(Generic[Item]):
    """Free items by key, up to `limit_bytes` in all and `max_item_bytes` each.

    Threads may share one: dict.get, list.append and list.pop are atomic, so no item is
    handed out twice; the byte count is then only a bound.

    Example:
        >>> pool = FreeList(limit_bytes=1024, max_item_bytes=800)
        >>> pool.give("a", "buffer a", 600), pool.give("b", "b", 600), pool.give("c", "c", 900)
        (True, False, False)
        >>> pool.take("a"), pool.take("a"), pool.bytes_held
        ('buffer a', None, 0)
    """

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES,
                 max_item_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.max_item_bytes = limit_bytes if max_item_bytes is None else max_item_bytes
        self._free: dict[Hashable, list[tuple[Item, int]]] = {}
        self._bytes = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def take(self, key: Hashable) -> Item | None:
        """A kept item of this key (no longer kept), or None."""
        items = self._free.get(key)
        if not items:
            return None
        try:
            item, nbytes = items.pop()
        except IndexError:  # another thread took the last one
            return None
        self._bytes -= nbytes
        return item

    def give(self, key: Hashable, item: Item, nbytes: int) -> bool:
        """Keep `item` for a later `take(key)`. False where it is not kept (over the per-item
        cap or the budget): the caller disposes of it."""
        if nbytes > self.max_item_bytes or self._bytes + nbytes > self.limit_bytes:
            return False
        self._free.setdefault(key, []).append((item, nbytes))
        self._bytes += nbytes
        return True

    def clear(self) -> list[Item]:
        """Stop keeping anything; returns what was kept, for the caller to dispose of."""
        free, self._free, self._bytes = self._free, {}, 0
        return [item for items in free.values() for item, _ in items]
