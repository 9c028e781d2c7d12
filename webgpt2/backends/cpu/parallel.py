"""Spreading a long prompt's operations over the CPU's cores.

NumPy's element-wise work (bias, GELU, layer norm, softmax) runs on one core; BLAS's own
threads cover only the matrix products. For a long prompt the cpu backend cuts an operation
into one part per core, along rows (or attention heads), and runs the parts at once: the
caller runs the first and worker threads the others, each part with a single-threaded BLAS so
that the parts do not compete for BLAS's thread pool. NumPy releases the GIL inside its loops
and BLAS calls, so the parts run in parallel. Every row is computed by the same operations as
without the cut (BLAS sums each output element in the same order whichever rows it is given).

BLAS's worker threads spin for about 0.1 s after each threaded call (OpenBLAS's default
thread timeout) and would take a core from the parts: measured here, a row-split linear right
after a 1-row BLAS call took twice as long. So for BLAS_SPIN_SECONDS after the backend last
let BLAS thread a call (decode steps do), operations run their parts one after another.

Used where threadpoolctl can limit BLAS and more than one core is allowed; otherwise (one
core, OPENBLAS_NUM_THREADS=1, Pyodide, which has no threads) everything runs serially.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

# Below this many rows per part, splitting costs more than it saves (decode steps are 1 row).
MIN_ROWS_PER_PART = 32
# How long BLAS's threads stay busy after a threaded call: OpenBLAS spins 2**28 cycles.
BLAS_SPIN_SECONDS = 0.15


def _blas_controller() -> tuple[Any | None, int]:
    """(a threadpoolctl controller of the loaded BLAS libraries, their thread count), or
    (None, 1) where BLAS's threads cannot be limited."""
    if sys.platform == "emscripten":
        return None, 1
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None, 1
    controller = ThreadpoolController().select(user_api="blas")
    counts = [lib["num_threads"] for lib in controller.info()]
    if not counts:
        return None, 1
    return controller, min(counts)


class RowParallel:
    """Runs an operation's parts on up to `parts` threads: the caller and parts - 1 workers.

    parts defaults to the WEBGPT2_NUM_THREADS environment variable, else BLAS's thread count
    (so OPENBLAS_NUM_THREADS bounds both). One part, or no way to limit BLAS: serial.

    Example:
        >>> import numpy as np
        >>> from webgpt2.backends.cpu.parallel import RowParallel
        >>> out = np.zeros(8)
        >>> def fill(start, end):
        ...     out[start:end] = np.arange(start, end)
        >>> parallel = RowParallel(parts=2)
        >>> parallel.run(fill, parallel.split(8, min_per_part=4))
        >>> out.tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    """

    def __init__(self, parts: int | None = None) -> None:
        self._controller, blas_threads = _blas_controller()
        if parts is None:
            env = os.environ.get("WEBGPT2_NUM_THREADS")
            if env is not None and (not env.strip().isdigit() or int(env) < 1):
                raise ValueError(f"WEBGPT2_NUM_THREADS is {env!r}; expected a positive integer")
            parts = int(env) if env is not None else blas_threads
        if not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts is {parts!r}; expected a positive integer")
        # Without a way to make BLAS single-threaded, parallel parts would fight its threads.
        self.parts = parts if self._controller is not None else 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0  # the process that started the pool's threads (fork drops them)
        # One parallel region at a time: BLAS's thread limit is process-wide, and two
        # overlapping regions would restore it out of order.
        self._lock = threading.Lock()
        self._blas_busy_until = 0.0

    def split(self, count: int, min_per_part: int = MIN_ROWS_PER_PART) -> list[tuple[int, int]]:
        """[start, end) ranges cutting `count` rows into at most `parts` nearly equal parts
        of at least min_per_part rows (a single range means: run serially)."""
        n = max(1, min(self.parts, count // max(1, min_per_part)))
        bounds = [count * i // n for i in range(n + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(n)]

    def blas_threaded(self) -> None:
        """Note that BLAS has just been left to thread a call (its threads now spin)."""
        self._blas_busy_until = time.perf_counter() + BLAS_SPIN_SECONDS

    def run(self, fn: Callable[..., None], parts: Sequence[tuple]) -> None:
        """fn(*args) for each args in parts: at once, BLAS single-threaded meanwhile; or one
        after another (BLAS threading each) when there is one part or BLAS's threads are
        still spinning."""
        if len(parts) <= 1 or time.perf_counter() < self._blas_busy_until:
            for args in parts:
                fn(*args)
            self.blas_threaded()
            return
        with self._lock, self._controller.limit(limits=1):
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.parts - 1, thread_name_prefix="webgpt2-cpu")
                self._pool_pid = os.getpid()
            futures = [self._pool.submit(fn, *args) for args in parts[1:]]
            try:
                fn(*parts[0])
            finally:
                wait(futures)  # every part has finished (or failed) before anyone goes on
            for future in futures:
                future.result()  # raises a worker's exception
