"""The demo page's speed in headless Chromium: the `wasm` backend beside `webgpu`, on the small
test checkpoints and GPT-2 124M, against the in-page wasm streaming floor.

    python benchmarks/browser.py [--rounds 3] [--new-tokens 32]
        [--models tiny-2l small-6l gpt2-124m] [--backends wasm webgpu] [--threads 1 2]
        [--dtype float32 float16] [--paired 10] [--native-webgpu]

Prints: time from navigation to `webgpt2.ready` in a fresh browser profile; then for each
checkpoint and backend in the page: load time (fetch, parse, upload), greedy decode ms/token
(the mean interval between sampled tokens) after the transformers.js peer's 14-token prompt
("The quick brown fox jumps over the lazy dog. Once upon a time"), time to first token
(tokenize + prefill + first sample) for that prompt and for a 128-token one, warm (after a
first generation), medians of the rounds. For wasm it also prints
the in-page floor, measured in each round beside the decode: the decode kernel (linear,
M = 1) over every weight matrix a decode step reads, once each, in one command-list run:
what a float32 step cannot go under with these kernels in this browser. wasm runs once per
`--threads` count (the page is cross-origin isolated, so more than one thread splits each
matrix product between workers; the page's own default is the core count, at most 4) and
`--dtype` (the storage of its weights, float32 by default; with several, each thread count
runs them one after the other and a last line per count gives their decode ratio to the
first dtype's: float16 / float32). Those pages ran one after the other, so their ratio also
carries the machine's drift between them (on this shared 2-core VM, float16 runs of one
minute differed by 1.5x); with `--paired N` the models of every dtype stay loaded after
their runs and N more rounds alternate them in the same page, and the ratio printed is the
median of the N pairs' ratios. The page loads the relaxed-SIMD build where the browser
has relaxed SIMD; `WEBGPT2_WASM_RELAXED=0` here (forwarded into the page) loads the baseline.
WebGPU here is SwiftShader (a CPU fallback), about 440 ms/token on GPT-2 124M: it runs 8
tokens, one round, there (or leave it out: `--backends wasm`).

With --native-webgpu the small checkpoints also run on the native webgpu backend (wgpu-py)
in this process, for the page / native ratio of the browser driver.

The peer: `/work/shared/peers/transformersjs/run.sh .cache/bench/gpt2-124m --device wasm`
(transformers.js in the same Chromium); run the two alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_util import (  # noqa: E402  (plain modules in tests/, shared with the tests)
    BOOT_TIMEOUT_MS,
    chromium,
    page_server,
    record_generation,
)
from common import browser_missing, checkpoint  # noqa: E402

# The transformers.js peer's prompt (14 GPT-2 tokens).
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"

# Page-side Python: the wasm backend with this many threads, waiting until its helpers run.
THREADS = textwrap.dedent("""
    import os, time, js
    from pyodide.ffi import run_sync
    from webgpt2.backends import register_backend, get_backend
    from webgpt2.backends.wasm import WasmBackend
    from webgpt2.backends.wasm.browser import BrowserDriver

    os.environ["WEBGPT2_WASM_RELAXED"] = "__RELAXED__"  # this process's, forwarded (auto if unset)
    register_backend("wasm", lambda: WasmBackend(driver=BrowserDriver(threads=COUNT),
                                                 dtype="DTYPE"))
    driver = get_backend("wasm").driver
    start = time.time()
    while driver.ready_threads() < COUNT and time.time() - start < 10:
        run_sync(js.Promise.new(lambda resolve, reject: js.setTimeout(resolve, 20)))
    [driver.ready_threads(), driver.module]
""")

# Page-side Python: keep the page's model under KEY (so that another can be loaded beside
# it), make a kept one the page's model again, or drop them all.
KEEP = ("import webgpt2_page\n"
        "webgpt2_page.__dict__.setdefault('_bench_models', {})['KEY'] = "
        "(webgpt2_page._model, webgpt2_page._model_info)")
USE = ("import webgpt2_page\n"
       "webgpt2_page._model, webgpt2_page._model_info = webgpt2_page._bench_models['KEY']")
DROP = "import webgpt2_page\nwebgpt2_page._bench_models = {}"

# Page-side Python: the in-page floor of the loaded wasm model (see the module docstring).
FLOOR = textwrap.dedent("""
    import json, time, statistics
    import webgpt2_page
    from webgpt2.backends.wasm.backend import _PANELS, _W16

    lm = webgpt2_page._model
    b, bb = lm.backend, lm.backbone
    weights = [d.weight("weight") for block in bb.transformer_layers
               for d in (block.attn.c_attn, block.attn.c_proj, block.mlp_c_fc,
                         block.mlp_c_proj)] + [bb.token_embedding.weights]
    calls = []
    for w in weights:
        k, n = w.shape if w.layout == "linear" else w.shape[::-1]
        x, y = b.zeros((1, k)), b.zeros((1, n))
        flags = 0 if w.dtype != "float16" else _W16 | (_PANELS if w.layout == "linear" else 0)
        calls.append((x, y, w.offset, k, n, flags))
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for x, y, w, k, n, flags in calls:
            b.commands.call("linear", x.offset, w, 0, 0, y.offset, 1, k, n, flags)
        b.commands.flush()
        times.append((time.perf_counter() - t0) * 1000)
    json.dumps({"floor_ms": statistics.median(times), "min_ms": min(times),
                "matrices": len(calls)})
