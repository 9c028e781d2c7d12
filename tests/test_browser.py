"""The demo page in headless Chromium: boot, the browser WebGPU driver, parity with the native
`cpu` backend, Stop, errors, a screenshot, and the page's NumPy `cpu` backend when NumPy is
reachable (the `wasm` backend in the page: test_browser_wasm.py).

The page is served from 127.0.0.1 by an in-process server with the transformers-written test
checkpoints mounted beside it, and loaded by URL as a user would load a Hugging Face folder.
WebGPU here is SwiftShader (a CPU fallback), so models are tiny and generations short.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from browser_util import (
    CHROMIUM_ARGS,
    ROOT,
    chromium,
    missing_requirements,
    open_page,
    page_server,
    record_generation,
)

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
NUMPY_ENV = "WEBGPT2_PYODIDE_NUMPY"
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def truncated_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with model.safetensors cut in half."""
    folder = tmp_path_factory.mktemp("truncated")
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return folder


def broken_copy(tiny_checkpoint: Path, folder: Path, **files: bytes) -> Path:
    """The tiny checkpoint's files with some replaced (keyword: file name, dots as _)."""
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        data = files.get(name.replace(".", "_"))
        if data is None:
            shutil.copy(tiny_checkpoint / name, folder / name)
        else:
            (folder / name).write_bytes(data)
    return folder


NESTED = b"[" * 10_000 + b"]" * 10_000
BROKEN = {  # checkpoint folders that must fail to load, leaving the loaded model usable
    "corrupt-vocab": {"vocab_json": b'{"hello": 0, "world": '},
    "nested-config": {"config_json": NESTED},
    "nested-header": {"model_safetensors": len(NESTED).to_bytes(8, "little") + NESTED},
}


@pytest.fixture(scope="module")
def site(tiny_checkpoint, small_checkpoint, truncated_checkpoint, tmp_path_factory):
    mounts = {"ckpt/tiny": tiny_checkpoint, "ckpt/small": small_checkpoint,
              "ckpt/truncated": truncated_checkpoint}
    for name, files in BROKEN.items():
        mounts[f"ckpt/{name}"] = broken_copy(tiny_checkpoint, tmp_path_factory.mktemp(name),
                                             **files)
    with page_server(mounts, numpy=os.environ.get(NUMPY_ENV)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def page(browser, site):
    console: list[str] = []
    page = open_page(browser, site, console)
    page.console_log = console
    yield page
    page.close()


@pytest.fixture(scope="module")
def tiny_cpu(tiny_checkpoint):
    from webgpt2 import GPT2CausalLM

    return GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)


def load(page, folder: str, backend: str = "webgpu") -> dict:
    return page.evaluate("([f, b]) => webgpt2.loadModel(location.origin + '/ckpt/' + f, "
                         "{backend: b})", [folder, backend])


def generate(page, prompt: str, **options) -> dict:
    return page.evaluate("([p, o]) => webgpt2.generate(p, o)", [prompt, options])


def set_field(page, selector: str, value) -> None:
    """Set a field whether or not the chosen sampler has disabled it."""
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.removeAttribute('aria-invalid'); "
                                    "e.dispatchEvent(new Event('input', {bubbles: true})); }",
                          str(value))


def shown_error(page) -> str | None:
    """The message of the error panel the page shows (there is one per action), or None."""
    return page.evaluate("() => { const p = document.querySelector('.error:not([hidden])'); "
                         "return p ? p.querySelector('.error-message').textContent : null; }")


def dismiss_errors(page) -> None:
    page.evaluate("() => document.querySelectorAll('.error').forEach(p => { p.hidden = true; })")


def fill_form(page, url: str, prompt: str, sampler: str = "greedy", max_new_tokens: int = 8,
              seed: str = "", top_k: int = 40, temperature: float = 1.0) -> None:
    """Set every field the tests use, so no test depends on what an earlier one left."""
    dismiss_errors(page)
    page.fill("#model-url", url)
    assert page.is_checked("input[name=source][value=url]")  # typing a URL chose it
    page.select_option("#backend", "webgpu")
    page.select_option("#sampler", sampler)
    set_field(page, "#top-k", top_k)
    set_field(page, "#temperature", temperature)
    set_field(page, "#seed", seed)
    set_field(page, "#max-new-tokens", max_new_tokens)
    page.fill("#prompt", prompt)
    # The advanced fields off, whether or not their <details> is open.
    for field in ("#repetition-penalty", "#no-repeat-ngram-size", "#min-new-tokens",
                  "#stop-strings"):
        page.eval_on_selector(field, "e => { e.value = ''; }")


def wait_for_ui(page, condition: str, timeout: int = 120_000) -> None:
    """Wait until the JavaScript condition holds; fail at once, with its message, if the
    page's error panel appears instead."""
    page.wait_for_function(f"({condition}) || document.querySelector('.error:not([hidden])')",
                           timeout=timeout)
    message = shown_error(page)
    if message is not None:
        raise AssertionError("the page shows an error: " + message)


def rejection(page, script: str, arg=None) -> str:
    """The message of the error a promise-returning script rejects with."""
    return page.evaluate(f"async (arg) => {{ try {{ await ({script}); return null; }} "
                         "catch (e) { return e.message; } }", arg)


