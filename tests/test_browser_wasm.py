"""The `wasm` backend in the demo page (headless Chromium): the kernels module run by the
browser's WebAssembly engine through the browser driver, against the native `cpu` backend;
Stop, the error cases, the automatic backend choice (SwiftShader here: wasm), and the
driver itself (memory growth rebuilds its views, traps and bad offsets are errors).
"""

from __future__ import annotations

import textwrap

import pytest
from browser_util import chromium, missing_requirements, open_page, page_server, record_generation

pytestmark = pytest.mark.browser

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def site(tiny_checkpoint, small_checkpoint, tmp_path_factory):
    truncated = tmp_path_factory.mktemp("truncated")
    for name in ("config.json", "vocab.json", "merges.txt"):
        (truncated / name).write_bytes((tiny_checkpoint / name).read_bytes())
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    mounts = {"ckpt/tiny": tiny_checkpoint, "ckpt/small": small_checkpoint,
              "ckpt/truncated": truncated}
    with page_server(mounts) as url:
        yield url


@pytest.fixture(scope="module")
def page(site):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with chromium() as context:
        console: list[str] = []
        page = open_page(context, site, console)
        page.console_log = console
        yield page
        page.close()


@pytest.fixture(scope="module")
def cpu_models(tiny_checkpoint, small_checkpoint):
    from webgpt2 import GPT2CausalLM

    return {name: GPT2CausalLM.from_pretrained(folder, backend="cpu", progress=False)
            for name, folder in (("tiny", tiny_checkpoint), ("small", small_checkpoint))}


def load(page, folder: str, backend: str = "wasm") -> dict:
    return page.evaluate("([f, b]) => webgpt2.loadModel(location.origin + '/ckpt/' + f, "
                         "{backend: b})", [folder, backend])


def generate(page, prompt: str, **options) -> dict:
    return page.evaluate("([p, o]) => webgpt2.generate(p, o)", [prompt, options])


def rejection(page, script: str, arg=None) -> str | None:
    """The message of the error a promise-returning script rejects with, or None."""
    return page.evaluate(f"async (arg) => {{ try {{ await ({script}); return null; }} "
                         "catch (e) { return e.message; } }", arg)


def run_python(page, code: str):
    return page.evaluate("(code) => webgpt2.runPython(code)", textwrap.dedent(code))


def test_wasm_is_available_and_chosen_automatically_on_swiftshader(page):
    info = page.evaluate("webgpt2.ready")
    assert info["backends"]["wasm"] == "available", info["backends"]
    adapter = info["adapter"]
    assert adapter is None or "swiftshader" in str(adapter).lower() \
        or adapter["isFallbackAdapter"], adapter  # this machine has no GPU
    assert page.input_value("#backend") == "wasm"
    note = page.inner_text("#backend-choice")
    assert "wasm" in note and ("SwiftShader" in note or "fallback" in note
                               or "no WebGPU adapter" in note), note


def test_browser_driver_grows_memory_and_reports_errors(page):
    result = run_python(page, """
        import json
        from webgpt2.backends.wasm.backend import WasmBackend, load_module
        from webgpt2.backends.wasm.browser import BrowserDriver
        from webgpt2.backends.wasm.driver import DriverError

        d = BrowserDriver(load_module())
        size = d.memory_size()
        d.write(size - 4, b"\\x01\\x02\\x03\\x04")
        d.grow(4)  # detaches memory.buffer: the driver's view must follow
        grown = d.memory_size()
        d.write(grown - 8, b"abcdefgh")
        d.call("fill_u32", size, 0xDEADBEEF, 2)
        errors = []
        for bad in (lambda: d.read(grown - 2, 4), lambda: d.call("nope"),
                    lambda: d.call("memcpy", 0, grown - 8, 64)):
            try:
                bad()
            except DriverError as e:
                errors.append(str(e))
        b = WasmBackend()
        x = b.tensor([[1.0, 2.0, 3.0]], "float32")
        json.dumps({"grew": grown - size, "old": list(d.read(size - 4, 4)),
                    "new": d.read(grown - 8, 8).decode(), "fill": d.read(size, 8).hex(),
                    "errors": errors, "argmax": b.argmax(x), "describe": b.describe()})
    """)
    import json

    r = json.loads(result)
    assert r["grew"] == 4 * 65536
    assert r["old"] == [1, 2, 3, 4] and r["new"] == "abcdefgh"
    assert r["fill"] == "efbeaddeefbeadde"
    assert "outside the" in r["errors"][0] and "no export 'nope'" in r["errors"][1]
    assert "'memcpy' trapped" in r["errors"][2]
    assert r["argmax"] == [2]
    assert r["describe"]["driver"] == "browser" and r["describe"]["simd"] is True
    # Chromium has relaxed SIMD (WebAssembly.validate accepts the probe): the relaxed build.
    assert r["describe"]["relaxed_simd_engine"] is True
    assert r["describe"]["relaxed_simd"] is True
    assert r["describe"]["module"] in ("kernels-relaxed.wasm", "kernels-relaxed-threads.wasm")


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_greedy_tokens_match_cpu(page, cpu_models, name):
    native = record_generation(cpu_models[name], PROMPT, 32)
    info = load(page, name)
    assert info["backend"] == "wasm" and "WebAssembly" in info["device"]
    result = generate(page, PROMPT, maxNewTokens=32, sampler="greedy")
    assert result["tokenIds"] == native["tokenIds"]
    assert result["text"] == native["text"]


