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
except ImportError as e:  # natively: the registry never picks this driver there
    raise ImportError("the wasm backend's browser driver runs only inside Pyodide (no `js` "
                      "module here); natively the wasm backend runs on wasmtime") from e


def _object(value: dict) -> Any:
    return to_js(value, dict_converter=js.Object.fromEntries)


class BrowserDriver(Driver):
    """The kernels module instantiated by the browser with a memory created here."""

    def __init__(self, module_bytes: bytes) -> None:
        try:
            module = js.WebAssembly.Module.new(to_js(module_bytes))
        except Exception as e:  # a CompileError: no SIMD (or bulk memory) in this browser
            raise DriverError(f"this browser cannot compile the wasm kernels ({e}); they need "
                              "WebAssembly SIMD and bulk memory (Chrome 91+, Firefox 89+, "
                              "Safari 16.4+)") from e
        initial = memory_import_pages(module_bytes)
        try:
            self._memory = js.WebAssembly.Memory.new(
                _object({"initial": initial, "maximum": MAX_PAGES}))
            instance = js.WebAssembly.Instance.new(
                module, _object({"env": {"memory": self._memory}}))
        except Exception as e:
            raise DriverError(f"the wasm kernels module does not instantiate: {e}") from e
        exports = instance.exports
        self._exports = {name: getattr(exports, name)
                         for name in js.Object.keys(exports).to_py()}
        self._heap = js.Uint8Array.new(self._memory.buffer)

    def call(self, name: str, *args: int | float) -> int | float | None:
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
                "memory_pages": self.memory_size() // PAGE_SIZE}