def test_server_sends_isolation_headers_and_serves_mounts(tiny_checkpoint):
    import urllib.error
    import urllib.request

    with page_server({"ckpt/tiny": tiny_checkpoint}) as url:
        with urllib.request.urlopen(url) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b'src="web/app.js"' in response.read()
        with urllib.request.urlopen(url + "web/wheels/manifest.json") as response:
            manifest = json.load(response)
        assert manifest["webgpt2"].endswith("-py3-none-any.whl")
        if not manifest["pyodide"].startswith("http"):
            wasm = url + "web/" + manifest["pyodide"] + "pyodide.asm.wasm"
            with urllib.request.urlopen(wasm) as response:
                assert response.headers["Content-Type"] == "application/wasm"
                assert "immutable" in response.headers["Cache-Control"]
        with urllib.request.urlopen(url + "ckpt/tiny/config.json") as response:
            assert json.load(response)["n_layer"] == 2
        for outside in ("ckpt/tiny/../../pyproject.toml", "ckpt/tiny/%2e%2e/small-6l/stamp",
                        "pyproject.toml", ".git/config", "web/../README.md"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(url + outside)
            assert error.value.code == 404
    with page_server(isolated=False) as url:
        with urllib.request.urlopen(url) as response:
            assert "Cross-Origin-Embedder-Policy" not in response.headers


def test_page_boots_and_reports_webgpu(page):
    info = page.evaluate("webgpt2.ready")
    assert info["webgpu"] is True
    assert info["backends"]["webgpu"] == "available"
    assert info["crossOriginIsolated"] is True
    assert info["python"].startswith("3.")
    assert "WebGPU available" in page.inner_text("#boot-status")
    # WebGPU here is SwiftShader, a software fallback: the picker chooses wasm (issue 14).
    assert page.eval_on_selector("#backend", "s => s.value") == "wasm"


def test_browser_driver_runs_kernels_and_reports_errors(page):
    code = textwrap.dedent('''
        import json, struct
        from array import array
        from webgpt2.backends.webgpu.browser import BrowserDriver
        from webgpt2.backends.webgpu.driver import Binding, Copy, Dispatch, DriverError, ShaderError

        d = BrowserDriver()
        wgsl = """
        @group(0) @binding(0) var<storage, read> a: array<f32>;
        @group(0) @binding(1) var<storage, read_write> out: array<f32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < arrayLength(&out)) { out[id.x] = a[id.x] * 2.0 + 1.0; }
        }
        """
        pipeline = d.create_pipeline(wgsl, "main", "double")
        n = 100
        a = d.create_buffer(4 * n, "storage")
        out = d.create_buffer(4 * n, "storage")
        back = d.create_buffer(4 * n, "readback")
        d.write_buffer(a, 0, array("f", range(n)))           # a float32 buffer, cast to bytes
        d.write_buffer(a, 8, struct.pack("<f", 50.0))        # at an offset
        # out is bound from byte 256 (the storage offset alignment) for 10 floats.
        d.submit([Dispatch(pipeline, [Binding(0, a), Binding(1, out, 256, 40)], (1, 1, 1)),
                  Copy(out, 0, back, 0, 4 * n)])
        result = {
            "staged": struct.unpack("<3f", d.read_buffer(out, 264, 12)),
            "mapped": struct.unpack("<2f", d.read_buffer(back, 260, 8)),  # offset % 8 == 4
            "untouched": struct.unpack("<f", d.read_buffer(out, 296, 4)),
        }
        d.write_buffer(a, 0, struct.pack("<f", 4.0))
        d.submit([Dispatch(pipeline, [Binding(0, a), Binding(1, out, 256, 40)], (1, 1, 1))])
        result["cached_bind_group"] = struct.unpack("<f", d.read_buffer(out, 256, 4))
        if "subgroups" in d.info.features:  # the driver adds the `enable subgroups;` Tint needs
            sg = d.create_pipeline("""
            @group(0) @binding(0) var<storage, read_write> lanes: array<f32>;
            @compute @workgroup_size(64)
            fn main(@builtin(local_invocation_index) i: u32) { lanes[i] = subgroupAdd(1.0); }
            """, "main", "subgroups")
            d.submit([Dispatch(sg, [Binding(0, a)], (1, 1, 1))])
            result["subgroup_size"] = struct.unpack("<f", d.read_buffer(a, 0, 4))[0]
        # naga takes an infinity as a constant bitcast; browsers need it mended (the driver does).
        inf = d.create_pipeline("""
        @group(0) @binding(0) var<storage, read_write> x: array<f32>;
        @compute @workgroup_size(1) fn main() { x[0] = bitcast<f32>(0xff800000u); }
        """, "main", "infinity")
        d.submit([Dispatch(inf, [Binding(0, a)], (1, 1, 1))])
        result["infinity"] = struct.unpack("<f", d.read_buffer(a, 0, 4))[0]
        try:
            d.create_pipeline("fn main( {", "main", "broken")
        except ShaderError as e:
            result["shader_error"] = str(e)
        try:
            d.create_pipeline(wgsl, "nowhere", "double")
        except ShaderError as e:
            result["entry_error"] = str(e)
        d._device.destroy()
        from pyodide.ffi import run_sync
        import js
        run_sync(js.Promise.new(lambda resolve, reject: js.setTimeout(resolve, 50)))
        try:
            d.create_buffer(16, "storage")
        except DriverError as e:
            result["lost"] = str(e)
        json.dumps(result)
    ''')
    result = json.loads(page.evaluate("c => webgpt2.runPython(c)", code))
    # out[64 + i] = a[i] * 2 + 1 for i < 10, with a = 0, 1, 50, 3, ...
    assert result["staged"] == [101.0, 7.0, 9.0]
    assert result["mapped"] == [3.0, 101.0]
    assert result["untouched"] == [0.0]
    assert result["cached_bind_group"] == [9.0]  # a[0] became 4 before the second dispatch
    assert result.get("subgroup_size", 4.0) in (4.0, 8.0, 16.0, 32.0, 64.0)
    assert result["infinity"] == float("-inf")
    assert "WGSL compile error in broken" in result["shader_error"]
    assert "line 1:" in result["shader_error"]
    assert "nowhere" in result["entry_error"]
    assert "device was lost" in result["lost"]


def test_run_python_result_that_cannot_be_sent_rejects(page):
    """A last expression the structured clone cannot copy (a Python module) used to leave
    webgpt2.runPython's promise pending for ever; it rejects, naming why, and the worker
    goes on answering."""
    message = page.evaluate("c => webgpt2.runPython(c).then(() => 'resolved', e => e.message)",
                            "import sys\nsys")
    assert "run result cannot be sent to the page" in message, message
    assert page.evaluate("c => webgpt2.runPython(c)", "6 * 7") == 42


def test_greedy_tokens_match_cpu(page, tiny_cpu):
    native = record_generation(tiny_cpu, PROMPT, 32)
    expected, text = native["tokenIds"], native["text"]
    info = load(page, "tiny")
    assert info["backend"] == "webgpu" and info["layers"] == 2
    result = generate(page, PROMPT, maxNewTokens=32, sampler="greedy")
    assert result["tokenIds"] == expected
    assert result["text"] == text
    assert result["timings"]["generatedTokens"] == len(expected)
    assert result["timings"]["timeToFirstTokenMs"] > 0


@pytest.mark.parametrize("sampler, options", [("top_k", {"k": 8}), ("top_p", {"p": 0.9})])
def test_seeded_sampling_tokens_match_cpu(page, tiny_cpu, sampler, options):
    native = record_generation(tiny_cpu, PROMPT, 32, sampler, seed=7, temperature=1.0,
                               **options)
    expected, text = native["tokenIds"], native["text"]
    load(page, "tiny")
    result = generate(page, PROMPT, maxNewTokens=32, sampler=sampler, temperature=1.0, seed=7,
                      **options)
    assert result["tokenIds"] == expected
    assert result["text"] == text
    assert len(set(expected)) > 4  # the draw really varies, so the match means something


def watch_generations(page) -> None:
    """Keep the options and result of the form's webgpt2.generate() calls in the page."""
    page.evaluate("""() => {
        if (webgpt2.unwatched) return;
        const generate = webgpt2.generate;
        webgpt2.unwatched = generate;
        webgpt2.generate = async (prompt, options) => {
            window.lastGeneration = null;
            const result = await generate(prompt, options);
            const { onToken, ...given } = options;
            window.lastGeneration = { options: given, result };
            return result;
        };
    }""")


def run_form(page) -> dict:
    """Click Generate and wait for the finished generation's options and result."""
    page.evaluate("window.lastGeneration = null")
    page.click("#generate")
    wait_for_ui(page, "window.lastGeneration && document.querySelector('#stats')"
                      ".textContent.includes('first token')")
    return page.evaluate("window.lastGeneration")


def test_processors_and_stop_strings_from_the_form_match_cpu(page, site, tiny_cpu):
    """Repetition penalty and no-repeat n-gram size set in the page's Advanced settings give
    the native cpu backend's greedy tokens; a stop string ends the text as natively."""
    processors = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    plain = record_generation(tiny_cpu, PROMPT, 24)
    native = record_generation(tiny_cpu, PROMPT, 24, options=processors)
    assert native["tokenIds"] != plain["tokenIds"]  # the processors change this greedy run
    assert native["text"] == tiny_cpu.generate(PROMPT, max_new_tokens=24, strip_prompt=True,
                                               **processors)
    words = [w for w in native["text"].split() if "," not in w and "\\" not in w]
    stop = words[len(words) // 2]
    stopped = record_generation(tiny_cpu, PROMPT, 24,
                                options={**processors, "stop_strings": [stop]})
    assert stopped["text"] == tiny_cpu.generate(PROMPT, max_new_tokens=24, strip_prompt=True,
                                                stop_strings=[stop], **processors)
    assert stopped["text"].endswith(stop)
    assert len(stopped["tokenIds"]) < len(native["tokenIds"])

    watch_generations(page)
    try:
        fill_form(page, site + "ckpt/tiny", PROMPT, "greedy", max_new_tokens=24)
        if not page.eval_on_selector("#advanced", "d => d.open"):
            page.click("#advanced summary")
        page.fill("#repetition-penalty", "1.3")
        page.fill("#no-repeat-ngram-size", "2")
        run = run_form(page)
        assert run["options"]["repetitionPenalty"] == 1.3
        assert run["options"]["noRepeatNgramSize"] == 2
        assert run["options"]["stopStrings"] == []
        assert run["result"]["tokenIds"] == native["tokenIds"]
        assert page.inner_text("#output-text") == native["text"] == run["result"]["text"]

        # Two stop strings, comma-separated; only the second occurs.
        page.fill("#stop-strings", "zqzqzq, " + stop)
        run = run_form(page)
        assert run["options"]["stopStrings"] == ["zqzqzq", stop]
        assert run["result"]["tokenIds"] == stopped["tokenIds"]
        assert page.inner_text("#output-text") == stopped["text"] == run["result"]["text"]
        assert f"{len(stopped['tokenIds'])} tokens" in page.inner_text("#stats")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-advanced-settings.png"), full_page=True)
    finally:
        page.evaluate("() => { webgpt2.generate = webgpt2.unwatched; delete webgpt2.unwatched; }")
        page.eval_on_selector("#advanced", "d => { d.open = false; }")
    # The same through the API.
    result = generate(page, PROMPT, maxNewTokens=24, sampler="greedy", repetitionPenalty=1.3,
                      noRepeatNgramSize=2, stopStrings=stop)
    assert result["tokenIds"] == stopped["tokenIds"] and result["text"] == stopped["text"]


def test_contrastive_and_beam_match_cpu(page, site, tiny_cpu):
    from webgpt2.generation.samplers import get_sampler

    load(page, "tiny")
    contrastive = "".join(tiny_cpu.stream(PROMPT, max_new_tokens=16,
                                          sampler=get_sampler("contrastive", k=4, alpha=0.6)))
    result = generate(page, PROMPT, maxNewTokens=16, sampler="contrastive", k=4, alpha=0.6)
    assert result["text"] == contrastive and result["streamed"] is True
    assert len(result["tokenIds"]) == result["timings"]["generatedTokens"] == 16
    beam = tiny_cpu.generate(PROMPT, max_new_tokens=16, strip_prompt=True,
                             sampler=get_sampler("beam", num_beams=3),
                             no_repeat_ngram_size=3)
    result = generate(page, PROMPT, maxNewTokens=16, sampler="beam", numBeams=3,
                      noRepeatNgramSize=3)
    assert result["text"] == beam and result["streamed"] is False
    assert tiny_cpu.preprocessor.tokenizer.detokenize(result["tokenIds"]) == beam
    # The form: Stop stays off (beam search cannot be interrupted) and the stats say why.
    fill_form(page, site + "ckpt/tiny", PROMPT, "beam", max_new_tokens=16)
    page.fill("#num-beams", "3")
    assert "cannot stream" in page.inner_text("#sampler-note")
    page.click("#generate")
    assert page.is_disabled("#stop")
    wait_for_ui(page, "document.querySelector('#stats').textContent.includes('not streamed')")
    assert page.inner_text("#output-text") == tiny_cpu.generate(
        PROMPT, max_new_tokens=16, strip_prompt=True, sampler=get_sampler("beam", num_beams=3))
    page.select_option("#sampler", "greedy")


def test_streamed_pieces_arrive_in_order(page):
    load(page, "tiny")
    streamed = page.evaluate("""async () => {
        const pieces = [];
        const result = await webgpt2.generate("ROMEO:", {maxNewTokens: 12, sampler: "top_k",
            k: 20, temperature: 1.0, seed: 3, onToken: (t) => pieces.push(t)});
        return {pieces, result};
    }""")
    pieces, result = streamed["pieces"], streamed["result"]
    assert len(pieces) >= 2
    assert "".join(p["text"] for p in pieces) == result["text"]
    assert [i for p in pieces for i in p["tokenIds"]] == result["tokenIds"][:sum(
        len(p["tokenIds"]) for p in pieces)]
    elapsed = [p["elapsedMs"] for p in pieces]
    assert elapsed == sorted(elapsed)


def test_stop_cancels_a_generation_and_the_next_one_works(page, site):
    fill_form(page, site + "ckpt/tiny", "ROMEO:", "top_k", max_new_tokens=120, seed="5")
    page.click("#generate")
    wait_for_ui(page, "document.querySelector('#output-text').textContent.length > 0")
    assert page.is_enabled("#stop")
    page.click("#stop")
    wait_for_ui(page, "document.querySelector('#stats').textContent.includes('stopped')")
    stats = page.inner_text("#stats")
    generated = int(stats.split(" tokens")[0].split("· ")[-1])
    assert generated < 120
    assert page.is_disabled("#stop") and page.is_enabled("#generate")
    assert shown_error(page) is None
    assert "stopped" in page.inner_text("#stats") and "seed 5" in page.inner_text("#stats")
    result = generate(page, "ROMEO:", maxNewTokens=6, sampler="greedy")
    assert result["stopped"] is False and result["timings"]["generatedTokens"] == 6


def assert_stops_after_first_token(page) -> None:
    """webgpt2.stop() called from the first onToken ends a 120-token generation early."""
    result = page.evaluate("""async () => {
        let stopped = false;
        return await webgpt2.generate("ROMEO:", {maxNewTokens: 120, sampler: "greedy",
            onToken: () => { if (!stopped) { stopped = webgpt2.stop(); } }});
    }""")
    assert result["stopped"] is True
    assert result["timings"]["generatedTokens"] < 120


def test_stop_through_the_api(page):
    load(page, "tiny")
    assert_stops_after_first_token(page)
    assert page.evaluate("webgpt2.stop()") is False  # nothing is running now


def test_stop_without_cross_origin_isolation(browser, tiny_checkpoint):
    """Served without COOP/COEP (a plain static host) there is no SharedArrayBuffer: Stop
    reaches Python as a message the worker reads between tokens."""
    with page_server({"ckpt/tiny": tiny_checkpoint}, isolated=False) as url:
        page = open_page(browser, url)
        try:
            assert page.evaluate("webgpt2.ready")["crossOriginIsolated"] is False
            load(page, "tiny")
            assert_stops_after_first_token(page)
        finally:
            page.close()


def test_local_files(page, tiny_checkpoint, tiny_cpu):
    names = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]
    page.check("input[name=source][value=builtin]")
    page.set_input_files("#model-files", [str(tiny_checkpoint / n) for n in names[:2]])
    assert page.is_checked("input[name=source][value=files]")  # choosing files chose them
    page.click("#load")
    page.wait_for_selector("#load-error:not([hidden])")
    assert "vocab.json" in page.inner_text("#load-error .error-message")
    page.click("#load-error .error-dismiss")
    page.set_input_files("#model-files", [str(tiny_checkpoint / n) for n in names])
    page.select_option("#backend", "webgpu")
    page.click("#load")
    wait_for_ui(page, "document.querySelector('#model-info').textContent.includes('config.json')")
    assert "2 layers" in page.inner_text("#model-info")
    expected = record_generation(tiny_cpu, PROMPT, 8)["tokenIds"]
    assert generate(page, PROMPT, maxNewTokens=8)["tokenIds"] == expected


def test_bad_url_shows_an_error_and_the_page_stays_usable(page, site):
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/nowhere', "
                              "{backend: 'webgpu'})")
    assert "config.json" in message and "404" in message
    # The same through the form: the error panel shows it, the buttons come back.
    fill_form(page, site + "ckpt/nowhere", "Hi")
    page.click("#load")
    page.wait_for_selector("#load-error:not([hidden])")
    assert "404" in page.inner_text("#load-error .error-message")
    assert page.is_enabled("#load") and page.is_enabled("#generate")
    page.click("#load-error .error-dismiss")
    assert shown_error(page) is None
    load(page, "tiny")
    assert generate(page, "Hi", maxNewTokens=3)["timings"]["generatedTokens"] == 3