@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("sampler, options", [("top_k", {"k": 8}), ("top_p", {"p": 0.9})])
def test_seeded_sampling_tokens_match_cpu(page, cpu_models, name, sampler, options):
    native = record_generation(cpu_models[name], PROMPT, 24, sampler, seed=7, temperature=1.0,
                               **options)
    load(page, name)
    result = generate(page, PROMPT, maxNewTokens=24, sampler=sampler, temperature=1.0, seed=7,
                      **options)
    assert result["tokenIds"] == native["tokenIds"]
    assert len(set(native["tokenIds"])) > 4  # the draw really varies


def test_contrastive_and_beam_match_cpu(page, cpu_models):
    from webgpt2.generation.samplers import get_sampler

    cpu = cpu_models["tiny"]
    load(page, "tiny")
    contrastive = "".join(cpu.stream(PROMPT, max_new_tokens=12,
                                     sampler=get_sampler("contrastive", k=4, alpha=0.6)))
    result = generate(page, PROMPT, maxNewTokens=12, sampler="contrastive", k=4, alpha=0.6)
    assert result["text"] == contrastive
    beam = cpu.generate(PROMPT, max_new_tokens=12, strip_prompt=True,
                        sampler=get_sampler("beam", num_beams=3), no_repeat_ngram_size=3)
    result = generate(page, PROMPT, maxNewTokens=12, sampler="beam", numBeams=3,
                      noRepeatNgramSize=3)
    assert result["text"] == beam


def test_stop_ends_a_generation_and_the_next_one_works(page):
    load(page, "tiny")
    result = page.evaluate("""async () => {
        let stopped = false;
        return await webgpt2.generate("ROMEO:", {maxNewTokens: 120, sampler: "greedy",
            onToken: () => { if (!stopped) { stopped = webgpt2.stop(); } }});
    }""")
    assert result["stopped"] is True and result["timings"]["generatedTokens"] < 120
    assert generate(page, "ROMEO:", maxNewTokens=5)["timings"]["generatedTokens"] == 5


def test_errors_leave_the_loaded_model_usable(page):
    load(page, "tiny")
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/nowhere', "
                              "{backend: 'wasm'})")
    assert "config.json" in message and "404" in message
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/truncated', "
                              "{backend: 'wasm'})")
    assert "model.safetensors" in message
    message = rejection(page, "webgpt2.generate(arg, {maxNewTokens: 4})", " word" * 200)
    assert "tokens" in message
    assert page.evaluate("webgpt2.modelInfo()")["source"].endswith("/ckpt/tiny")
    assert generate(page, "Hi", maxNewTokens=3)["timings"]["generatedTokens"] == 3
    # A failed load gives its memory back: loading again and again does not grow it.
    used = run_python(page, "from webgpt2.backends import get_backend\n"
                            "get_backend('wasm').memory.bytes_in_use")
    for _ in range(2):
        assert rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/truncated', "
                               "{backend: 'wasm'})")
    again = run_python(page, "import gc; gc.collect()\nfrom webgpt2.backends import get_backend\n"
                             "get_backend('wasm').memory.bytes_in_use")
    assert again <= used


