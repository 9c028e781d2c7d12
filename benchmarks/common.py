"""Shared pieces of the benchmarks: the GPT-2 124M checkpoint written by transformers,
medians of interleaved runs, and memory readings."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tests/ holds the reference checkpoints' writer (reference_checkpoints.py) and the browser
# helpers (browser_util.py), plain modules the benchmarks share with the tests.
sys.path.insert(0, str(ROOT / "tests"))

GPT2_124M = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}


def checkpoint(name: str = "gpt2-124m", config: dict | None = None, seed: int = 0) -> Path:
    """A transformers-written GPT-2 checkpoint (the real config's names and shapes), cached
    under .cache/bench/: GPT-2 124M's config by default, the tests' config and seed for one
    of their names (tiny-2l, small-6l). The weights are random: speed does not depend on
    their values."""
    from reference_checkpoints import CHECKPOINTS, write_hf_checkpoint

    if config is None and name in CHECKPOINTS:
        config, seed = CHECKPOINTS[name]

    directory = ROOT / ".cache" / "bench" / name
    if not all((directory / f).exists() for f in ("model.safetensors", "vocab.json")):
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        write_hf_checkpoint(directory, config or GPT2_124M, seed)
    return directory


def browser_missing(what: str) -> bool:
    """True, having printed why, when `what` (a browser benchmark) cannot run here: no
    Chromium, Pyodide or Playwright (browser_util.missing_requirements)."""
    from browser_util import missing_requirements

    reason = missing_requirements()
    if reason:
        print(f"cannot run the {what}: {reason}")
    return reason is not None


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image.

    Linux's VmHWM is reset by exec; getrusage's ru_maxrss is not (a child started from a big
    parent would report the parent's size), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def threads() -> int:
    return int(os.environ.get("WEBGPT2_BENCH_THREADS", os.cpu_count() or 1))