def test_truncated_safetensors_shows_an_error(page):
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/truncated', "
                              "{backend: 'webgpu'})")
    assert "model.safetensors" in message
    load(page, "tiny")
    assert generate(page, "Hi", maxNewTokens=3)["timings"]["generatedTokens"] == 3


def test_prompt_longer_than_the_context_shows_an_error(page, site):
    load(page, "tiny")  # max_sequence_length 128
    long_prompt = " word" * 200
    message = rejection(page, "webgpt2.generate(arg, {maxNewTokens: 4})", long_prompt)
    assert "max_sequence_length" in message or "sequence_length" in message
    assert "200 tokens" in message or "201" in message
    fill_form(page, site + "ckpt/tiny", long_prompt)
    page.click("#generate")
    page.wait_for_selector("#generate-error:not([hidden])")
    assert "tokens" in page.inner_text("#generate-error .error-message")
    assert page.inner_text("#output") == ""  # the failed prompt is not echoed
    assert generate(page, "Hi", maxNewTokens=3)["timings"]["generatedTokens"] == 3


def test_screenshot_of_a_finished_generation(page, site):
    ARTIFACTS.mkdir(exist_ok=True)
    fill_form(page, site + "ckpt/small", "Once upon a time", "top_k", max_new_tokens=24,
              seed="11", temperature=0.9)
    page.click("#generate")
    wait_for_ui(page, "document.querySelector('#stats').textContent.includes('first token')",
                timeout=180_000)
    stats = page.inner_text("#stats")
    assert "webgpu" in stats and "first token" in stats
    assert len(page.inner_text("#output-text")) > 0
    assert "6 layers" in page.inner_text("#model-info")
    page.screenshot(path=str(ARTIFACTS / "browser-generation.png"), full_page=True)


