"""Decode speed of the webgpu backend on GPT-2 124M, against the device's weight-streaming floor.

    python benchmarks/webgpu_decode.py [--rounds 3] [--new-tokens 128] [--prompt-tokens 32]

Batch 1, greedy. For float32 and float16 weight storage, measured interleaved in one run
(A B A B ..., medians, since this machine's speed drifts): prefill ms, decode ms/token,
dispatches, submissions and bytes read back per decode token, and the streaming floor: one
submission of a kernel that only reads every weight buffer once (webgpu_stream.py), timed on
the same device. The decode step's target is one submission, a few bytes read back, and at
most 1.5x the floor. It also checks that the float32 tokens equal the cpu backend's.
"""

from __future__ import annotations

import argparse
import time

from common import checkpoint, median
from webgpu_stream import stream, weight_parts


def _all_weights(layer):
    yield from layer._weights.values()
    for child in layer.children().values():
        yield from _all_weights(child)


def webgpu_runner(folder, dtype: str):
    from webgpt2.backends.webgpu import WebGPUBackend
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    backend = WebGPUBackend(dtype=dtype)
    lm = GPT2CausalLM.from_pretrained(folder, backend=backend, dtype=dtype, progress=False)
    weights = list(_all_weights(lm.backbone))

    def run(prompt, new_tokens):
        t0 = time.perf_counter()
        hidden, cache = lm.build_cache([prompt], cache_length=len(prompt) + new_tokens)
        token = backend.argmax(lm.project(backend.select_position(hidden, len(prompt) - 1)))[0]
        t1 = time.perf_counter()
        backend.reset_counters()
        tokens = [token]
        for i in range(len(prompt), len(prompt) + new_tokens - 1):
            logits, _, cache = lm.call_with_cache([[token]], cache, i)
            token = backend.argmax(logits)[0]
            tokens.append(token)
        t2 = time.perf_counter()
        steps = new_tokens - 1
        per_token = {k: v / steps for k, v in backend.counters.items()}
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / steps, tokens, per_token

    def floor_ms():
        t0 = time.perf_counter()
        stream(backend, weights)
        return (time.perf_counter() - t0) * 1e3

    weight_bytes = sum(size for w in weights for _, size, _ in weight_parts(w))
    return backend, run, floor_ms, weight_bytes


def cpu_tokens(folder, prompt, new_tokens):
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    lm = GPT2CausalLM.from_pretrained(folder, backend="cpu", progress=False)
    b = lm.backend
    hidden, cache = lm.build_cache([prompt], cache_length=len(prompt) + new_tokens)
    tokens = [b.argmax(lm.project(b.select_position(hidden, len(prompt) - 1)))[0]]
    for i in range(len(prompt), len(prompt) + new_tokens - 1):
        logits, _, cache = lm.call_with_cache([[tokens[-1]]], cache, i)
        tokens.append(b.argmax(logits)[0])
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    args = parser.parse_args()

    folder = checkpoint()
    prompt = list(range(1000, 1000 + args.prompt_tokens))
    runners = {dtype: webgpu_runner(folder, dtype) for dtype in ("float32", "float16")}
    info = runners["float32"][0].describe()
    kernel = ("matvec_subgroups" if runners["float32"][0].subgroup_matvec else "matvec")
    print(f"GPT-2 124M (12 layers, 768 wide, 50257 vocab) on webgpu: {info['adapter']} "
          f"({info['backend_type']}, {info['driver']} driver), decode kernel {kernel}")
    print(f"batch 1, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens greedy, "
          f"{args.rounds} rounds interleaved, medians")
    for _, run, floor, _ in runners.values():  # warm: pipelines, pools, bind groups
        run(prompt, 4)
        floor()
    results = {dtype: {"prefill": [], "decode": [], "floor": []} for dtype in runners}
    tokens, counters = {}, {}
    for _ in range(args.rounds):
        for dtype, (_, run, floor, _) in runners.items():
            results[dtype]["floor"].append(floor())
            prefill, decode, tokens[dtype], counters[dtype] = run(prompt, args.new_tokens)
            results[dtype]["prefill"].append(prefill)
            results[dtype]["decode"].append(decode)
            results[dtype]["floor"].append(floor())
    reference = cpu_tokens(folder, prompt, args.new_tokens)
    print(f"  float32 greedy tokens identical to the cpu backend: {tokens['float32'] == reference}")
    same = sum(a == b for a, b in zip(tokens["float16"], reference))
    print(f"  float16 greedy tokens equal to the cpu backend's: {same} of {len(reference)}")
    for dtype, (_, _, _, weight_bytes) in runners.items():
        m = {k: median(v) for k, v in results[dtype].items()}
        c = counters[dtype]
        print(f"  {dtype}: weights {weight_bytes / 2**20:.0f} MiB")
        print(f"    prefill {args.prompt_tokens} tokens {m['prefill']:8.1f} ms")
        print(f"    decode {m['decode']:8.2f} ms/token   streaming floor {m['floor']:8.2f} ms "
              f"({weight_bytes / m['floor'] / 1e6:.2f} GB/s)   ratio "
              f"{m['decode'] / m['floor']:.2f}x (target <= 1.5x)")
        print(f"    per token: {c['dispatches']:.1f} dispatches, {c['submissions']:.2f} "
              f"submissions, {c['bytes_read']:.1f} bytes read back, "
              f"{c['bytes_written']:.1f} bytes written")


if __name__ == "__main__":
    main()
