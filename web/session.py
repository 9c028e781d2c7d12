"""The Python side of the demo page's worker (`web/worker.js` imports it as `webgpt2_page`).

It loads one model at a time and generates with it, streaming each piece of text back to
JavaScript. Values cross the boundary as JSON strings, so no proxy outlives a call. Every
function is called through `callPromising`, which lets the browser WebGPU driver wait on GPU
promises with `run_sync`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import webgpt2
from webgpt2.backends import backend_status, get_backend, register_backend
from webgpt2.generation.samplers import Sampler, SearchSampler, get_sampler

_hooks: Any = None  # worker.js's object: stop_requested(), and tick() to let messages in
_model: Any = None
_model_info: dict = {}


def _webgpu_backend():
    from webgpt2.backends.webgpu.backend import WebGPUBackend
    from webgpt2.backends.webgpu.browser import BrowserDriver

    return WebGPUBackend(driver=BrowserDriver())


def _wasm_backend():
    from webgpt2.backends.cpu import CPUBackend

    return CPUBackend()


_FACTORIES = {"wasm": _wasm_backend, "webgpu": _webgpu_backend}


def _register_backends(names: Iterable[str] = tuple(_FACTORIES)) -> None:
    # The page says which driver WebGPU uses, whatever WebGPUBackend() would pick itself.
    # Registering again also forgets a backend's failure (NumPy arrived, a device was lost).
    for name in names:
        register_backend(name, _FACTORIES[name])


def _reply(function: Callable[..., dict]) -> Callable[..., str]:
    """Run function and answer JSON: its result, or {"error": {type, message, detail}}."""

    def call(*args: Any) -> str:
        try:
            return json.dumps(function(*args))
        except Exception as e:  # every failure goes back to the page as an error panel
            return json.dumps({"error": {"type": type(e).__name__, "message": str(e),
                                         "detail": traceback.format_exc()}})

    call.__name__ = function.__name__
    return call


@_reply
def boot(hooks: Any) -> dict:
    """Remember the worker's hooks; report versions and which backends can run."""
    global _hooks
    _hooks = hooks
    _register_backends()
    import sys

    return {"python": sys.version.split()[0], "webgpt2": webgpt2.__version__,
            "backends": backend_status()}


@_reply
def backends() -> dict:
    """Each backend and "available" or why not, trying the unavailable ones again (NumPy
    may have arrived since); backends that run are kept, with their devices."""
    _register_backends(n for n, status in backend_status().items() if status != "available")
    return {"backends": backend_status()}


@_reply
def load_model(source_json: str, progress: Any) -> dict:
    """Load a model: {"preset": name} or {"folder": path in the Pyodide file system}.

    progress(phase, loaded, total) is called as weights go to the backend.
    """
    global _model, _model_info
    from webgpt2.io.checkpoint import read_gpt2_config
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM
    from webgpt2.models.gpt2.gpt2_presets import resolve_preset

    source = json.loads(source_json)
    backend_name = source.get("backend") or "webgpu"
    if "preset" in source:
        folder = resolve_preset(source["preset"])
        if isinstance(folder, str):  # a hub id: in the page, JavaScript fetches by URL
            raise ValueError(f"preset {source['preset']!r} lives on the Hugging Face hub; "
                             f"load it by URL: https://huggingface.co/{folder}/resolve/main")
    else:
        folder = source["folder"]
    read_gpt2_config(folder)  # a bad checkpoint fails here, before the current model is freed
    _model = None  # free the previous model's device memory before the next one arrives
    backend = get_backend(backend_name)
    if getattr(getattr(backend, "driver", None), "lost", False):
        _register_backends([backend_name])
        backend = get_backend(backend_name)
    start = time.perf_counter()
    model = GPT2CausalLM.from_pretrained(
        folder, backend=backend, progress=lambda done, total: progress("upload", done, total))
    _model = model
    bb = model.backbone
    _model_info = {
        "source": source.get("preset") or source.get("label") or str(folder),
        "backend": backend.name,
        "device": _describe(backend),
        "layers": bb.num_layers, "heads": bb.num_heads, "hidden": bb.hidden_dim,
        "vocabulary": bb.vocabulary_size, "maxSequenceLength": model.max_sequence_length,
        "parameters": bb.count_params(), "loadMs": (time.perf_counter() - start) * 1000,
    }
    return _model_info


def _describe(backend: Any) -> str:
    try:
        info = backend.describe()
    except Exception:  # describing is cosmetic; never fail a load over it
        return backend.name
    return str(info.get("adapter") or info.get("device") or info.get("name") or backend.name)


class _Recording:
    """What both recording wrappers share: the wrapped sampler's seed, name and config, and
    the generated ids with the time each came (one prompt, so one row)."""

    def __init__(self, inner: Sampler) -> None:
        super().__init__(inner.seed)  # the sampler base class that follows in the MRO
        self.inner = inner
        self.name = inner.name
        self.token_ids: list[int] = []
        self.times: list[float] = []

    def get_config(self) -> dict:
        return self.inner.get_config()


class _RecordingSampler(_Recording, Sampler):
    """Wraps a sampler to note each sampled id and when it came."""

    def __init__(self, inner: Sampler) -> None:
        super().__init__(inner)
        self.uses_randomness = inner.uses_randomness

    def next_tokens(self, backend: Any, logits: Any, rngs: Any) -> list[int]:
        ids = self.inner.next_tokens(backend, logits, rngs)
        self.token_ids.append(ids[0])
        self.times.append(time.perf_counter())
        return ids