def test_builtin_model(page):
    if not (ROOT / "webgpt2" / "assets" / "gpt2_shakespeare" / "model.safetensors").exists():
        pytest.skip("the shipped gpt2_shakespeare_en model has not been trained yet "
                    "(webgpt2/assets/gpt2_shakespeare/model.safetensors is missing)")
    info = page.evaluate("webgpt2.loadModel('gpt2_shakespeare_en', {backend: 'webgpu'})")
    assert info["source"] == "gpt2_shakespeare_en"
    result = generate(page, "ROMEO:", maxNewTokens=8, sampler="greedy")
    assert result["timings"]["generatedTokens"] >= 1


def test_cpu_backend_without_numpy_says_why(page):
    """`cpu` in the page is NumPy's backend: it needs a Pyodide NumPy (the wasm backend does
    not; tests/test_browser_wasm.py)."""
    if os.environ.get(NUMPY_ENV):
        pytest.skip(f"{NUMPY_ENV} is set: the cpu backend has NumPy")
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/tiny', "
                              "{backend: 'cpu'})")
    if message is None:
        pytest.skip("Pyodide's CDN served NumPy (this machine has internet): nothing to explain")
    assert "NumPy" in message and NUMPY_ENV in message
    assert generate(page, "Hi", maxNewTokens=2)["timings"]["generatedTokens"] == 2