""")


def long_prompt(folder: Path, tokens: int = 128) -> str:
    """A prompt of exactly `tokens` GPT-2 tokens (English text, repeated)."""
    from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_pretrained(folder)
    text = (PROMPT + " there lived a small fox who liked to read about the stars. ") * 20
    ids = tokenizer.tokenize(text)[:tokens]
    prompt = tokenizer.detokenize(ids)
    if len(tokenizer.tokenize(prompt)) != tokens:
        raise RuntimeError(f"the long prompt is {len(tokenizer.tokenize(prompt))} tokens; "
                           f"expected {tokens}")
    return prompt


def native_webgpu(folder: Path):
    """The native webgpu model for folder, or the reason there is none."""
    from webgpt2.backends import backend_status
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    status = backend_status().get("webgpu", "not registered")
    if status != "available":
        return None, status
    return GPT2CausalLM.from_pretrained(folder, backend="webgpu", progress=False), None


def paired_rounds(page_run, run_python, name: str, threads: int, dtype: str,
                  dtypes: list[str], rounds: int, tokens: int) -> None:
    """Keep the page's model (of `dtype`); after the last of `dtypes`, alternate all the kept
    models for `rounds` rounds, print each dtype's decode ratio to the first, pair by pair,
    and drop them."""
    run_python(KEEP.replace("KEY", f"{threads}/{dtype}"))
    if dtype != dtypes[-1]:
        return
    decode: dict[str, list[float]] = {d: [] for d in dtypes}
    for r in range(rounds):
        for d in dtypes if r % 2 == 0 else dtypes[::-1]:
            run_python(USE.replace("KEY", f"{threads}/{d}"))
            decode[d].append(page_run(PROMPT, tokens)["timings"]["decodeMsPerToken"] or 0.0)
    run_python(DROP)
    base = decode[dtypes[0]]
    for d in dtypes[1:]:
        ratios = sorted(a / b for a, b in zip(decode[d], base) if a and b)
        if not ratios:  # fewer than two new tokens a run: no decode interval to time
            print(f"{name} page wasm t{threads}: no decode times to pair")
            continue
        print(f"{name} page wasm t{threads} decode, {rounds} rounds alternated in one page: "
              f"{d} / {dtypes[0]} median {statistics.median(ratios):.3f} (pairs "
              f"{ratios[0]:.3f}-{ratios[-1]:.3f}; {d} {statistics.median(decode[d]):.2f}, "
              f"{dtypes[0]} {statistics.median(base):.2f} ms/token)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["tiny-2l", "small-6l", "gpt2-124m"])
    parser.add_argument("--backends", nargs="+", default=["wasm", "webgpu"],
                        choices=["wasm", "webgpu", "cpu"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="wasm thread counts to run (default 1)")
    parser.add_argument("--dtype", nargs="+", default=["float32"],
                        choices=["float32", "float16"],
                        help="wasm weight storage dtypes to run (default float32)")
    parser.add_argument("--paired", type=int, default=0, metavar="N",
                        help="with several --dtype: N more rounds per thread count that "
                             "alternate the dtypes' models in one page (paired ratios)")
    parser.add_argument("--native-webgpu", action="store_true",
                        help="also run the small checkpoints on native webgpu (wgpu-py)")
    args = parser.parse_args()
    if browser_missing("browser benchmark"):
        return 1
    folders = {name: checkpoint(name) for name in args.models}
    prompt_128 = long_prompt(next(iter(folders.values())))
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
        page.set_default_timeout(1_800_000)
        info = page.evaluate("webgpt2.ready")
        print(f"page: Chromium headless, {info['backends']} (Pyodide {info['pyodide']}, "
              f"Python {info['python']}); adapter {info.get('adapter')}; automatic backend "
              f"{page.input_value('#backend')}")
        print(f"  navigation -> ready: {ready_ms[0]:.0f} ms first visit (fresh profile, local "
              f"Pyodide), {ready_ms[1]:.0f} ms second visit (Pyodide cached)")
        print(f"greedy, 14-token prompt, {args.new_tokens} new tokens; first token also for a "
              f"128-token prompt; warm; medians of {args.rounds} rounds")

        def page_run(prompt: str, n: int) -> dict:
            return page.evaluate("([p, n]) => webgpt2.generate(p, {maxNewTokens: n, "
                                 "sampler: 'greedy'})", [prompt, n])

        runs = [(b, t, d) for b in args.backends
                for t in (args.threads if b == "wasm" else [0])
                for d in (args.dtype if b == "wasm" else [None])]
        for name, folder in folders.items():
            decodes: dict[tuple[int, str], float] = {}
            for backend, threads, dtype in runs:
                if threads:
                    ready, module = page.evaluate(
                        "(c) => webgpt2.runPython(c)",
                        THREADS.replace("COUNT", str(threads)).replace("DTYPE", dtype)
                        .replace("__RELAXED__", os.environ.get("WEBGPT2_WASM_RELAXED", "auto")))
                    print(f"wasm with {threads} threads, {dtype}: module {module}")
                    if ready != threads:
                        print(f"wasm with {threads} threads: only {ready} started")
                t0 = time.perf_counter()
                model = page.evaluate("([u, b]) => webgpt2.loadModel(u, {backend: b})",
                                      [f"{url}ckpt/{name}", backend])
                load_ms = (time.perf_counter() - t0) * 1000
                slow = backend == "webgpu" and model["parameters"] > 5e7
                tokens = 8 if slow else args.new_tokens
                rounds = 1 if slow else args.rounds
                page_run(PROMPT, 4)  # warm: compiled pipelines, free lists
                rows: dict[str, list[float]] = {"ttft14": [], "decode": [], "ttft128": [],
                                                "floor": []}
                for _ in range(rounds):
                    ours = page_run(PROMPT, tokens)
                    rows["ttft14"].append(ours["timings"]["timeToFirstTokenMs"])
                    rows["decode"].append(ours["timings"]["decodeMsPerToken"] or 0.0)
                    if model["maxSequenceLength"] >= 130:  # prompt, start token, one more
                        rows["ttft128"].append(page_run(prompt_128, 1)["timings"]
                                               ["timeToFirstTokenMs"])
                    if backend == "wasm":  # in the same round: the machine's speed drifts
                        floor = json.loads(page.evaluate("(c) => webgpt2.runPython(c)",
                                                         FLOOR.replace("ROUNDS", "3")))
                        rows["floor"].append(floor["floor_ms"])
                m = {k: statistics.median(v) for k, v in rows.items() if v}
                label = f"{backend} t{threads}" if threads else backend
                if dtype and len(args.dtype) > 1:
                    label += f" {dtype}"
                    decodes[threads, dtype] = m["decode"]
                line = (f"{name} ({model['parameters'] / 1e6:.1f}M) page {label:8s} "
                        f"({model['device']}): load {load_ms:7.0f} ms, decode "
                        f"{m['decode']:7.2f} ms/token, first token {m['ttft14']:7.1f} ms "
                        f"(14 tokens), " + (f"{m['ttft128']:7.1f} ms (128 tokens)" if
                        "ttft128" in m else "128 tokens: more than the model's positions"))
                if backend == "wasm":
                    line += (f"; floor {m['floor']:.2f} ms ({floor['matrices']} matrices), "
                             f"decode / floor {m['decode'] / m['floor']:.2f}")
                if slow:
                    line += f" [{tokens} tokens, 1 round]"
                print(line, flush=True)
                if threads and args.paired and len(args.dtype) > 1:
                    paired_rounds(page_run, lambda code: page.evaluate(
                        "(c) => webgpt2.runPython(c)", code), name, threads, dtype,
                        args.dtype, args.paired, tokens)
                if backend == "webgpu" and args.native_webgpu and not slow:
                    native, why_not = native_webgpu(folder)
                    if native is None:
                        print(f"  native webgpu: skipped ({why_not})")
                        continue
                    record_generation(native, PROMPT, 4)
                    theirs = [record_generation(native, PROMPT, tokens)
                              for _ in range(rounds)]
                    decode = statistics.median(t["timings"]["decodeMsPerToken"] or 0.0
                                               for t in theirs)
                    print(f"  native webgpu ({native.backend.describe().get('adapter', '')}): "
                          f"decode {decode:7.2f} ms/token; page / native "
                          f"{m['decode'] / decode:.2f}x")
                    del native
            for threads in args.threads if len(args.dtype) > 1 else []:
                base = decodes.get((threads, args.dtype[0]))
                if not base:  # no decode interval (fewer than two new tokens)
                    continue
                ratios = ", ".join(f"{d} / {args.dtype[0]} {decodes[threads, d] / base:.2f}"
                                   for d in args.dtype[1:] if (threads, d) in decodes)
                if base and ratios:
                    print(f"{name} page wasm t{threads} decode: {ratios}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
