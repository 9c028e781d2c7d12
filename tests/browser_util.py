"""Helpers for driving the demo page in headless Chromium (tests and benchmarks/browser.py).

The page is served from 127.0.0.1 on an ephemeral port by an in-process `http.server`
thread (`webgpt2.web.start_server`), with checkpoint folders mounted beside it, and opened in
Debian's Chromium with WebGPU on (SwiftShader where there is no GPU).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
PYODIDE = ROOT / "node_modules" / "pyodide"
# Flags measured to work here (shared/PLATFORM.md): WebGPU on, nothing phoning home.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BOOT_TIMEOUT_MS = 120_000


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not (PYODIDE / "pyodide.mjs").exists():
        return "node_modules/pyodide is missing (run `npm install`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install playwright)"
    return None


@contextlib.contextmanager
def page_server(mounts: Mapping[str, Path] | None = None, numpy: str | None = None,
                isolated: bool = True) -> Iterator[str]:
    """Build the page and serve it with `mounts` (URL prefix -> folder); yields the base URL.
    isolated=False serves it without the cross-origin isolation headers."""
    from webgpt2.web import build, start_server

    build(ROOT, numpy=numpy, quiet=True)
    server = start_server("127.0.0.1", 0, root=ROOT, mounts=mounts, isolated=isolated)
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


_RUNNING: list = []  # the sync_playwright() in use: a second one cannot start inside it


@contextlib.contextmanager
def _playwright() -> Iterator[object]:
    if _RUNNING:
        yield _RUNNING[-1]
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        _RUNNING.append(p)
        try:
            yield p
        finally:
            _RUNNING.pop()


@contextlib.contextmanager
def chromium(args: list[str] | None = None) -> Iterator[object]:
    """A headless Chromium browser with a fresh profile (a Playwright persistent context),
    started with `args` instead of CHROMIUM_ARGS when given."""
    profile = tempfile.mkdtemp(prefix="webgpt2-chromium-")
    try:
        with _playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_ARGS if args is None else args,
                viewport={"width": 1100, "height": 1000},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(context, url: str, console: list[str] | None = None):
    """Open the page and wait until window.webgpt2.ready has resolved; returns the page."""
    page = context.new_page()
    if console is not None:
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_function("window.webgpt2 !== undefined")
    page.evaluate("window.webgpt2.ready")
    page.wait_for_selector("body[data-ready=true]", timeout=BOOT_TIMEOUT_MS)
    return page


def record_generation(model, prompt: str, max_new_tokens: int, sampler: str = "greedy",
                      seed: int | None = None, options: dict | None = None,
                      **sampler_options) -> dict:
    """Generate natively as the page does, returning what the page's generate() returns:
    the sampled ids (the stop token included), the streamed text and the same timings.
    options: more `stream` options (repetition_penalty, stop_strings, ...); sampler is a
    token-by-token one (not beam or contrastive)."""
    import time

    from webgpt2.generation.samplers import Sampler, get_sampler

    inner = get_sampler(sampler, **sampler_options)

    class Recording(Sampler):
        uses_randomness = inner.uses_randomness

        def __init__(self) -> None:
            super().__init__(inner.seed)
            self.ids: list[int] = []
            self.times: list[float] = []

        def next_tokens(self, backend, logits, rngs):
            ids = inner.next_tokens(backend, logits, rngs)
            self.ids.append(ids[0])
            self.times.append(time.perf_counter())
            return ids

    recording = Recording()
    start = time.perf_counter()
    text = "".join(model.stream(prompt, max_new_tokens=max_new_tokens, sampler=recording,
                                seed=seed, **(options or {})))
    times = recording.times
    decode = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return {
        "tokenIds": recording.ids,
        "text": text,
        "timings": {
            "timeToFirstTokenMs": (times[0] - start) * 1000 if times else None,
            "decodeMsPerToken": None if decode is None else decode * 1000,
            "generatedTokens": len(times),
        },
    }
