"""`BrowserDriver`: the kernels module run by the browser's own WebAssembly engine, from
Python in Pyodide, through its JavaScript FFI (`js`).

The same `kernels.wasm` bytes that wasmtime runs natively (read from the installed package,
inside Pyodide's file system: the server needs nothing more) are compiled with
`new WebAssembly.Module` and instantiated with `new WebAssembly.Instance` on a
`new WebAssembly.Memory({initial, maximum: 65536})` made here. Both are synchronous, which
browsers allow for modules of any size off the main thread, as in the page's worker: no
JSPI is needed. A browser that cannot compile the module (one without WebAssembly SIMD)
raises `DriverError` with its reason, which marks the backend unavailable.

Memory is reached through a `Uint8Array` over `memory.buffer`; growing the memory detaches
that buffer, so the view is rebuilt after every `grow`. Writes copy from the Python buffer
straight into the kernels' memory (`JsBuffer.assign`); reads copy out with `to_bytes`.

Threads: in a cross-origin isolated page (SharedArrayBuffer allowed; `webgpt2 serve` sends
COOP/COEP) the driver instantiates `kernels-threads.wasm` (the same sources built with
atomics) on a shared memory, and starts `threads - 1` helper workers (from a Blob URL, so the
server needs nothing more), each instantiating the module on that memory with a stack of its
own (reserved here, below what `heap_base` reports) and waiting in the module's
`worker_loop` until `linear` splits a product's outputs (or a decode step's `attention` its
heads) between the threads (pool.c). The host's thread polls, then blocks in
`memory.atomic.wait32` until the parts are in, which a worker may do.
Helpers boot asynchronously; products run on the threads that are ready.

Relaxed SIMD: given no bytes, the driver loads the relaxed-SIMD build of either
(`kernels-relaxed.wasm`, `kernels-relaxed-threads.wasm`: the matrix products' multiply-adds
as f32x4.relaxed_madd) when `WebAssembly.validate` accepts a module of one relaxed_madd
(Chrome 114+; a browser without relaxed SIMD, or with it behind a flag, gets the others);
`relaxed=False` (or True) forces the choice, as `$WEBGPT2_WASM_RELAXED` (0 / 1) does in
Pyodide's environment.

Example (inside Pyodide):
    >>> from webgpt2.backends.wasm import WasmBackend
    >>> WasmBackend().describe()["driver"]  # doctest: +SKIP
    'browser'
"""

from __future__ import annotations

from typing import Any

from webgpt2.backends.wasm.driver import (
    MAX_PAGES,
    PAGE_SIZE,
    Driver,
    DriverError,
    memory_import_pages,
)

try:
    import js
    from pyodide.ffi import to_js
except ImportError:  # natively: the registry never picks this driver there
    js = to_js = None


def _object(value: dict) -> Any:
    return to_js(value, dict_converter=js.Object.fromEntries)


MAX_THREADS = 4  # matmul.c's MAX_THREADS in the threaded build
# Each helper thread's stack (the kernels keep little on it; wasm-ld gives the host's 64 KiB).
HELPER_STACK = 128 * 1024
# A helper: instantiate the module on the shared memory, take its stack, serve products.
_HELPER_JS = """
self.onmessage = (event) => {
  const { module, memory, id, stack } = event.data;
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  instance.exports.__stack_pointer.value = stack;
  instance.exports.worker_loop(id);  // never returns
};
"""


def default_threads() -> int:
    """Threads for the kernels here: the cores (at most MAX_THREADS) in a cross-origin
    isolated page, else 1 (no SharedArrayBuffer)."""
    if not getattr(js, "crossOriginIsolated", False):
        return 1
    cores = int(getattr(js.navigator, "hardwareConcurrency", 1) or 1)
    return max(1, min(cores, MAX_THREADS))


