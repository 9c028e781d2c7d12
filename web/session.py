"""The Python side of the demo page's worker (`web/worker.js` imports it as `webgpt2_page`).

It loads one model at a time and generates with it, streaming each piece of text back to
JavaScript. Values cross the boundary as JSON strings, so no proxy outlives a call. Every
function is called through `callPromising`, which lets the browser WebGPU driver wait on GPU
promises with `run_sync`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import webgpt2
from webgpt2.backends import backend_status, get_backend, register_backend
from webgpt2.generation.config import (
    GenerationConfig,
    GenerationOptionError,
    UnexpectedOptionError,
    sampler_from_config,
)
from webgpt2.generation.logits_processors import LogitsProcessor
from webgpt2.generation.samplers import sampler_class

_hooks: Any = None  # worker.js's object: stop_requested(), and tick() to let messages in
_model: Any = None
_model_info: dict = {}


def _webgpu_backend():
    from webgpt2.backends.webgpu.backend import WebGPUBackend
    from webgpt2.backends.webgpu.browser import BrowserDriver

    return WebGPUBackend(driver=BrowserDriver())


def _wasm_backend():
    from webgpt2.backends.wasm.backend import WasmBackend

    return WasmBackend()  # the browser driver: the page's own WebAssembly engine


def _cpu_backend():
    # NumPy's backend: only where a Pyodide NumPy was loaded (worker.js fetches it on demand).
    from webgpt2.backends.cpu import CPUBackend

    return CPUBackend()


_FACTORIES = {"webgpu": _webgpu_backend, "wasm": _wasm_backend, "cpu": _cpu_backend}


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
    _register_backends(n for n, status in backend_status().items()
                       if status != "available" and n in _FACTORIES)
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
    read_gpt2_config(folder)
    backend = get_backend(backend_name)
    if getattr(getattr(backend, "driver", None), "lost", False):
        _register_backends([backend_name])
        backend = get_backend(backend_name)
    start = time.perf_counter()
    # Transactional: the loaded model stays until the new one is complete, so a load that
    # fails for any reason (or is cancelled through progress) leaves it usable.
    model = GPT2CausalLM.from_pretrained(
        folder, backend=backend, progress=lambda done, total: progress("upload", done, total))
    bb = model.backbone
    info = {
        "source": source.get("preset") or source.get("label") or str(folder),
        "backend": backend.name,
        "device": _describe(backend),
        "layers": bb.num_layers, "heads": bb.num_heads, "hidden": bb.hidden_dim,
        "vocabulary": bb.vocabulary_size, "maxSequenceLength": model.max_sequence_length,
        "parameters": bb.count_params(), "loadMs": (time.perf_counter() - start) * 1000,
    }
    _model, _model_info = model, info
    return _model_info


def _describe(backend: Any) -> str:
    try:
        info = backend.describe()
    except Exception:  # describing is cosmetic; never fail a load over it
        return backend.name
    if info.get("driver") == "browser" and "threads" in info:  # wasm: the engine, threads
        threads = info["threads"]
        simd = "relaxed SIMD" if info.get("relaxed_simd") else "SIMD"
        return f"{info.get('runtime')}, {simd}, {threads} thread{'s' if threads != 1 else ''}"
    return str(info.get("adapter") or info.get("device") or info.get("name") or backend.name)


# The page's name for each GenerationConfig option it takes (camelCase, as JavaScript
# spells them); a test checks that every one names a field of the config.
PAGE_OPTIONS = {
    "maxNewTokens": "max_new_tokens", "minNewTokens": "min_new_tokens",
    "stopStrings": "stop_strings", "sampler": "sampler", "temperature": "temperature",
    "k": "top_k", "p": "top_p", "numBeams": "num_beams", "lengthPenalty": "length_penalty",
    "earlyStopping": "early_stopping", "alpha": "penalty_alpha", "seed": "seed",
    "repetitionPenalty": "repetition_penalty", "noRepeatNgramSize": "no_repeat_ngram_size",
}
# The page's own defaults where they differ from the config's (or its sampler's).
PAGE_DEFAULTS = {"max_new_tokens": 32, "top_p": 0.9, "num_beams": 4}
# Contrastive search runs k candidates through the model each step: its own small k.
SAMPLER_DEFAULTS = {"contrastive": {"top_k": 4}}


def generation_config(options: dict) -> GenerationConfig:
    """The checked GenerationConfig of the page's generate options (see `PAGE_OPTIONS`).

    A missing, null or empty option is off or its default; the form sends every field, so
    an option the chosen sampler does not use is left out. Errors name the page's option.
    """
    unknown = sorted(set(options) - set(PAGE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown generate options {unknown}; expected some of "
                         f"{sorted(PAGE_OPTIONS)}")
    values = {PAGE_OPTIONS[name]: value for name, value in options.items()
              if value is not None and value != "" and value != []}
    if isinstance(values.get("stop_strings"), list):
        values["stop_strings"] = [s for s in values["stop_strings"] if s != ""] or None
    page_name = {field: name for name, field in PAGE_OPTIONS.items()}
    try:
        used = sampler_class(values.get("sampler") or "greedy").config_options
    except ValueError as e:
        raise ValueError(f"sampler: {e}") from None
    strategy = set(GenerationConfig.strategy_options())
    values = {k: v for k, v in values.items() if k not in strategy or k in used}
    defaults = {**PAGE_DEFAULTS, **SAMPLER_DEFAULTS.get(values.get("sampler"), {})}
    for field, value in defaults.items():
        if field not in values and (field in used or field not in strategy):
            values[field] = value
    for field, value in values.items():
        # JSON has one number type: 4.0 from a form field is the integer 4.
        if isinstance(value, float) and value.is_integer() and field in _INTEGERS:
            values[field] = int(value)
    try:
        return GenerationConfig(**values).validate()
    except (GenerationOptionError, UnexpectedOptionError) as e:
        raise ValueError(e.renamed(page_name[e.option])) from None


_INTEGERS = {"max_new_tokens", "min_new_tokens", "top_k", "num_beams", "seed",
             "no_repeat_ngram_size"}


def _stop_requested() -> bool:
    if _hooks is None:
        return False
    if not _hooks.shared:
        # Without a shared flag the stop message reaches the worker only while Python
        # waits: let the event loop run once (a fast macrotask, not a timer).
        from pyodide.ffi import run_sync

        run_sync(_hooks.tick())
    return bool(_hooks.stop_requested())


class _SearchProgress(LogitsProcessor):
    """Reports each step of a search that cannot stream (beam) as on_step(the number of
    the token being chosen, from 1); it leaves the scores as they are."""

    def __init__(self, on_step: Callable[[int], Any]) -> None:
        self.on_step = on_step

    def __call__(self, backend: Any, logits: Any, sequences: Any, prompt_lengths: Any) -> Any:
        self.on_step(1 + max((len(s) - n for s, n in zip(sequences, prompt_lengths) if s),
                             default=0))
        return logits


def _end_reason(config: GenerationConfig, text: str, token_ids: list[int],
                stopped: bool) -> str:
    """Why a generation ended: "stopped" (Stop), "end-of-text" (the end token),
    "stop-string" (its text ends with one) or "limit" (max new tokens or the context)."""
    if stopped:
        return "stopped"
    if token_ids and token_ids[-1] == _model.preprocessor.tokenizer.end_token_id:
        return "end-of-text"
    stops = config.stop_strings
    if isinstance(stops, str):
        stops = [stops]
    # A stop string ends the text only where it stopped the generation (stopping.py).
    if stops and any(text.endswith(s) for s in stops):
        return "stop-string"
    return "limit"


@_reply
def generate(prompt: str, options_json: str, on_text: Any, on_progress: Any = None) -> dict:
    """Generate from prompt, calling on_text(piece, new_ids_json, elapsed_ms) as text comes.

    options: the page's names for GenerationConfig's (see `generation_config`). Beam
    search cannot stream: its text comes in one piece when it is done, and Stop cannot end
    it early; on_progress(step, max_new_tokens) follows its steps. Returns the text, the
    generated token ids, timings, why it ended, the seed a random sampler used (drawn here
    when none was given, so that a run can be repeated) and whether Stop ended it.
    """
    if _model is None:
        raise RuntimeError("no model is loaded: load one before generating")
    config = generation_config(json.loads(options_json))
    sampler = sampler_from_config(config)
    if sampler.uses_randomness and config.seed is None:
        config = dataclasses.replace(config, seed=random.randrange(2**31))
    streams = getattr(sampler, "streams", True)
    if not streams and on_progress is not None:
        processors = [*(config.logits_processors or []),
                      _SearchProgress(lambda step: on_progress(step, config.max_new_tokens))]
        config = dataclasses.replace(config, logits_processors=processors)
    start = time.perf_counter()
    text: list[str] = []
    token_ids: list[int] = []
    times: list[float] = []  # when each id arrived
    stopped = False
    steps = _model.stream_tokens(prompt, generation_config=config)
    try:
        for piece, ids in steps:
            now = time.perf_counter()
            text.append(piece)
            token_ids += ids
            times += [now] * len(ids)
            on_text(piece, json.dumps(ids), (now - start) * 1000)
            if streams and _stop_requested():
                stopped = True
                break
    finally:
        steps.close()  # frees the KV cache on the backend even when stopped early
    end = time.perf_counter()
    first = times[0] if times else end
    decode = None
    if len(times) > 1 and times[-1] > times[0]:  # beam's tokens all arrive at once
        decode = (times[-1] - times[0]) / (len(times) - 1)
    return {
        "text": "".join(text),
        "prompt": prompt,
        "tokenIds": token_ids,
        "stopped": stopped,
        "endReason": _end_reason(config, "".join(text), token_ids, stopped),
        "seed": config.seed if sampler.uses_randomness else None,
        "streamed": bool(streams),
        "sampler": sampler.name,
        "backend": _model_info.get("backend"),
        "timings": {
            "timeToFirstTokenMs": (first - start) * 1000,
            "decodeMsPerToken": None if decode is None else decode * 1000,
            "tokensPerSecond": None if not decode else 1.0 / decode,
            "totalMs": (end - start) * 1000,
            "generatedTokens": len(token_ids),
        },
    }


@_reply
def model_info() -> dict:
    return {"model": _model_info if _model is not None else None}
