"""How well the cpu backend's two threads share a long prompt's work, against two processes.

    python benchmarks/threads.py [--repeats 40]

The cpu backend cuts a long prompt's operations in two (rows, or attention heads) and runs
the halves on two threads of one Python process (webgpt2/backends/cpu/parallel.py). NumPy
releases Python's lock inside each call but takes it back on return, and each thread runs
Python between calls; processes share no lock. This prints, for three of a 512-token GPT-2
124M prefill's operations (one layer's attention, a layer norm, the MLP's first linear layer
with its bias and GELU): one half alone on one core; both halves on two threads, as the
backend runs them; and both halves in two waiting worker processes, told to start and
waited for as the backend's thread is (so both include the hand-offs). The three are
alternated round by round, since this machine drifts. Perfect sharing takes as long as one
half alone (1.00x); no sharing at all, twice as long (2.00x).

Every timing runs BLAS single-threaded, as the backend's parts do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from webgpt2.backends.cpu.buffers import BufferPool  # noqa: E402
from webgpt2.backends.cpu.kernels import (  # noqa: E402
    attention_part,
    layer_norm_rows,
    linear_rows,
)
from webgpt2.backends.cpu.parallel import RowParallel  # noqa: E402

SEQ, HEADS, HEAD_DIM = 512, 12, 64
HIDDEN = HEADS * HEAD_DIM


class Work:
    """One layer's worth of a 512-token prefill's operations, each cut in two halves."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.pool = BufferPool()
        self.qkv = rng.standard_normal((1, SEQ, 3 * HIDDEN), np.float32)
        self.cache = np.zeros((1, 1, 2, SEQ, HEADS, HEAD_DIM), np.float32)
        self.out = np.zeros((1, SEQ, HIDDEN), np.float32)
        self.x = rng.standard_normal((SEQ, HIDDEN), np.float32)
        self.normed = np.zeros((SEQ, HIDDEN), np.float32)
        self.gamma = rng.standard_normal(HIDDEN, np.float32)
        self.beta = rng.standard_normal(HIDDEN, np.float32)
        self.w_fc = rng.standard_normal((HIDDEN, 4 * HIDDEN), np.float32) * np.float32(0.02)
        self.b_fc = rng.standard_normal(4 * HIDDEN, np.float32)
        self.inner = np.zeros((SEQ, 4 * HIDDEN), np.float32)

    def attention(self, half: int) -> None:
        """Half the heads of causal attention over the prompt (the backend's part)."""
        a, b = half * HEADS // 2, (half + 1) * HEADS // 2
        new_kv = self.qkv[..., HIDDEN:].reshape(1, SEQ, 2, HEADS, HEAD_DIM)
        cache_kv = self.cache[:, 0, :, :SEQ].swapaxes(1, 2)
        keys = self.cache[:, 0, 0].transpose(0, 2, 1, 3)
        values = self.cache[:, 0, 1].transpose(0, 2, 1, 3)
        queries = self.qkv[..., :HIDDEN].reshape(1, SEQ, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
        heads_out = self.out.reshape(1, SEQ, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
        attention_part(new_kv[..., a:b, :], cache_kv[..., a:b, :], queries[:, a:b],
                        np.float32(HEAD_DIM ** -0.5), keys[:, a:b], values[:, a:b],
                        heads_out[:, a:b], 0, self.pool)

    def layer_norm(self, half: int) -> None:
        """Half the rows of a layer norm."""
        rows = slice(half * SEQ // 2, (half + 1) * SEQ // 2)
        layer_norm_rows(self.x[rows], self.gamma, self.beta, 1e-5, self.normed[rows])

    def mlp_up(self, half: int) -> None:
        """Half the rows of the MLP's first linear layer with its bias and GELU."""
        rows = slice(half * SEQ // 2, (half + 1) * SEQ // 2)
        linear_rows(self.x[rows], self.w_fc, self.b_fc, "gelu", None, self.inner[rows],
                     self.pool)


OPERATIONS = ("attention", "layer_norm", "mlp_up")


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


class Processes:
    """Two worker processes, each running its half of an operation when told. After
    `run(name)`, `spent` holds each half's own time (ms)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self._which = context.Value("i", 0)
        self.spent = context.Array("d", 2)
        self._start, self._done = context.Barrier(3), context.Barrier(3)
        self._workers = [context.Process(target=_process_worker, daemon=True,
                                         args=(h, self._which, self.spent, self._start,
                                               self._done))
                         for h in (0, 1)]
        for worker in self._workers:
            worker.start()

    def run(self, name: str) -> None:
        self._which.value = OPERATIONS.index(name)
        self._start.wait()
        self._done.wait()

    def close(self) -> None:
        self._which.value = -1
        self._start.wait()
        for worker in self._workers:
            worker.join()


def _process_worker(half: int, which, spent, start, done) -> None:
    work = Work()
    with threadpool_limits(limits=1, user_api="blas"):
        while True:
            start.wait()
            if which.value < 0:
                return
            spent[half] = timed(getattr(work, OPERATIONS[which.value]), half)
            done.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    work = Work()
    parallel = RowParallel(parts=2)
    if parallel.parts != 2:
        sys.exit("threadpoolctl cannot limit this BLAS: the backend would not split work")
    processes = Processes()
    kinds = ("alone", "threads", "processes", "threads inside", "processes inside")
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in OPERATIONS}
    spent = [0.0, 0.0]
    try:
        for name in OPERATIONS:
            fn = getattr(work, name)
            record = times[name]

            def half(h: int, fn=fn) -> None:
                spent[h] = timed(fn, h)

            for i in range(args.repeats + 1):  # the first round warms (pools, pages)
                # One after another, so that all three see the same machine (it drifts).
                with threadpool_limits(limits=1, user_api="blas"):
                    alone = timed(fn, 0)
                threads = timed(parallel.run, half, [(0,), (1,)])
                threads_inside = max(spent)
                procs = timed(processes.run, name)
                if i:
                    for kind, value in zip(kinds, (alone, threads, procs, threads_inside,
                                                   max(processes.spent))):
                        record[kind].append(value)
    finally:
        processes.close()
    print(f"one layer of a {SEQ}-token GPT-2 124M prefill, each operation cut in two halves; "
          f"medians of {args.repeats} alternated rounds, BLAS single-threaded. Both halves at "
          "once: from handing them out to both done, and (inside) the slower half's own time; "
          "as multiples of one half alone")
    print(f"  {'operation':12s} {'one half alone':>15s} {'2 threads':>10s} {'inside':>8s}"
          f" {'2 processes':>12s} {'inside':>8s}")
    for name in OPERATIONS:
        one, *rest = (statistics.median(times[name][k]) for k in kinds)
        threads, procs, threads_inside, procs_inside = (v / one for v in rest)
        print(f"  {name:12s} {one:12.2f} ms {threads:9.2f}x {threads_inside:7.2f}x"
              f" {procs:11.2f}x {procs_inside:7.2f}x")


if __name__ == "__main__":
    main()
