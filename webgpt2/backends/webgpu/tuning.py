"""A measured choice between the "small" and the "large" kernel shapes (device_profile.py),
for adapters whose type does not settle it (browsers report none), or when asked for
(`WebGPUBackend(device_profile="measure")`).

Both configurations run the same two products on the backend's own device: a decode-shaped
one (one row of 768 by a 768 x 3072 weight, where "large" splits K) and a prefill-shaped one
(32 rows by a 768 x 768 weight, "small" takes register blocks, "large" workgroup-memory
tiles), in the backend's weight dtype, alternately, the best of a few runs each; the faster
configuration is kept. With shader-f16, float16 arithmetic (linear_half.wgsl) is measured
the same way on a float16 decode-shaped product. This takes tens of milliseconds on a GPU
and about a second on a CPU adapter (mostly building pipelines), once per adapter and driver:
the choices and their timings are cached in `$WEBGPT2_CACHE/webgpu-profiles.json` (else
~/.cache/webgpt2/), under the adapter's identity (vendor, architecture, device, driver
description), so a new driver is measured again. In a web page there is no disk: the choice
is kept for the page's lifetime only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

from webgpt2.backends.host import HostTensor
from webgpt2.backends.webgpu.device_profile import PROFILES

if TYPE_CHECKING:
    from webgpt2.backends.webgpu.backend import WebGPUBackend

CACHE_NAME = "webgpu-profiles.json"
_ROUNDS = 3
_page_cache: dict[str, dict] = {}  # where there is no disk (Pyodide)


def cache_file() -> Path | None:
    """Where measured choices are kept: $WEBGPT2_CACHE (else ~/.cache/webgpt2)/CACHE_NAME;
    None in a web page."""
    if sys.platform == "emscripten":
        return None
    root = os.environ.get("WEBGPT2_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "webgpt2") \
        / CACHE_NAME


def _read(path: Path | None) -> dict:
    if path is None:
        return dict(_page_cache)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path | None, key: str, entry: dict) -> None:
    if path is None:
        _page_cache[key] = entry
        return
    data = _read(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        temporary.replace(path)  # whole or not at all, should two processes measure at once
    except OSError:
        pass  # a read-only home: measure again next time


def measure_choices(backend: WebGPUBackend, path: Path | None, f16_arithmetic: bool) -> None:
    """Set the backend's device profile (and, if `f16_arithmetic`, whether float16 weights
    are multiplied in f16) to the cached choice for this adapter, else to the faster,
    measured now."""
    key = backend.driver.info.identity or backend.driver.info.name
    cached = _read(path).get(key)
    if not (isinstance(cached, dict) and cached.get("profile") in PROFILES):
        times = measure(backend)
        cached = {"profile": min(times, key=times.get),
                  "ms": {name: round(t * 1e3, 3) for name, t in times.items()}}
        backend.device_profile = PROFILES[cached["profile"]]
        if "shader-f16" in backend.driver.info.features:
            f16 = measure_f16(backend)
            cached["f16_arithmetic"] = f16[True] < f16[False]
            cached["f16_ms"] = {str(k).lower(): round(t * 1e3, 3) for k, t in f16.items()}
        _write(path, key, cached)
    backend.device_profile = PROFILES[cached["profile"]]
    if f16_arithmetic:
        backend.f16_arithmetic = bool(cached.get("f16_arithmetic", False))


def _weight(backend: WebGPUBackend, k: int, n: int, dtype: str):
    values = array("f", [((i * 7919) % 61 - 30) / 300.0 for i in range(n)]) * k
    return backend.upload(HostTensor("float32", (k, n), values.tobytes()), "linear", dtype)


def _best(backend: WebGPUBackend, settings: dict, run) -> dict:
    """Seconds per run(), the best of _ROUNDS after a warm-up, each setting in turn."""
    best = dict.fromkeys(settings, float("inf"))
    for round_ in range(_ROUNDS + 1):  # round 0 builds the pipelines
        for name, apply in settings.items():
            apply()
            t0 = time.perf_counter()
            outs = run()
            backend.recorder.read(outs[-1].buffer, 0, 4)  # submits and waits
            if round_:
                best[name] = min(best[name], time.perf_counter() - t0)
            for out in outs:
                backend.release(out)
    return best


def measure_f16(backend: WebGPUBackend) -> dict[bool, float]:
    """Seconds per decode-shaped float16 product with and without f16 arithmetic."""
    weight = _weight(backend, 768, 3072, "float16")
    one = backend.tensor([[0.01 * (i % 13) for i in range(768)]], "float32")
    try:
        return _best(backend, {flag: lambda flag=flag: setattr(backend, "f16_arithmetic", flag)
                               for flag in (True, False)},
                     lambda: [backend.linear(one, weight, None, None, None)])
    finally:
        backend.release(one)
        backend.release(weight)


def measure(backend: WebGPUBackend) -> dict[str, float]:
    """Seconds per run of the two products under each profile (best of _ROUNDS, alternated)."""
    k, n, rows = 768, 3072, 32
    weights = {shape: _weight(backend, *shape, backend.dtype) for shape in ((k, n), (k, k))}
    one = backend.tensor([[0.01 * (i % 13) for i in range(k)]], "float32")
    many = backend.tensor([[0.01 * ((i + r) % 13) for i in range(k)] for r in range(rows)],
                          "float32")
    try:
        return _best(backend, {name: lambda p=profile: setattr(backend, "device_profile", p)
                               for name, profile in PROFILES.items()},
                     lambda: [backend.linear(one, weights[(k, n)], None, None, None),
                              backend.linear(many, weights[(k, k)], None, None, None)])
    finally:
        for tensor in (one, many, *weights.values()):
            backend.release(tensor)
