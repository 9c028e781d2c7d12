"""The demo page's speed in headless Chromium, beside native webgpu on the same checkpoints.

    python benchmarks/browser.py [--rounds 3] [--new-tokens 32]

Prints: time from navigation to `webgpt2.ready` (Pyodide booted, webgpt2 installed, the
backends probed) in a fresh browser profile; then for the 2-layer and 6-layer checkpoints
that transformers writes for the tests (real 50257-token vocabulary), greedy generation's time
to first token (tokenize + prefill + first sample) and decode ms/token (the mean interval
between sampled tokens) on the page's webgpu backend (the browser driver) and on the native
webgpu backend (wgpu-py) in this process, measured by the same loop, interleaved round by
round, medians. Here the page's WebGPU is SwiftShader and the native one lavapipe: both run
on the CPU, so the figures compare drivers and overheads, not GPUs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_util import (  # noqa: E402  (plain modules in tests/, shared with the tests)
    BOOT_TIMEOUT_MS,
    chromium,
    missing_requirements,
    page_server,
    record_generation,
)
from common import checkpoint  # noqa: E402
from reference_checkpoints import CHECKPOINTS  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. It was a"


def native_webgpu(folder: Path):
    """The native webgpu model for folder, or the reason there is none."""
    from webgpt2.backends import backend_status
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    status = backend_status().get("webgpu", "not registered")
    if status != "available":
        return None, status
    return GPT2CausalLM.from_pretrained(folder, backend="webgpu", progress=False), None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        print(f"cannot run the browser benchmark: {reason}")
        return 1
    folders = {name: checkpoint(name, *CHECKPOINTS[name]) for name in ("tiny-2l", "small-6l")}
    mounts = {f"ckpt/{name}": folder for name, folder in folders.items()}
    with page_server(mounts) as url, chromium() as context:
        ready_ms = []
        for _ in range(2):  # a first visit, then one with Pyodide in the browser's cache
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=BOOT_TIMEOUT_MS)
            ready_ms.append((time.perf_counter() - start) * 1000)
            if len(ready_ms) == 1:
                page.close()
        info = page.evaluate("webgpt2.ready")
        print(f"page: Chromium headless, {info['backends']} (Pyodide {info['pyodide']}, "
              f"Python {info['python']})")
        print(f"  navigation -> ready: {ready_ms[0]:.0f} ms first visit (fresh profile, local "
              f"Pyodide), {ready_ms[1]:.0f} ms second visit (Pyodide cached)")
        print(f"greedy, {len(PROMPT.split())}-word prompt, {args.new_tokens} new tokens, "
              f"{args.rounds} rounds interleaved page / native, medians")
        for name, folder in folders.items():
            t0 = time.perf_counter()
            model = page.evaluate("([u, b]) => webgpt2.loadModel(u, {backend: b})",
                                  [f"{url}ckpt/{name}", "webgpu"])
            load_ms = (time.perf_counter() - t0) * 1000
            native, why_not = native_webgpu(folder)

            def page_run(n: int) -> dict:
                return page.evaluate("([p, n]) => webgpt2.generate(p, {maxNewTokens: n, "
                                     "sampler: 'greedy'})", [PROMPT, n])

            page_run(4)  # compile the pipelines before timing
            if native is not None:
                record_generation(native, PROMPT, 4)
            rows: dict[str, list[float]] = {"page_ttft": [], "page_decode": [],
                                            "native_ttft": [], "native_decode": []}
            same = True
            for _ in range(args.rounds):
                ours = page_run(args.new_tokens)
                rows["page_ttft"].append(ours["timings"]["timeToFirstTokenMs"])
                rows["page_decode"].append(ours["timings"]["decodeMsPerToken"] or 0.0)
                if native is not None:
                    theirs = record_generation(native, PROMPT, args.new_tokens)
                    rows["native_ttft"].append(theirs["timings"]["timeToFirstTokenMs"])
                    rows["native_decode"].append(theirs["timings"]["decodeMsPerToken"] or 0.0)
                    same &= theirs["tokenIds"] == ours["tokenIds"]
            m = {k: statistics.median(v) for k, v in rows.items() if v}
            print(f"{name} ({model['layers']} layers, {model['hidden']} wide, "
                  f"{model['parameters'] / 1e6:.1f}M parameters): page load {load_ms:.0f} ms")
            print(f"  page   webgpu ({model['device']}): first token {m['page_ttft']:7.0f} ms, "
                  f"decode {m['page_decode']:7.1f} ms/token")
            if native is None:
                print(f"  native webgpu: skipped ({why_not})")
            else:
                adapter = native.backend.describe().get("adapter", "")
                print(f"  native webgpu ({adapter}): first token {m['native_ttft']:7.0f} ms, "
                      f"decode {m['native_decode']:7.1f} ms/token; page / native decode "
                      f"{m['page_decode'] / m['native_decode']:.2f}x; same tokens: {same}")
                del native
    return 0


if __name__ == "__main__":
    sys.exit(main())
