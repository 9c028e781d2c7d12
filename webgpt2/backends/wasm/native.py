"""`NativeDriver`: the kernels module run by wasmtime (`pip install wasmtime`), natively.

Kernel calls go through wasmtime's unchecked call (a prepared array of raw values per
export): the checked `Func.__call__` costs about 15 us per call in type checks and value
conversions, a fifth of a decode step's time on the host side. Memory is read and written
through a memoryview of wasmtime's linear memory, refreshed when it grows.
"""

from __future__ import annotations

import atexit
import ctypes
import weakref
from typing import Any

import wasmtime

from webgpt2.backends.wasm.driver import MAX_PAGES, PAGE_SIZE, Driver, DriverError

try:  # wasmtime's ctypes bindings: the unchecked call path (see the module docstring)
    from wasmtime import _ffi as _wasmtime_ffi
except ImportError:  # pragma: no cover - another wasmtime layout: the checked calls
    _wasmtime_ffi = None


class _RawCall:
    """One export called through `wasmtime_func_call_unchecked`."""

    __slots__ = ("_func", "_kinds", "_raw", "_result", "_size", "name")

    def __init__(self, name: str, func: wasmtime.Func, ty: wasmtime.FuncType) -> None:
        self.name = name
        self._func = func._func
        self._kinds = [str(p) for p in ty.params]
        results = [str(r) for r in ty.results]
        if len(results) > 1 or any(k not in ("i32", "f32", "f64") for k in self._kinds + results):
            raise DriverError(f"export {name!r} has signature {self._kinds} -> {results}; "
                              "the driver calls only i32/f32/f64 functions with one result")
        self._result = results[0] if results else None
        self._size = max(len(self._kinds), len(results), 1)
        self._raw = (_wasmtime_ffi.wasmtime_val_raw_t * self._size)()

    def __call__(self, context: Any, args: tuple) -> int | float | None:
        if len(args) != len(self._kinds):
            raise TypeError(f"export {self.name!r} takes {len(self._kinds)} arguments; "
                            f"got {len(args)}")
        raw = self._raw
        for slot, kind, value in zip(raw, self._kinds, args):
            if kind == "i32":
                slot.i32 = int(value)
            elif kind == "f32":
                slot.f32 = value
            else:
                slot.f64 = value
        trap = ctypes.POINTER(_wasmtime_ffi.wasm_trap_t)()
        error = _wasmtime_ffi.wasmtime_func_call_unchecked(
            context, ctypes.byref(self._func), raw, self._size, ctypes.byref(trap))
        if error:
            raise DriverError(f"wasm export {self.name!r} failed: "
                              f"{wasmtime.WasmtimeError._from_ptr(error)}")
        if trap:
            raise DriverError(f"wasm export {self.name!r} trapped: "
                              f"{wasmtime.Trap._from_ptr(trap)}")
        if self._result == "i32":
            return raw[0].i32
        if self._result == "f32":
            return raw[0].f32
        if self._result == "f64":
            return raw[0].f64
        return None


def _close(driver: weakref.ref) -> None:
    d = driver()
    if d is not None:
        d.close()


class NativeDriver(Driver):
    """The kernels module instantiated in wasmtime with a memory created here.

    Example:
        >>> from webgpt2.backends.wasm.backend import load_module
        >>> d = NativeDriver(load_module())
        >>> d.write(d.call("heap_base"), b"abcd")
        >>> d.read(d.call("heap_base"), 4)
        b'abcd'
    """

    def __init__(self, module_bytes: bytes) -> None:
        self._engine = wasmtime.Engine()
        try:
            module = wasmtime.Module(self._engine, module_bytes)
        except wasmtime.WasmtimeError as e:
            raise DriverError(f"the kernels module does not compile: {e}") from e
        self._store = wasmtime.Store(self._engine)
        initial = 1
        for imported in module.imports:
            if isinstance(imported.type, wasmtime.MemoryType):
                initial = imported.type.limits.min
        self._memory = wasmtime.Memory(
            self._store, wasmtime.MemoryType(wasmtime.Limits(initial, MAX_PAGES)))
        try:
            instance = wasmtime.Instance(self._store, module, [self._memory])
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            raise DriverError(f"the kernels module does not instantiate: {e}") from e
        self._context = self._store._context()
        self._exports: dict[str, Any] = {}
        for name, item in instance.exports(self._store).items():
            if isinstance(item, wasmtime.Func):
                ty = item.type(self._store)
                if _wasmtime_ffi is not None:
                    self._exports[name] = _RawCall(name, item, ty)
                else:  # pragma: no cover
                    self._exports[name] = item
        self._view: memoryview | None = None
        self._view_size = -1
        # Closed before the interpreter tears down wasmtime's module, whose finalizers
        # otherwise fail noisily at exit.
        atexit.register(_close, weakref.ref(self))

    def close(self) -> None:
        """Free the store (and the memory with it) now; the driver is unusable after."""
        self._exports.clear()
        self._view = None
        self._store.close()
        self._engine.close()

    def call(self, name: str, *args: int | float) -> int | float | None:
        function = self._exports.get(name)
        if function is None:
            raise DriverError(f"the kernels module has no export {name!r}; it has "
                              f"{sorted(self._exports)}")
        if isinstance(function, _RawCall):
            return function(self._context, args)
        try:  # pragma: no cover - the checked path
            return function(self._store, *args)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:  # pragma: no cover
            raise DriverError(f"wasm export {name!r} failed: {e}") from e

    def _memory_view(self) -> memoryview:
        size = self._memory.data_len(self._store)
        if self._view is None or size != self._view_size:
            base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
            self._view = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
            self._view_size = size
        return self._view

    def _range(self, offset: int, nbytes: int) -> memoryview:
        view = self._memory_view()
        if offset < 0 or nbytes < 0 or offset + nbytes > len(view):
            raise DriverError(f"bytes {offset}..{offset + nbytes} are outside the "
                              f"{len(view)}-byte linear memory")
        return view[offset:offset + nbytes]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        source = memoryview(data).cast("B")
        self._range(offset, len(source))[:] = source

    def read(self, offset: int, nbytes: int) -> bytes:
        return bytes(self._range(offset, nbytes))

    def memory_size(self) -> int:
        return self._memory.size(self._store) * PAGE_SIZE

    def grow(self, pages: int) -> None:
        try:
            self._memory.grow(self._store, pages)
        except wasmtime.WasmtimeError as e:
            raise DriverError(f"growing the memory by {pages} pages of 64 KiB "
                              f"(from {self.memory_size()} bytes) failed: {e}") from e

    def describe(self) -> dict:
        return {"driver": "native", "runtime": "wasmtime",
                "unchecked_calls": _wasmtime_ffi is not None}