class BrowserDriver(Driver):
    """The kernels module instantiated by the browser with a memory created here."""

    def __init__(self, module_bytes: bytes | None = None, threads: int | None = None,
                 relaxed: bool | None = None) -> None:
        from webgpt2.backends.wasm.tensor import (
            RELAXED_SIMD_PROBE,
            load_module,
            module_name,
            use_relaxed,
        )

        if js is None:
            raise ImportError("the wasm backend's browser driver runs only inside Pyodide (no "
                              "`js` module here); natively the wasm backend runs on wasmtime")

        if threads is None:  # given bytes are the one-thread build unless threads says
            threads = default_threads() if module_bytes is None else 1
        threads = int(threads)
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads {threads}; expected 1 to {MAX_THREADS}")
        if threads > 1 and not getattr(js, "crossOriginIsolated", False):
            raise DriverError(f"threads {threads} need a cross-origin isolated page (COOP and "
                              "COEP headers, as `webgpt2 serve` sends); this one is not")
        self.threads = threads
        self.relaxed_simd_engine = bool(js.WebAssembly.validate(to_js(RELAXED_SIMD_PROBE)))
        if module_bytes is None:
            module_bytes = load_module(threads=threads > 1,
                                       relaxed=use_relaxed(self.relaxed_simd_engine, relaxed))
        self.module = module_name(module_bytes)
        self.module_bytes = len(module_bytes)
        try:
            module = js.WebAssembly.Module.new(to_js(module_bytes))
        except Exception as e:  # a CompileError: no SIMD (or bulk memory) in this browser
            raise DriverError(f"this browser cannot compile the wasm kernels ({e}); they need "
                              "WebAssembly SIMD and bulk memory (Chrome 91+, Firefox 89+, "
                              "Safari 16.4+)") from e
        initial = memory_import_pages(module_bytes)
        try:
            self._memory = js.WebAssembly.Memory.new(
                _object({"initial": initial, "maximum": MAX_PAGES, "shared": threads > 1}))
            instance = js.WebAssembly.Instance.new(
                module, _object({"env": {"memory": self._memory}}))
        except Exception as e:
            raise DriverError(f"the wasm kernels module does not instantiate: {e}") from e
        exports = instance.exports
        self._exports = {name: getattr(exports, name)
                         for name in js.Object.keys(exports).to_py()}
        self._heap = js.Uint8Array.new(self._memory.buffer)
        self._heap_base = int(self._exports["heap_base"]())
        self._helpers: list[Any] = []
        if threads > 1:
            self._start_helpers(module, threads)

    def _start_helpers(self, module: Any, threads: int) -> None:
        """Reserve each helper's stack above the module's own, then start the helpers."""
        base = -(-self._heap_base // 16) * 16
        end = base + (threads - 1) * HELPER_STACK
        if end > self.memory_size():
            self.grow(-(-(end - self.memory_size()) // PAGE_SIZE))
        self._heap_base = end
        self._exports["threads"](threads)
        blob = js.Blob.new(to_js([_HELPER_JS]), _object({"type": "text/javascript"}))
        url = js.URL.createObjectURL(blob)
        for helper in range(1, threads):
            worker = js.Worker.new(url)
            worker.postMessage(_object({"module": module, "memory": self._memory,
                                        "id": helper, "stack": base + helper * HELPER_STACK}))
            self._helpers.append(worker)

    def ready_threads(self) -> int:
        """Threads that take part in products now: the host's and the helpers that started."""
        if not self._helpers:
            return 1
        return 1 + int(self._exports["threads"](self.threads))

    def close(self) -> None:
        """Stop the helper workers (the memory goes with the driver)."""
        for worker in self._helpers:
            worker.terminate()
        self._helpers = []

    def call(self, name: str, *args: int | float) -> int | float | None:
        if name == "heap_base":  # above the helpers' stacks
            return self._heap_base
        function = self._exports.get(name)
        if function is None:
            raise DriverError(f"the kernels module has no export {name!r}; it has "
                              f"{sorted(self._exports)}")
        try:
            return function(*args)
        except Exception as e:  # a WebAssembly.RuntimeError (a trap), or a bad argument
            raise DriverError(f"wasm export {name!r} trapped: {e}") from e

    def _range(self, offset: int, nbytes: int) -> Any:
        size = self._heap.length
        if size == 0:  # detached by a grow that did not come through grow()
            self._heap = js.Uint8Array.new(self._memory.buffer)
            size = self._heap.length
        if offset < 0 or nbytes < 0 or offset + nbytes > size:
            raise DriverError(f"bytes {offset}..{offset + nbytes} are outside the "
                              f"{size}-byte linear memory")
        return self._heap.subarray(offset, offset + nbytes)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        source = memoryview(data).cast("B")
        if len(source):
            self._range(offset, len(source)).assign(source)

    def read(self, offset: int, nbytes: int) -> bytes:
        if not nbytes:
            return b""
        return self._range(offset, nbytes).to_bytes()

    def memory_size(self) -> int:
        return int(self._memory.buffer.byteLength)

    def grow(self, pages: int) -> None:
        try:
            self._memory.grow(pages)
        except Exception as e:  # a RangeError: past the maximum, or the browser refused
            raise DriverError(f"growing the memory by {pages} pages of 64 KiB "
                              f"(from {self.memory_size()} bytes) failed: {e}") from e
        finally:
            # grow() detaches the old ArrayBuffer: every view over it reads as empty.
            self._heap = js.Uint8Array.new(self._memory.buffer)

    def describe(self) -> dict:
        agent = str(getattr(js.navigator, "userAgent", "")) if hasattr(js, "navigator") else ""
        return {"driver": "browser", "runtime": "browser WebAssembly", "user_agent": agent,
                "threads": self.ready_threads(), "memory_pages": self.memory_size() // PAGE_SIZE,
                "relaxed_simd_engine": self.relaxed_simd_engine, "module": self.module,
                "relaxed_simd": None if self.module is None else "relaxed" in self.module,
                "module_bytes": self.module_bytes}
