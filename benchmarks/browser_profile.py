"""Where a greedy decode step's time goes in the page: each kernel of one step of the wasm
backend, run and timed on its own in headless Chromium.

    python benchmarks/browser_profile.py [--models gpt2-124m] [--dtype float32 float16]
        [--rounds 5]

For each storage dtype (one thread): the page loads the checkpoint, generates 40 tokens (so
that V8 has tiered every kernel up), prefills the transformers.js peer's 14-token prompt and
records the command list of one greedy step (`greedy_next_tokens`: the layers and the
screened LM head); then it runs each recorded kernel call alone through `run`, `--rounds`
times, and prints the medians summed by kernel (linear, greedy_head, attention, layer_norm,
...). The sum is close to the step's own time: a kernel run alone pays one extra call into
the module (microseconds) and finds its weights no more in cache than inside the step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_util import BOOT_TIMEOUT_MS, chromium, page_server  # noqa: E402
from common import browser_missing, checkpoint  # noqa: E402

# The peer's prompt, "The quick brown fox jumps over the lazy dog. Once upon a time".
PROMPT = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 4874, 2402, 257, 640]

BACKEND = """
from webgpt2.backends import register_backend
from webgpt2.backends.wasm import WasmBackend
from webgpt2.backends.wasm.browser import BrowserDriver
register_backend("wasm", lambda: WasmBackend(driver=BrowserDriver(threads=1), dtype="DTYPE"))
"""

# Page-side Python: record one greedy step's kernel calls, then time each alone.
PROFILE = """
import json, statistics, time, webgpt2_page
from array import array
from webgpt2.backends.wasm.commands import OPCODES
lm = webgpt2_page._model
b = lm.backend
hidden, cache = lm.build_cache([PROMPT], cache_length=len(PROMPT) + 2, last_position_only=True)
b.release(hidden)
lm.greedy_next_tokens([[262]], cache, len(PROMPT))
b.synchronize()
recorded, flush = [], b.commands.flush
def record():
    if b.commands._names:
        recorded.append((list(b.commands._words), list(b.commands._names)))
    flush()
b.commands.flush = record
try:
    lm.greedy_next_tokens([[262]], cache, len(PROMPT) + 1)
finally:
    b.commands.flush = flush
calls, at = [], 1
for words, names in recorded:
    at = 1
    for name in names:
        width = 1 + len(OPCODES[name][1])
        calls.append((name, [w & 0xFFFFFFFF for w in words[at:at + width]]))
        at += width
def alone(words):
    b.driver.write(b.commands.block, array("I", [0] + words))
    t = time.perf_counter()
    b.driver.call("run", b.commands.block, 1)
    return (time.perf_counter() - t) * 1000
times = [[] for _ in calls]
for _ in range(ROUNDS):
    for i, (name, words) in enumerate(calls):
        times[i].append(alone(words))
json.dumps([(name, statistics.median(t)) for (name, _), t in zip(calls, times)])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-124m"])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float16"],
                        choices=["float32", "float16"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if browser_missing("browser profile"):
        return 1
    folders = {name: checkpoint(name) for name in args.models}
    mounts = {f"ckpt/{name}": folder for name, folder in folders.items()}
    with page_server(mounts) as url, chromium() as context:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=BOOT_TIMEOUT_MS)
        page.set_default_timeout(1_800_000)
        for name in folders:
            for dtype in args.dtype:
                page.evaluate("(c) => webgpt2.runPython(c)", BACKEND.replace("DTYPE", dtype))
                page.evaluate("([u, b]) => webgpt2.loadModel(u, {backend: b})",
                              [f"{url}ckpt/{name}", "wasm"])
                page.evaluate("(p) => webgpt2.generate(p, {maxNewTokens: 40, "
                              "sampler: 'greedy'})", "Hello there")
                calls = json.loads(page.evaluate(
                    "(c) => webgpt2.runPython(c)",
                    PROFILE.replace("PROMPT", str(PROMPT)).replace("ROUNDS", str(args.rounds))))
                kernels: dict[str, list[float]] = {}
                for kernel, ms in calls:
                    kernels.setdefault(kernel, []).append(ms)
                total = sum(ms for _, ms in calls)
                print(f"{name} {dtype}, one thread: {len(calls)} kernel calls, "
                      f"{total:.2f} ms in all (medians of {args.rounds})")
                for kernel, ms in sorted(kernels.items(), key=lambda kv: -sum(kv[1])):
                    print(f"  {kernel:22s} x{len(ms):3d} {sum(ms):8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