def test_cpu_in_the_page_needs_numpy(page):
    """`cpu` is NumPy's backend: without a Pyodide NumPy (none is reachable offline) it
    says why, and wasm goes on working."""
    status = page.evaluate("webgpt2.ready")["backends"].get("cpu")
    if status == "available":
        pytest.skip("this page has NumPy")
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/tiny', "
                              "{backend: 'cpu'})")
    if message is None:
        pytest.skip("Pyodide's CDN served NumPy (this machine has internet)")
    assert "NumPy" in message
    load(page, "tiny")
    assert generate(page, "Hi", maxNewTokens=2)["timings"]["generatedTokens"] == 2


def test_wasm_is_the_default_without_webgpu(tiny_checkpoint):
    """A browser with no WebGPU at all: wasm runs, and the page picks it and says why."""
    if missing_requirements():
        pytest.skip(missing_requirements())
    from browser_util import CHROMIUM_ARGS

    args = [a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + [
        "--disable-features=WebGPU,Vulkan", "--disable-gpu"]
    with page_server({"ckpt/tiny": tiny_checkpoint}) as url, chromium(args) as browser:
        page = open_page(browser, url)
        assert page.input_value("#backend") == "wasm"
        assert "no WebGPU adapter" in page.inner_text("#backend-choice")
        assert page.get_attribute("#boot-status", "class") == "status ok"
        assert load(page, "tiny")["backend"] == "wasm"
        assert generate(page, PROMPT, maxNewTokens=3)["timings"]["generatedTokens"] == 3


def test_threads_in_an_isolated_page_give_the_same_tokens(page, cpu_models):
    """The page is cross-origin isolated: the default wasm backend splits products between
    the Pyodide worker and helper workers on a shared memory (as many threads as cores,
    up to 4); one thread and several, with relaxed SIMD's multiply-add and without, give the
    cpu backend's ids."""
    info = page.evaluate("webgpt2.ready")
    assert info["crossOriginIsolated"] is True
    cores = page.evaluate("navigator.hardwareConcurrency")
    native = record_generation(cpu_models["small"], PROMPT, 16)["tokenIds"]
    for threads, relaxed in ((2, None), (1, None), (2, False), (1, False)):
        ready = run_python(page, f"""
            import time, js
            from pyodide.ffi import run_sync
            from webgpt2.backends import register_backend, get_backend
            from webgpt2.backends.wasm import WasmBackend
            from webgpt2.backends.wasm.browser import BrowserDriver

            register_backend("wasm", lambda: WasmBackend(
                driver=BrowserDriver(threads={threads}, relaxed={relaxed})))
            driver = get_backend("wasm").driver
            start = time.time()
            while driver.ready_threads() < {threads} and time.time() - start < 20:
                run_sync(js.Promise.new(lambda resolve, reject: js.setTimeout(resolve, 20)))
            driver.ready_threads()
        """)
        assert ready == threads
        info = load(page, "small")
        assert info["device"].endswith(f"{threads} thread" + ("s" if threads > 1 else ""))
        assert ("relaxed SIMD" in info["device"]) == (relaxed is None)  # Chromium has it
        assert generate(page, PROMPT, maxNewTokens=16)["tokenIds"] == native
    default = run_python(page, "from webgpt2.backends.wasm.browser import default_threads\n"
                               "default_threads()")
    assert default == min(max(cores, 1), 4)
    run_python(page, "import webgpt2_page\nwebgpt2_page._register_backends(['wasm'])")


def test_one_thread_without_cross_origin_isolation(tiny_checkpoint, cpu_models):
    if missing_requirements():
        pytest.skip(missing_requirements())
    with page_server({"ckpt/tiny": tiny_checkpoint}, isolated=False) as url, \
            chromium() as browser:
        page = open_page(browser, url)
        assert page.evaluate("webgpt2.ready")["crossOriginIsolated"] is False
        info = load(page, "tiny")
        assert info["device"].endswith("1 thread")
        native = record_generation(cpu_models["tiny"], PROMPT, 8)["tokenIds"]
        assert generate(page, PROMPT, maxNewTokens=8)["tokenIds"] == native