def test_cpu_backend_in_the_page_matches_native_cpu(page, tiny_cpu):
    if not os.environ.get(NUMPY_ENV):
        pytest.skip(f"no Pyodide NumPy is reachable here: set {NUMPY_ENV} to a Pyodide "
                    "numpy wheel (or a folder of Pyodide wheels) to test the page's cpu backend")
    expected = record_generation(tiny_cpu, PROMPT, 16)["tokenIds"]
    info = load(page, "tiny", backend="cpu")
    assert info["backend"] == "cpu"
    result = generate(page, PROMPT, maxNewTokens=16, sampler="greedy")
    assert result["tokenIds"] == expected


# ---- the page as a visitor meets it (issue 15) ----------------------------------------

def model_source(page) -> str | None:
    info = page.evaluate("webgpt2.modelInfo()")
    return info and info["source"]


def assert_tiny_still_loaded(page) -> None:
    """The tiny model is loaded, usable, and the page says so (not a leftover status)."""
    page.wait_for_function("document.querySelector('#model-info').textContent"
                           ".includes('/ckpt/tiny ')")
    assert model_source(page).endswith("/ckpt/tiny")
    assert generate(page, PROMPT, maxNewTokens=4)["timings"]["generatedTokens"] == 4
    assert page.get_attribute("#boot-status", "class") == "status ok"
    assert page.inner_text("#boot-status").startswith("Ready")


