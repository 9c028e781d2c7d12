"""A one-line progress bar for downloads and weight loading (standard library, tqdm optional).

On a terminal it draws a live bar (tqdm's when tqdm is importable, else its own line redrawn
with `\\r`); when the stream is not a terminal (a log, CI) it prints one summary line at the end.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ProgressBar"]


class ProgressBar:
    """Bytes done of a total, with throughput, on stderr.

    Use `update(n)` for increments, or pass the bar itself where a `progress(done, total)`
    callback is expected (`load_gpt2_weights(..., progress=bar)`). `close()` (or leaving the
    `with` block) ends the line; an exception inside the block suppresses the summary.

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> with ProgressBar("model.safetensors", total=2_000_000, stream=log) as bar:
        ...     bar.update(2_000_000)
        >>> log.getvalue().startswith("model.safetensors: 2.0 MB in ")
        True
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        use_tqdm: bool | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = bool(getattr(self._stream, "isatty", lambda: False)())
        self._min_interval = min_interval
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False
        self._tqdm: Any = None
        if enabled and self._interactive and use_tqdm is not False:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, desc=description, unit="B", unit_scale=True,
                                  file=self._stream, leave=True, dynamic_ncols=True)

    def update(self, n: int) -> None:
        """Add n bytes done."""
        self.done += n
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self._interactive:
            now = time.monotonic()
            if now - self._last_draw >= self._min_interval:
                self._last_draw = now
                self._draw(end="")

    def __call__(self, done: int, total: int) -> None:
        """The `progress(done, total)` callback form: set the absolute position."""
        if total != self.total:
            self.total = total
            if self._tqdm is not None:
                self._tqdm.total = total
        self.update(done - self.done)

    def close(self, failed: bool = False) -> None:
        """End the bar: a final redraw on a terminal, a summary line otherwise."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._interactive:
            self._draw(end="\n")
        elif not failed:
            elapsed = time.monotonic() - self._start
            self._stream.write(
                f"{self.description}: {_mb(self.done)} MB in {elapsed:.1f} s "
                f"({_mb(self.done / elapsed if elapsed > 0 else 0.0)} MB/s)\n"
            )
            self._stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(failed=exc_type is not None)

    def _draw(self, end: str) -> None:
        elapsed = time.monotonic() - self._start
        rate = f"{_mb(self.done / elapsed if elapsed > 0 else 0.0)} MB/s"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * 24)
            bar = "#" * filled + "." * (24 - filled)
            line = (f"{self.description} [{bar}] {fraction * 100:5.1f}% "
                    f"{_mb(self.done)}/{_mb(self.total)} MB {rate}")
        else:
            line = f"{self.description} {_mb(self.done)} MB {rate}"
        self._stream.write("\r" + line + "\x1b[K" + end)
        self._stream.flush()


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"
