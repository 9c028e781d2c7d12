"""A measured choice between the "small" and the "large" kernel shapes (device_profile.py),
for adapters whose type does not settle it (browsers report none), or when asked for
(`WebGPUBackend(device_profile="measure")`).

Both configurations run the same two products on the backend's own device: a decode-shaped
one (one row of 768 by a 768 x 3072 weight, where "large" splits K) and a prefill-shaped one
(32 rows by a 768 x 768 weight, "small" takes register blocks, "large" workgroup-memory
tiles), in the backend's weight dtype, alternately, the best of a few runs each. The faster
configuration is kept. The measurement takes tens of milliseconds on a GPU (a few hundred
on a CPU adapter), once per adapter and driver: the choice and its timings are cached in
`$WEBGPT2_CACHE/webgpu-profiles.json` (else ~/.cache/webgpt2/), under the adapter's identity
(vendor, architecture, device, driver description), so a new driver is measured again. In a
web page there is no disk: the choice is kept for the page's lifetime only.
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
from webgpt2.backends.webgpu.device_profile import PROFILES, DeviceProfile

if TYPE_CHECKING:
    from webgpt2.backends.webgpu.backend import WebGPUBackend

CACHE_NAME = "webgpu-profiles.json"
_ROUNDS = 3
_page_cache: dict[str, str] = {}  # where there is no disk (Pyodide)


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
        return {k: {"profile": v} for k, v in _page_cache.items()}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path | None, key: str, entry: dict) -> None:
    if path is None:
        _page_cache[key] = entry["profile"]
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


def measured_profile(backend: WebGPUBackend, path: Path | None) -> DeviceProfile:
    """The cached choice for this adapter, else the faster of the two, measured now."""
    key = backend.driver.info.identity or backend.driver.info.name
    cached = _read(path).get(key)
    if isinstance(cached, dict) and cached.get("profile") in PROFILES:
        return PROFILES[cached["profile"]]
    times = measure(backend)
    choice = min(times, key=times.get)
    _write(path, key, {"profile": choice,
                       "ms": {name: round(t * 1e3, 3) for name, t in times.items()}})
    return PROFILES[choice]


def measure(backend: WebGPUBackend) -> dict[str, float]:
    """Seconds per run of the two products under each profile (best of _ROUNDS, alternated)."""
    k, n, rows = 768, 3072, 32
    weights = {}
    for shape in ((k, n), (k, k)):
        values = array("f", [((i * 7919) % 61 - 30) / 300.0 for i in range(shape[1])]) * shape[0]
        weights[shape] = backend.upload(HostTensor("float32", shape, values.tobytes()),
                                        "linear", backend.dtype)
    one = backend.tensor([[0.01 * (i % 13) for i in range(k)]], "float32")
    many = backend.tensor([[0.01 * ((i + r) % 13) for i in range(k)] for r in range(rows)],
                          "float32")
    best = dict.fromkeys(PROFILES, float("inf"))
    try:
        for round_ in range(_ROUNDS + 1):  # round 0 builds the pipelines
            for name, profile in PROFILES.items():
                backend.device_profile = profile
                t0 = time.perf_counter()
                outs = [backend.linear(one, weights[(k, n)], None, None, None),
                        backend.linear(many, weights[(k, k)], None, None, None)]
                backend.recorder.read(outs[1].buffer, 0, 4)  # submits and waits
                if round_:
                    best[name] = min(best[name], time.perf_counter() - t0)
                for out in outs:
                    backend.release(out)
    finally:
        for tensor in (one, many, *weights.values()):
            backend.release(tensor)
    return best