@pytest.mark.parametrize("folder", ["truncated", *BROKEN])
def test_a_failed_load_keeps_the_loaded_model(page, folder):
    load(page, "tiny")
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/' + arg, "
                              "{backend: 'webgpu'})", folder)
    assert message, f"{folder} loaded"
    assert len(message) < 2000
    assert_tiny_still_loaded(page)


def test_a_bad_backend_or_a_bad_load_queued_behind_a_generate_keeps_the_model(page, site):
    load(page, "tiny")
    message = rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/tiny', "
                              "{backend: 'nope'})")
    assert "nope" in message and "webgpu" in message
    assert_tiny_still_loaded(page)
    both = page.evaluate("""async () => {
        const running = webgpt2.generate("ROMEO:", {maxNewTokens: 40, sampler: "greedy"});
        const failed = webgpt2.loadModel(location.origin + '/ckpt/nested-config',
                                         {backend: 'webgpu'}).then(() => null, (e) => e.message);
        return {generated: (await running).timings.generatedTokens, failed: await failed};
    }""")
    assert both["generated"] == 40 and both["failed"]
    assert_tiny_still_loaded(page)
    # The same through the form: the error is next to Load, the info line still says tiny.
    fill_form(page, site + "ckpt/corrupt-vocab", PROMPT)
    page.click("#load")
    page.wait_for_selector("#load-error:not([hidden])")
    assert "vocab.json" in page.inner_text("#load-error .error-message")
    assert "/ckpt/tiny " in page.inner_text("#model-info")
    assert_tiny_still_loaded(page)


def test_downloads_are_cached_in_the_browser_and_bad_ones_are_not(page, site):
    keys = """async () => (await (await caches.open('webgpt2-models-v1')).keys())
                         .map((r) => new URL(r.url).pathname)"""
    page.evaluate("webgpt2.clearCache()")
    phases = "async (f) => { const seen = new Set(); await webgpt2.loadModel(location.origin " \
             "+ '/ckpt/' + f, {backend: 'webgpu', onProgress: (p) => seen.add(p.phase)}); " \
             "return [...seen].sort(); }"
    assert page.evaluate(phases, "tiny") == ["download", "upload"]
    cached = page.evaluate(keys)
    assert {f"/ckpt/tiny/{n}" for n in ("config.json", "model.safetensors", "vocab.json",
                                        "merges.txt")} <= set(cached)
    assert page.evaluate(phases, "tiny") == ["cache", "upload"]  # a second load: no download
    assert rejection(page, "webgpt2.loadModel(location.origin + '/ckpt/truncated', "
                           "{backend: 'webgpu'})")
    assert not [k for k in page.evaluate(keys) if "/truncated/" in k]


