"""Decode and prefill speed of the wasm backend (wasmtime, one thread) on GPT-2 124M, against
its weight-streaming floor.

    python benchmarks/wasm_decode.py [--rounds 5] [--new-tokens 64] [--dtype float32 float16]

Batch 1, greedy. For each storage dtype, measured interleaved in one run (A B A B ...,
medians, since this machine's memory bandwidth drifts): decode ms/token after a 32-token
prompt, as generation's greedy steps take it (`greedy_next_tokens`: the LM head through its
8-bit screen, backends/wasm/greedy.py) and with all logits (`call_with_cache` and `argmax`;
the same tokens, checked); the streaming floor, the same linear kernel (M = 1) called once
over every weight matrix a decode step reads (each block's four, and the tied token table),
with no other work: what a decode step with all logits cannot go under with these kernels;
the greedy decode's ratio to it; and the prefill of 32 and 128 tokens (generation's
prefill: the cache and the last position's logits); then each later dtype's decode time
over the first's. It also checks that the float32 tokens equal the cpu backend's. The
module is the native default, `kernels.wasm`; `WEBGPT2_WASM_RELAXED=1` runs the
relaxed-SIMD build (`kernels-relaxed.wasm`).
"""

from __future__ import annotations

import argparse
import time

from common import checkpoint, median

from webgpt2.backends.wasm.backend import _PANELS, _W16, WasmBackend
from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM


def decode_matrices(lm) -> list:
    """Every weight matrix a decode step streams: each block's c_attn, c_proj, MLP c_fc and
    c_proj (stored [N, K]), and the tied token table [V, H]."""
    bb = lm.backbone
    matrices = [dense.weight("weight") for block in bb.transformer_layers
                for dense in (block.attn.c_attn, block.attn.c_proj, block.mlp_c_fc,
                              block.mlp_c_proj)]
    return matrices + [bb.token_embedding.weights]


def floor_runner(lm):
    """One call of the decode kernel per matrix: y [1, N] = x [1, K] . W [N, K]."""
    b = lm.backend
    calls = []
    for w in decode_matrices(lm):
        if w.layout == "linear":
            k, n = w.shape
        else:
            n, k = w.shape
        x, y = b.zeros((1, k)), b.zeros((1, n))
        flags = 0 if w.dtype != "float16" else _W16 | (_PANELS if w.layout == "linear" else 0)
        calls.append((x, y, w.offset, k, n, flags))

    def run() -> float:
        t0 = time.perf_counter()
        for x, y, w, k, n, flags in calls:
            b.driver.call("linear", x.offset, w, 0, 0, y.offset, 1, k, n, flags)
        return (time.perf_counter() - t0) * 1e3

    return run


def wasm_runner(folder, dtype: str):
    backend = WasmBackend(dtype=dtype)
    lm = GPT2CausalLM.from_pretrained(folder, backend=backend, dtype=dtype, progress=False)

    def prefill(prompt, cache_length):
        last, cache = lm.build_cache([prompt], cache_length=cache_length,
                                     last_position_only=True)
        return backend.argmax(lm.project(last))[0], cache

    def decode(prompt, new_tokens, all_logits=False):
        """ms/token of greedy steps as generation takes them (greedy_next_tokens: the
        screened head), or with all_logits through call_with_cache and argmax."""
        token, cache = prefill(prompt, len(prompt) + new_tokens)
        tokens = [token]
        t0 = time.perf_counter()
        for i in range(len(prompt), len(prompt) + new_tokens - 1):
            if all_logits:
                logits, _, cache = lm.call_with_cache([[token]], cache, i)
                token = backend.argmax(logits)[0]
            else:
                token = lm.greedy_next_tokens([[token]], cache, i)[0]
            tokens.append(token)
        return (time.perf_counter() - t0) * 1e3 / (new_tokens - 1), tokens

    def timed_prefill(prompt):
        t0 = time.perf_counter()
        prefill(prompt, len(prompt))
        return (time.perf_counter() - t0) * 1e3

    return lm, decode, timed_prefill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float16"],
                        choices=["float32", "float16"])
    args = parser.parse_args()
    folder = checkpoint()
    prompts = {n: [(7 * i + 11) % 50000 for i in range(n)] for n in (32, 128)}

    runners = {}
    for dtype in args.dtype:
        t0 = time.perf_counter()
        lm, decode, prefill = wasm_runner(folder, dtype)
        load_s = time.perf_counter() - t0
        runners[dtype] = (lm, decode, prefill, floor_runner(lm))
        print(f"{dtype}: loaded in {load_s:.1f} s; "
              f"{lm.backend.memory.bytes_in_use / 2**20:.0f} MiB of wasm memory in use; "
              f"module {lm.backend.describe()['module']}")
        decode(prompts[32], 3)  # warm: compiled code, free lists

    results = {d: {"decode": [], "logits": [], "floor": [], "prefill32": [], "prefill128": []}
               for d in runners}
    tokens = {}
    for _ in range(args.rounds):
        for dtype, (_, decode, prefill, floor) in runners.items():
            r = results[dtype]
            ms, tokens[dtype] = decode(prompts[32], args.new_tokens)
            r["decode"].append(ms)
            ms, logits_tokens = decode(prompts[32], args.new_tokens, all_logits=True)
            r["logits"].append(ms)
            if logits_tokens != tokens[dtype]:
                raise SystemExit(f"{dtype}: the screened head's tokens differ from argmax's")
            r["floor"].append(floor())
            r["prefill32"].append(prefill(prompts[32]))
            r["prefill128"].append(prefill(prompts[128]))

    if "float32" in tokens:
        from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM as CPU

        cpu = CPU.from_pretrained(folder, backend="cpu", progress=False)
        out = cpu.generate_step({"token_ids": [prompts[32] + [0] * args.new_tokens],
                                 "padding_mask": [[True] * 32 + [False] * args.new_tokens]})
        same = out["token_ids"][0][32:] == tokens["float32"]
        print(f"float32 greedy tokens equal the cpu backend's: {same}")

    print(f"GPT-2 124M, batch 1, wasmtime on one thread, medians of {args.rounds} "
          f"interleaved rounds ({args.new_tokens} tokens each):")
    print(f"{'storage':>8} {'decode ms/tok':>14} {'all logits':>11} {'floor ms':>9} "
          f"{'ratio':>6} {'prefill 32 ms':>14} {'prefill 128 ms':>15}")
    for dtype, r in results.items():
        decode_ms, floor_ms = median(r["decode"]), median(r["floor"])
        print(f"{dtype:>8} {decode_ms:14.2f} {median(r['logits']):11.2f} {floor_ms:9.2f} "
              f"{decode_ms / floor_ms:6.2f} {median(r['prefill32']):14.1f} "
              f"{median(r['prefill128']):15.1f}")
    first, *others = results
    for dtype in others:
        ratio = median(results[dtype]["decode"]) / median(results[first]["decode"])
        print(f"decode {dtype} / {first}: {ratio:.2f}")


if __name__ == "__main__":
    main()
