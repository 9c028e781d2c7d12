"""How much of the cpu backend's time is its elementwise NumPy work: an upper bound on what
compiled kernels for it (numba, C) could save.

    python benchmarks/elementwise_bound.py [--pairs 16] [--steps 128]

Runs GPT-2 124M as it is, and again with layer norm, GELU and the softmax's elementwise
passes skipped (the matrix products, bias and residual adds, the KV cache writes and all
the Python stay). The skipped run computes wrong values: only its time means anything. A
compiled kernel still has to make one pass where NumPy makes several, so it cannot save
more than the difference. Prints, alternated in one run, the 512-token prefill (real,
skipped, transformers', and the prefill's matrix products alone) and a decode step (real,
skipped, and the weight-streaming floor, token by token).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from common import checkpoint, median
from decode import (
    floor_matrices,
    long_prompt_ids,
    matmul_floor_ms,
    prefill_matmuls,
    quiet,
    streaming_ms,
    transformers_runner,
    webgpt2_runner,
)

from webgpt2.backends.cpu.buffers import BufferPool
from webgpt2.backends.cpu.kernels import QUERY_BLOCK, Kernels


class Skipped(Kernels):
    """The cpu backend's kernels with layer norm, GELU and the softmax's passes not run."""

    @staticmethod
    def gelu_(x: np.ndarray, pool: BufferPool, bias: np.ndarray | None = None) -> np.ndarray:
        return x

    @staticmethod
    def layer_norm_rows(x, gamma, beta, epsilon, out) -> None:
        pass

    @staticmethod
    def layer_norm_row(x, gamma, beta, epsilon, out) -> None:
        pass

    @staticmethod
    def causal_attention(queries, keys, values, out, cache_update_index, pool) -> None:
        """causal_attention's two products per query block, without the mask and softmax."""
        seq_len = queries.shape[-2]
        for q0 in range(0, seq_len, QUERY_BLOCK):
            q1 = min(seq_len, q0 + QUERY_BLOCK)
            visible = cache_update_index + q1
            scores = pool.empty((*queries.shape[:-2], q1 - q0, visible))
            np.matmul(queries[..., q0:q1, :], keys[..., :visible, :].swapaxes(-1, -2),
                      out=scores)
            np.matmul(scores, values[..., :visible, :], out=out[..., q0:q1, :])
            pool.give(scores)

    @staticmethod
    def last_query_attention(query, keys, values):
        """last_query_attention's two products, without the softmax."""
        return np.matmul(np.matmul(query, keys.swapaxes(-1, -2)), values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    folder = checkpoint()
    lm, ours = webgpt2_runner(folder)
    theirs = transformers_runner(folder)
    backend = lm.backend
    kernels = {"real": Kernels(), "skipped": Skipped()}

    def use(kind: str) -> None:
        backend.kernels = kernels[kind]

    long_prompt = long_prompt_ids(512)
    products = prefill_matmuls(lm, len(long_prompt))
    # The skipped runs overflow (their values are wrong); np.errstate would not reach the
    # backend's worker thread.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    for kind in ("real", "skipped"):
        use(kind)
        ours(long_prompt, 2)
    theirs(long_prompt, 2)
    times: dict[str, list[float]] = {k: [] for k in (
        "real", "skipped", "transformers", "matmuls", "step real", "step skipped",
        "floor")}
    for i in range(args.pairs):
        for kind in ("real", "skipped") if i % 2 else ("skipped", "real"):
            use(kind)
            quiet()
            times[kind].append(ours(long_prompt, 2)[0])
        quiet()
        times["transformers"].append(theirs(long_prompt, 2)[0])
        quiet()
        times["matmuls"].append(matmul_floor_ms(products))

    prompt = list(range(1000, 1032))
    fastest, _ = floor_matrices(lm)
    use("real")  # both caches filled by the real prefill
    caches = {k: lm.build_cache([prompt], cache_length=len(prompt) + args.steps,
                                last_position_only=True)[1]
              for k in ("real", "skipped")}
    for i in range(len(prompt), len(prompt) + args.steps):
        times["floor"].append(streaming_ms(fastest))
        for kind in ("real", "skipped") if i % 2 else ("skipped", "real"):
            use(kind)
            t0 = time.perf_counter()
            # The same tokens for both (the skipped run's logits are meaningless).
            logits, _, caches[kind] = lm.call_with_cache([[1000 + i % 7]], caches[kind], i)
            backend.argmax(logits)
            times["step " + kind].append((time.perf_counter() - t0) * 1e3)
    use("real")
    m = {k: median(v) for k, v in times.items()}
    pairs = median([s / r for s, r in zip(times["skipped"], times["real"])])
    print(f"GPT-2 124M, {len(long_prompt)}-token prefill ({args.pairs} alternated pairs) and "
          f"decode steps ({args.steps}, alternated with the streaming floor); 'skipped': layer "
          "norm, GELU and softmax passes not run (wrong values, time only)")
    print(f"  prefill: real {m['real']:.1f} ms, skipped {m['skipped']:.1f} ms (pair median "
          f"{pairs:.3f}x); transformers {m['transformers']:.1f} ms, matrix products alone "
          f"{m['matmuls']:.1f} ms")
    print(f"    / transformers: real {m['real'] / m['transformers']:.2f}x, skipped "
          f"{m['skipped'] / m['transformers']:.2f}x;  / matrix products: real "
          f"{m['real'] / m['matmuls']:.2f}x, skipped {m['skipped'] / m['matmuls']:.2f}x")
    print(f"  decode step: real {m['step real']:.2f} ms, skipped {m['step skipped']:.2f} ms, "
          f"floor {m['floor']:.2f} ms: real {m['step real'] / m['floor']:.2f}x, skipped "
          f"{m['step skipped'] / m['floor']:.2f}x the floor")


if __name__ == "__main__":
    main()