def test_a_load_can_be_cancelled(page, site):
    load(page, "tiny")
    message = page.evaluate("""async () => {
        const controller = new AbortController();
        try {
            await webgpt2.loadModel(location.origin + '/ckpt/small', {backend: 'webgpu',
                signal: controller.signal, onProgress: () => controller.abort()});
            return null;
        } catch (e) { return `${e.name}: ${e.message}`; }
    }""")
    assert message == "AbortError: loading was cancelled"
    assert_tiny_still_loaded(page)


def test_url_source_enter_loads_and_escape_stops(page, site):
    fill_form(page, site + "ckpt/tiny", "ROMEO:", "top_k", max_new_tokens=120)
    page.check("input[name=source][value=builtin]")
    page.evaluate("webgpt2.on('model', (e) => { window.lastModel = e; }); window.lastModel = null")
    page.click("#model-url")
    page.keyboard.type("/")  # typing in the URL field chooses the URL source
    assert page.is_checked("input[name=source][value=url]")
    page.keyboard.press("Enter")
    page.wait_for_function("window.lastModel !== null", timeout=60_000)
    assert page.evaluate("window.lastModel")["model"]["source"].endswith("/ckpt/tiny/")
    page.click("#generate")
    wait_for_ui(page, "document.querySelector('#output-text').textContent.length > 0")
    page.keyboard.press("Escape")
    wait_for_ui(page, "document.querySelector('#stats').textContent.includes('stopped')")
    assert int(page.inner_text("#stats").split(" tokens")[0].split("· ")[-1]) < 120


def test_form_values_are_checked_and_errors_name_the_field(page, site):
    load(page, "tiny")
    assert rejection(page, "webgpt2.generate('Hi', {sampler: 'beam', numBeams: 0})") \
        .startswith("numBeams is 0")
    assert rejection(page, "webgpt2.generate('Hi', {maxNewTokens: 2.7})") \
        .startswith("maxNewTokens is 2.7")
    for sampler, field, value, expected in [
            ("beam", "#num-beams", "0", "Beams is 0"),
            ("greedy", "#max-new-tokens", "2.7", "Max new tokens is 2.7"),
            ("greedy", "#max-new-tokens", "", "Max new tokens is empty"),
            ("contrastive", "#contrastive-k", "0", "Candidates k is 0")]:
        fill_form(page, site + "ckpt/tiny", "Hi", sampler)
        set_field(page, field, value)
        page.click("#generate")
        page.wait_for_selector("#generate-error:not([hidden])")
        assert page.inner_text("#generate-error .error-message").startswith(expected)
        assert page.get_attribute(field, "aria-invalid") == "true"
        assert page.is_hidden("#load-error")
    set_field(page, "#contrastive-k", "4")
    page.select_option("#sampler", "greedy")


def test_temperature_zero_is_greedy_and_unused_fields_are_disabled(page, site, tiny_cpu):
    from webgpt2.generation.samplers import get_sampler

    load(page, "tiny")
    greedy = record_generation(tiny_cpu, PROMPT, 8)["tokenIds"]
    result = generate(page, PROMPT, maxNewTokens=8, sampler="top_k", k=40, temperature=0)
    assert result["tokenIds"] == greedy and result["sampler"] == "greedy"
    assert result["seed"] is None
    for sampler in ("greedy", "random", "top_k", "top_p", "contrastive", "beam"):
        page.select_option("#sampler", sampler)
        dimmed = page.evaluate("""() => [...document.querySelectorAll('.settings label')]
            .filter((l) => l.classList.contains('unused') || l.hidden)
            .map((l) => l.querySelector('input, select, textarea'))
            .filter((i) => !i.disabled).map((i) => i.id)""")
        assert dimmed == [], f"{sampler}: {dimmed} are dimmed but enabled"
    page.select_option("#sampler", "top_k")
    set_field(page, "#temperature", "0")
    assert page.is_disabled("#top-k") and page.is_disabled("#seed")
    assert page.is_enabled("#temperature")
    assert "greedy" in page.inner_text("#sampler-note")
    set_field(page, "#temperature", "1")
    assert page.is_enabled("#top-k")
    # Contrastive's own k is 4, in the form and in the API.
    assert page.input_value("#contrastive-k") == "4"
    contrastive = "".join(tiny_cpu.stream(PROMPT, max_new_tokens=8,
                                          sampler=get_sampler("contrastive", k=4, alpha=0.6)))
    assert generate(page, PROMPT, maxNewTokens=8, sampler="contrastive")["text"] == contrastive


def test_end_reason_seed_and_beam_progress(page, site):
    load(page, "tiny")
    result = generate(page, PROMPT, maxNewTokens=5, sampler="top_k", k=20)
    assert result["endReason"] == "limit" and isinstance(result["seed"], int)
    again = generate(page, PROMPT, maxNewTokens=5, sampler="top_k", k=20, seed=result["seed"])
    assert again["tokenIds"] == result["tokenIds"]  # the reported seed repeats the run
    word = result["text"].split()[0]
    stopped = generate(page, PROMPT, maxNewTokens=5, sampler="greedy", stopStrings=[word[:2]])
    assert stopped["endReason"] in ("stop-string", "limit")
    if stopped["text"].endswith(word[:2]):
        assert stopped["endReason"] == "stop-string"
    steps = page.evaluate("""async () => { const steps = [];
        await webgpt2.generate("Hi", {maxNewTokens: 6, sampler: "beam", numBeams: 2,
            onProgress: (p) => steps.push([p.phase, p.loaded, p.total])});
        return steps; }""")
    assert steps and steps[0] == ["search", 1, 6] and steps[-1][1] <= 6
    # The form shows the end reason and the seed.
    fill_form(page, site + "ckpt/tiny", PROMPT, "top_k", max_new_tokens=6, seed="9")
    page.click("#generate")
    wait_for_ui(page, "document.querySelector('#stats').textContent.includes('first token')")
    stats = page.inner_text("#stats")
    assert "ended at the token limit" in stats and "seed 9" in stats
    assert "ended at the token limit" in page.inner_text("#announcer")