class _RecordingSearch(_Recording, SearchSampler):
    """Wraps a search sampler (contrastive, beam) to note the row's generated ids as its
    decode writes them: after each step it yields (contrastive), or once at the end (beam,
    which yields nothing)."""

    def __init__(self, inner: SearchSampler) -> None:
        super().__init__(inner)
        self.streams = inner.streams

    def run(self, model: Any, state: Any, options: Any) -> Iterator[Any]:
        n = state.prompt_lengths[0]

        def note() -> None:
            ids = [t for t, m in zip(state.token_ids[0][n:], state.padding_mask[0][n:]) if m]
            now = time.perf_counter()
            self.times.extend([now] * (len(ids) - len(self.token_ids)))
            self.token_ids[:] = ids

        for step in self.inner.run(model, state, options):
            note()
            yield step
        note()


def make_sampler(options: dict) -> Sampler:
    """A sampler from the page's options: sampler, temperature, k, p (top_k, top_p,
    contrastive), alpha (contrastive), numBeams and lengthPenalty (beam)."""
    name = options.get("sampler") or "greedy"
    kwargs: dict = {}
    if name in ("random", "top_k", "top_p"):
        kwargs["temperature"] = float(options.get("temperature", 1.0))
    if name == "top_k":
        kwargs["k"] = int(options.get("k", 5))
    if name == "top_p":
        kwargs["p"] = float(options.get("p", 0.9))
        if options.get("k"):
            kwargs["k"] = int(options["k"])
    if name == "contrastive":
        kwargs["k"] = int(options.get("k") or 5)
        kwargs["alpha"] = float(_given(options, "alpha", 0.6))
    if name == "beam":
        kwargs["num_beams"] = int(options.get("numBeams") or 4)
        kwargs["length_penalty"] = float(_given(options, "lengthPenalty", 1.0))
    return get_sampler(name, **kwargs)


def _given(options: dict, key: str, default: Any = None) -> Any:
    """options[key], or default when it is missing, null or an empty string."""
    value = options.get(key)
    return default if value is None or value == "" else value


def _stop_strings(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"stopStrings is {value!r}; expected a string or a list of strings")
    return [s for s in value if s] or None


def generate_options(options: dict) -> dict:
    """`GPT2CausalLM.generate`'s keyword options (besides the sampler) from the page's:
    maxNewTokens, seed, repetitionPenalty, noRepeatNgramSize, minNewTokens, stopStrings.
    A missing, null or empty option is off."""
    seed = _given(options, "seed")
    penalty = _given(options, "repetitionPenalty")
    ngram = _given(options, "noRepeatNgramSize")
    minimum = _given(options, "minNewTokens")
    return {
        "max_new_tokens": int(_given(options, "maxNewTokens", 32)),
        "seed": None if seed is None else int(seed),
        "repetition_penalty": None if penalty is None else float(penalty),
        "no_repeat_ngram_size": None if ngram is None else int(ngram),
        "min_new_tokens": None if minimum is None else int(minimum),
        "stop_strings": _stop_strings(options.get("stopStrings")),
    }


def _stop_requested() -> bool:
    if _hooks is None:
        return False
    if not _hooks.shared:
        # Without a shared flag the stop message reaches the worker only while Python
        # waits: let the event loop run once (a fast macrotask, not a timer).
        from pyodide.ffi import run_sync

        run_sync(_hooks.tick())
    return bool(_hooks.stop_requested())


@_reply
def generate(prompt: str, options_json: str, on_text: Any) -> dict:
    """Generate from prompt, calling on_text(piece, new_ids_json, elapsed_ms) as text comes.

    options: see `make_sampler` and `generate_options`. Beam search cannot stream: its
    text comes in one piece when it is done, and Stop cannot end it early. Returns the
    text, the generated token ids, timings and whether Stop ended it.
    """
    if _model is None:
        raise RuntimeError("no model is loaded: load one before generating")
    options = json.loads(options_json)
    inner = make_sampler(options)
    sampler: Any = (_RecordingSearch(inner) if isinstance(inner, SearchSampler)
                    else _RecordingSampler(inner))
    kwargs = generate_options(options)
    start = time.perf_counter()
    text: list[str] = []
    stopped = False
    streams = getattr(sampler, "streams", True)
    if not streams:
        text.append(_model.generate(prompt, sampler=sampler, strip_prompt=True, **kwargs))
        on_text(text[0], json.dumps(sampler.token_ids), (time.perf_counter() - start) * 1000)
    else:
        pieces = _model.stream(prompt, sampler=sampler, **kwargs)
        sent = 0
        try:
            for piece in pieces:
                text.append(piece)
                new_ids, sent = sampler.token_ids[sent:], len(sampler.token_ids)
                on_text(piece, json.dumps(new_ids), (time.perf_counter() - start) * 1000)
                if _stop_requested():
                    stopped = True
                    break
        finally:
            pieces.close()  # frees the KV cache on the backend even when stopped early
    end = time.perf_counter()
    times = sampler.times
    first = times[0] if times else end
    decode = None
    if len(times) > 1 and times[-1] > times[0]:  # beam's tokens all arrive at once
        decode = (times[-1] - times[0]) / (len(times) - 1)
    return {
        "text": "".join(text),
        "prompt": prompt,
        "tokenIds": list(sampler.token_ids),
        "stopped": stopped,
        "streamed": bool(streams),
        "sampler": inner.name,
        "backend": _model_info.get("backend"),
        "timings": {
            "timeToFirstTokenMs": (first - start) * 1000,
            "decodeMsPerToken": None if decode is None else decode * 1000,
            "tokensPerSecond": None if not decode else 1.0 / decode,
            "totalMs": (end - start) * 1000,
            "generatedTokens": len(sampler.token_ids),
        },
    }


@_reply
def model_info() -> dict:
    return {"model": _model_info if _model is not None else None}
