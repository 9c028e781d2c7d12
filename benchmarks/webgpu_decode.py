"""Decode and prefill speed of the webgpu backend on GPT-2 124M, against the device's
weight-streaming floor.

    python benchmarks/webgpu_decode.py [--rounds 3] [--new-tokens 32] [--prompt-tokens 32]
        [--long-prompt 512] [--search-tokens 8] [--device-profile small|large|measure]
        [--kv-dtype float32|float16] [--f16-arithmetic auto|on|off] [--profile]

Batch 1. For float32 and float16 weight storage, measured interleaved in one run
(A B A B ..., medians, since this machine's speed drifts): prefill of a 32-token and a
`--long-prompt`-token prompt (0 skips it: slow on a CPU adapter), greedy decode ms/token,
beam-4 and contrastive-4 ms/token (`--search-tokens` steps; 0 skips them), the streaming
floor (one submission of a kernel that only reads every weight buffer once:
webgpu_stream.py) and each time's ratio to it, and per greedy token the dispatches,
submissions and bytes read back, and the host's time per greedy token of generate() outside
the device's waits, with the model's Python and with replayed steps. It also checks that
the float32 greedy tokens equal the cpu backend's. `--f16-arithmetic on|off` pins whether
the float16 run multiplies in f16 (shader-f16; by default the device profile decides).
`--profile` (needs timestamp-query) then times every kernel of one decode step and of one
32-token prefill and prints each kernel's share.
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


class Runner:
    """One model on one webgpu backend, and the measurements of it."""

    def __init__(self, folder, dtype: str, device_profile: str | None, kv_dtype: str,
                 f16_arithmetic: bool | None = None) -> None:
        from webgpt2.backends.webgpu import WebGPUBackend
        from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

        self.backend = WebGPUBackend(dtype=dtype, device_profile=device_profile,
                                     kv_dtype=kv_dtype, f16_arithmetic=f16_arithmetic)
        self.lm = GPT2CausalLM.from_pretrained(folder, backend=self.backend, dtype=dtype,
                                               progress=False)
        self.weights = list(_all_weights(self.lm.backbone))
        self.weight_bytes = sum(size for w in self.weights for _, size, _ in weight_parts(w))

    def prefill(self, prompt: list[int], cache_length: int):
        """(ms, first token, cache) of the generation prefill and the first argmax."""
        lm, backend = self.lm, self.backend
        t0 = time.perf_counter()
        hidden, cache = lm.build_cache([prompt], cache_length=cache_length,
                                       last_position_only=True)
        token = backend.argmax(lm.project(backend.select_position(hidden, 0)))[0]
        return (time.perf_counter() - t0) * 1e3, token, cache

    def host(self, prompt: list[int], new_tokens: int, replay: bool) -> float:
        """ms per greedy token of generate() spent on the host, not waiting for the device
        (wall time less the read-backs' waits): the model's Python and the encoding of each
        step, or with `replay` the replayed steps' encoding only (backends/replay.py)."""
        lm, backend = self.lm, self.backend
        driver, waited = backend.recorder.driver, [0.0]
        read = driver.read_buffer

        def timed_read(*args):
            t0 = time.perf_counter()
            try:
                return read(*args)
            finally:
                waited[0] += time.perf_counter() - t0

        driver.read_buffer = timed_read
        if not replay:
            backend.step_replayer = lambda: None
        inputs = {"token_ids": [prompt + [0] * new_tokens],
                  "padding_mask": [[True] * len(prompt) + [False] * new_tokens]}
        try:
            lm.generate_step(inputs)  # the prefill's share is taken out below
            t0, waited[0] = time.perf_counter(), 0.0
            lm.generate_step(inputs)
            whole = time.perf_counter() - t0 - waited[0]
            t0, waited[0] = time.perf_counter(), 0.0
            lm.generate_step({k: [v[0][:len(prompt) + 1]] for k, v in inputs.items()})
            prefill = time.perf_counter() - t0 - waited[0]
        finally:
            del driver.read_buffer
            backend.__dict__.pop("step_replayer", None)
        return (whole - prefill) * 1e3 / (new_tokens - 1)

    def greedy(self, prompt: list[int], new_tokens: int):
        """(prefill ms, decode ms/token, tokens, counters per decode token)."""
        lm, backend = self.lm, self.backend
        prefill, token, cache = self.prefill(prompt, len(prompt) + new_tokens)
        t1 = time.perf_counter()
        backend.reset_counters()
        tokens = [token]
        for i in range(len(prompt), len(prompt) + new_tokens - 1):
            logits, _, cache = lm.call_with_cache([[token]], cache, i)
            token = backend.argmax(logits)[0]
            tokens.append(token)
        steps = new_tokens - 1
        decode = (time.perf_counter() - t1) * 1e3 / steps
        per_token = {k: v / steps for k, v in backend.counters.items()}
        backend.release(cache)
        return prefill, decode, tokens, per_token

    def search(self, prompt: list[int], new_tokens: int, **options) -> float:
        """ms per new token of beam or contrastive search (prefill excluded: it is timed by
        a separate prefill of the same prompt and subtracted)."""
        total = len(prompt) + new_tokens
        inputs = {"token_ids": [prompt + [0] * new_tokens],
                  "padding_mask": [[True] * len(prompt) + [False] * new_tokens]}
        t0 = time.perf_counter()
        self.lm.generate(inputs, stop_token_ids=None, **options)
        elapsed = (time.perf_counter() - t0) * 1e3
        prefill, _, cache = self.prefill(prompt, total)
        self.backend.release(cache)
        return (elapsed - prefill) / new_tokens

    def floor(self) -> float:
        t0 = time.perf_counter()
        stream(self.backend, self.weights)
        return (time.perf_counter() - t0) * 1e3

    def profile(self, prompt: list[int]) -> tuple[dict, dict]:
        """Per kernel [ns, dispatches] of one 32-token prefill and of one decode step."""
        lm, backend = self.lm, self.backend
        recorder = backend.recorder
        recorder.profile = {}
        _, token, cache = self.prefill(prompt, len(prompt) + 2)
        prefill, recorder.profile = recorder.profile, {}
        logits, _, cache = lm.call_with_cache([[token]], cache, len(prompt))
        backend.argmax(logits)
        decode, recorder.profile = recorder.profile, None
        backend.release(cache)
        return prefill, decode


def cpu_tokens(folder, prompt, new_tokens):
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    lm = GPT2CausalLM.from_pretrained(folder, backend="cpu", progress=False)
    b = lm.backend
    hidden, cache = lm.build_cache([prompt], cache_length=len(prompt) + new_tokens,
                                   last_position_only=True)
    tokens = [b.argmax(lm.project(b.select_position(hidden, 0)))[0]]
    for i in range(len(prompt), len(prompt) + new_tokens - 1):
        logits, _, cache = lm.call_with_cache([[tokens[-1]]], cache, i)
        tokens.append(b.argmax(logits)[0])
    return tokens


def print_profile(title: str, profile: dict) -> None:
    total = sum(ns for ns, _ in profile.values()) or 1
    print(f"    {title}: {total / 1e6:.1f} ms of kernel time (timestamps; one pass each)")
    for label, (ns, count) in sorted(profile.items(), key=lambda item: -item[1][0]):
        print(f"      {100 * ns / total:5.1f}%  {ns / 1e6:8.2f} ms  {count:4d} x  {label}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--long-prompt", type=int, default=512,
                        help="tokens of the long prefill (0 skips it)")
    parser.add_argument("--search-tokens", type=int, default=8,
                        help="new tokens of beam-4 and contrastive-4 (0 skips them)")
    parser.add_argument("--device-profile", choices=("small", "large", "measure"),
                        default=None, help="force the kernel shapes of a small or a large "
                        "device, or measure both (cached per adapter)")
    parser.add_argument("--kv-dtype", choices=("float32", "float16"), default="float32",
                        help="storage of the KV cache")
    parser.add_argument("--f16-arithmetic", choices=("auto", "on", "off"), default="auto",
                        help="float16 run: multiply in f16 (shader-f16) or not")
    parser.add_argument("--profile", action="store_true",
                        help="print each kernel's share of a decode step and of a prefill")
    args = parser.parse_args()

    folder = checkpoint()
    prompt = list(range(1000, 1000 + args.prompt_tokens))
    long_prompt = [(7 * i) % 50000 for i in range(args.long_prompt)]
    f16 = {"auto": None, "on": True, "off": False}[args.f16_arithmetic]
    runners = {dtype: Runner(folder, dtype, args.device_profile, args.kv_dtype,
                             f16 if dtype == "float16" else None)
               for dtype in ("float32", "float16")}
    backend = runners["float32"].backend
    info = backend.describe()
    print(f"GPT-2 124M (12 layers, 768 wide, 50257 vocab) on webgpu: {info['adapter']} "
          f"({info['backend_type']}, {info['driver']} driver)")
    print(f"device profile: {backend.device_profile}, KV cache {args.kv_dtype}, float16 "
          f"arithmetic in the float16 run: {runners['float16'].backend.f16_arithmetic}")
    print(f"batch 1, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens greedy, "
          f"{args.rounds} rounds interleaved, medians")
    for r in runners.values():  # warm: pipelines, pools, bind groups
        r.greedy(prompt, 4)
        r.floor()
        if args.search_tokens:
            r.search(prompt, 2, sampler="beam", num_beams=4)
            r.search(prompt, 2, sampler="contrastive", top_k=4, penalty_alpha=0.6)
    names = ("floor", "prefill", "long", "decode", "beam", "contrastive", "host", "replayed")
    results = {dtype: {k: [] for k in names} for dtype in runners}
    tokens, counters = {}, {}
    for _ in range(args.rounds):
        for dtype, r in runners.items():
            res = results[dtype]
            res["floor"].append(r.floor())
            prefill, decode, tokens[dtype], counters[dtype] = r.greedy(prompt, args.new_tokens)
            res["prefill"].append(prefill)
            res["decode"].append(decode)
            res["host"].append(r.host(prompt, args.new_tokens, replay=False))
            res["replayed"].append(r.host(prompt, args.new_tokens, replay=True))
            if args.long_prompt:
                ms, _, cache = r.prefill(long_prompt, args.long_prompt + 1)
                r.backend.release(cache)
                res["long"].append(ms)
            if args.search_tokens:
                res["beam"].append(r.search(prompt, args.search_tokens, sampler="beam",
                                            num_beams=4))
                res["contrastive"].append(r.search(prompt, args.search_tokens,
                                                   sampler="contrastive", top_k=4,
                                                   penalty_alpha=0.6))
            res["floor"].append(r.floor())
    reference = cpu_tokens(folder, prompt, args.new_tokens)
    print(f"  float32 greedy tokens identical to the cpu backend: {tokens['float32'] == reference}")
    same = sum(a == b for a, b in zip(tokens["float16"], reference))
    print(f"  float16 greedy tokens equal to the cpu backend's: {same} of {len(reference)}")
    for dtype, r in runners.items():
        m = {k: median(v) for k, v in results[dtype].items() if v}
        floor = m["floor"]
        c = counters[dtype]
        print(f"  {dtype}: weights {r.weight_bytes / 2**20:.0f} MiB, streaming floor "
              f"{floor:.2f} ms ({r.weight_bytes / floor / 1e6:.2f} GB/s)")
        print(f"    decode {m['decode']:8.2f} ms/token   {m['decode'] / floor:5.2f}x floor "
              f"(target <= 1.5x)   all: {[round(v, 1) for v in results[dtype]['decode']]}")
        print(f"    prefill {args.prompt_tokens} tokens {m['prefill']:8.1f} ms   "
              f"{m['prefill'] / floor:5.2f}x floor   all: "
              f"{[round(v) for v in results[dtype]['prefill']]}")
        if "long" in m:
            print(f"    prefill {args.long_prompt} tokens {m['long']:8.1f} ms   "
                  f"{m['long'] / floor:5.2f}x floor")
        if "beam" in m:
            for name in ("beam", "contrastive"):
                print(f"    {name}-4 {m[name]:8.2f} ms/token   {m[name] / floor:5.2f}x floor   "
                      f"{m[name] / m['decode']:.2f}x greedy")
        print(f"    host time per greedy token of generate(), outside the device's waits: "
              f"{m['host']:.2f} ms with the model's Python, {m['replayed']:.2f} ms replayed "
              f"(backends/replay.py)")
        print(f"    per greedy token: {c['dispatches']:.1f} dispatches, {c['submissions']:.2f} "
              f"submissions, {c['bytes_read']:.1f} bytes read back, "
              f"{c['bytes_written']:.1f} bytes written")
    if args.profile:
        for dtype, r in runners.items():
            print(f"  {dtype} kernel profile")
            prefill, decode = r.profile(prompt)
            print_profile("decode step", decode)
            print_profile(f"prefill {args.prompt_tokens} tokens", prefill)


if __name__ == "__main__":
    main()