def accessible_names(page) -> dict[str, str]:
    """Chromium's accessible name of every input, select, textarea and button, by a
    description of the element."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        ids = cdp.send("DOM.querySelectorAll", {"nodeId": root,
                                                "selector": "input, select, textarea, button"})
        names = {}
        for node in ids["nodeIds"]:
            html = cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"][:80]
            ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node,
                                                             "fetchRelatives": False})
            names[html] = (ax["nodes"][0].get("name") or {}).get("value", "")
        return names
    finally:
        cdp.detach()


def test_every_control_has_an_accessible_name(page):
    # Hidden controls (the error panels', other samplers' fields) shown for the check.
    page.evaluate("""() => { window.unhidden = [...document.querySelectorAll('[hidden]')];
        window.unhidden.forEach((e) => { e.hidden = false; });
        document.querySelector('#advanced').open = true; }""")
    try:
        names = accessible_names(page)
    finally:
        page.evaluate("""() => { window.unhidden.forEach((e) => { e.hidden = true; });
            document.querySelector('#advanced').open = false; }""")
    assert len(names) > 20
    assert [html for html, name in names.items() if not name.strip()] == []
    assert page.get_attribute("#output", "aria-live") is None  # not every token read out
    assert page.get_attribute("#announcer", "aria-live") == "polite"


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_phone_width_and_screenshots(page, site):
    """Desktop (1280x800) and phone (390x844) widths, after a generation and after an
    error: nothing wider than the screen, long unbroken output wraps; screenshots in
    test-artifacts/ to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    load(page, "tiny")
    try:
        for name, size in [("desktop", (1280, 800)), ("phone", (390, 844))]:
            page.set_viewport_size({"width": size[0], "height": size[1]})
            fill_form(page, site + "ckpt/tiny", "-" * 300, "top_k", max_new_tokens=24,
                      seed="11", temperature=0.9)
            page.click("#generate")
            wait_for_ui(page, "document.querySelector('#stats').textContent"
                              ".includes('first token')")
            assert overflow(page) <= 0, f"{name}: the page is wider than the screen"
            page.screenshot(path=str(ARTIFACTS / f"browser-{name}-generation.png"), full_page=True)
            set_field(page, "#max-new-tokens", "2.7")
            page.click("#generate")
            page.wait_for_selector("#generate-error:not([hidden])")
            page.click("#generate-error summary")  # the traceback open: still no overflow
            assert overflow(page) <= 0, f"{name}: the error is wider than the screen"
            page.screenshot(path=str(ARTIFACTS / f"browser-{name}-error.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1100, "height": 1000})
        dismiss_errors(page)


def test_no_green_ready_without_a_backend(tiny_checkpoint):
    """A browser without WebGPU, and here no NumPy for wasm: the page says, in plain
    words, that no backend can run, instead of a green Ready."""
    if missing_requirements():
        pytest.skip(missing_requirements())
    if os.environ.get(NUMPY_ENV):
        pytest.skip(f"{NUMPY_ENV} is set: the wasm backend can run")
    args = [a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + [
        "--disable-features=WebGPU,Vulkan", "--disable-gpu"]
    with page_server({"ckpt/tiny": tiny_checkpoint}) as url, chromium(args) as browser:
        page = open_page(browser, url)
        backends = page.evaluate("webgpt2.ready")["backends"]
        if "available" in backends.values():
            pytest.skip(f"a backend runs in this browser anyway: {backends}")
        status = page.inner_text("#boot-status")
        assert page.get_attribute("#boot-status", "class") == "status bad"
        assert "Ready" not in status and "No backend can run a model here" in status
        assert "no WebGPU adapter" in status and "Error" not in status
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-no-backend.png"), full_page=True)


def test_pyodide_unreachable_says_run_npm_ci(browser, site):
    """A manifest that sends the worker to an unreachable Pyodide CDN: the start-up error
    says so in plain words."""
    def offline_manifest(route):
        manifest = json.loads(route.fetch().text())
        manifest["pyodide"] = "http://127.0.0.1:9/pyodide/"
        route.fulfill(json=manifest)

    page = browser.new_page()
    try:
        page.route("**/wheels/manifest.json", offline_manifest)
        page.goto(site)
        page.wait_for_selector("#boot-error:not([hidden])", timeout=60_000)
        assert "offline or CDN unreachable: run npm ci" in page.inner_text(
            "#boot-error .error-message")
        assert page.get_attribute("#boot-status", "class") == "status bad"
    finally:
        page.close()
