"""`NativeDriver`: the kernels module run by wasmtime (`pip install wasmtime`), natively.

Kernel calls go through wasmtime's unchecked call (a prepared array of raw values per
export): the checked `Func.__call__` costs about 15 us per call in type checks and value
conversions, a fifth of a decode step's time on the host side. Memory is read and written
through a memoryview of wasmtime's linear memory, refreshed when it grows.

Which module: given no bytes, the driver loads `kernels.wasm`, without relaxed SIMD, although
wasmtime has relaxed SIMD (on by default) and fuses its multiply-add into an FMA where the CPU
has one: Cranelift runs the relaxed build's tiled products (prefill) about 10% slower and its
decode products no faster (wasm/README.md). `relaxed=True` or `$WEBGPT2_WASM_RELAXED=1`
loads `kernels-relaxed.wasm` instead.
"""

from __future__ import annotations

import atexit
import ctypes
import struct
import weakref
from typing import Any

from webgpt2.backends.wasm.driver import MAX_PAGES, PAGE_SIZE, Driver, DriverError
from webgpt2.backends.wasm.tensor import (
    RELAXED_SIMD_PROBE,
    load_module,
    module_name,
    use_relaxed,
)

try:
    import wasmtime
except ImportError as e:  # the registry reports the backend unavailable with this reason
    raise ImportError("the wasm backend runs on wasmtime, which is not installed: "
                      "pip install 'webgpt2[wasm]' (or wasmtime)") from e

try:  # wasmtime's ctypes bindings: the unchecked call path (see the module docstring)
    from wasmtime import _bindings as _wasmtime_bindings
    from wasmtime import _ffi as _wasmtime_ffi

    _call_unchecked = _wasmtime_bindings._wasmtime_func_call_unchecked
except (ImportError, AttributeError):  # pragma: no cover - another layout: checked calls
    _wasmtime_ffi = None

# Each argument fills one 16-byte raw value; an i32 is written as the low half of an i64,
# which wraps offsets past 2 GiB and negative numbers alike into its 32 bits.
_ARGUMENT_FORMATS = {"i32": "q8x", "f32": "f12x", "f64": "d8x"}
_RESULT_FORMATS = {"i32": "<i", "f32": "<f", "f64": "<d"}


class _RawCall:
    """One export called through `wasmtime_func_call_unchecked`: the arguments are packed
    into a prepared array of raw values by one struct.pack_into."""

    __slots__ = ("_func", "_count", "_pack", "_raw", "_result", "_size", "_trap", "_trap_ref",
                 "name")

    def __init__(self, name: str, func: wasmtime.Func, ty: wasmtime.FuncType) -> None:
        self.name = name
        kinds = [str(p) for p in ty.params]
        results = [str(r) for r in ty.results]
        if len(results) > 1 or any(k not in _ARGUMENT_FORMATS for k in kinds + results):
            raise DriverError(f"export {name!r} has signature {kinds} -> {results}; "
                              "the driver calls only i32/f32/f64 functions with one result")
        self._func = ctypes.byref(func._func)
        self._count = len(kinds)
        self._pack = struct.Struct("<" + "".join(_ARGUMENT_FORMATS[k] for k in kinds)).pack_into
        self._result = _RESULT_FORMATS[results[0]] if results else None
        self._size = max(len(kinds), len(results), 1)
        self._raw = (_wasmtime_ffi.wasmtime_val_raw_t * self._size)()
        self._new_trap()

    def _new_trap(self) -> None:
        self._trap = ctypes.POINTER(_wasmtime_ffi.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)

    def __call__(self, context: Any, args: tuple) -> int | float | None:
        if len(args) != self._count:
            raise TypeError(f"export {self.name!r} takes {self._count} arguments; "
                            f"got {len(args)}")
        raw = self._raw
        self._pack(raw, 0, *args)
        error = _call_unchecked(context, self._func, raw, self._size, self._trap_ref)
        if error:
            raise DriverError(f"wasm export {self.name!r} failed: "
                              f"{wasmtime.WasmtimeError._from_ptr(error)}")
        if self._trap:
            trap = self._trap
            self._new_trap()
            raise DriverError(f"wasm export {self.name!r} trapped: "
                              f"{wasmtime.Trap._from_ptr(trap)}")
        if self._result is None:
            return None
        return struct.unpack_from(self._result, raw)[0]


def _validates(engine: wasmtime.Engine, module_bytes: bytes) -> bool:
    try:
        wasmtime.Module.validate(engine, module_bytes)
    except wasmtime.WasmtimeError:
        return False
    return True


def _close(driver: weakref.ref) -> None:
    d = driver()
    if d is not None:
        d.close()


class NativeDriver(Driver):
    """The kernels module instantiated in wasmtime with a memory created here: the given
    bytes, or a shipped build (the baseline, or with `relaxed` the relaxed-SIMD one; see the
    module docstring).

    Example:
        >>> from webgpt2.backends.wasm.backend import load_module
        >>> d = NativeDriver(load_module())
        >>> d.write(d.call("heap_base"), b"abcd")
        >>> d.read(d.call("heap_base"), 4)
        b'abcd'
        >>> NativeDriver(relaxed=True).describe()["module"]
        'kernels-relaxed.wasm'
    """

    def __init__(self, module_bytes: bytes | None = None, relaxed: bool | None = None) -> None:
        config = wasmtime.Config()
        config.wasm_relaxed_simd = True  # the default; explicit, for the relaxed build
        self._engine = wasmtime.Engine(config)
        self.relaxed_simd_engine = _validates(self._engine, RELAXED_SIMD_PROBE)
        if module_bytes is None:  # the baseline unless told (see the module docstring)
            module_bytes = load_module(relaxed=use_relaxed(False, relaxed))
        self.module = module_name(module_bytes)
        self.module_bytes = len(module_bytes)
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
        try:
            from importlib.metadata import version

            runtime = f"wasmtime {version('wasmtime')}"
        except Exception:  # metadata missing (a vendored copy): the name alone
            runtime = "wasmtime"
        return {"driver": "native", "runtime": runtime,
                "unchecked_calls": _wasmtime_ffi is not None,
                "relaxed_simd_engine": self.relaxed_simd_engine, "module": self.module,
                "relaxed_simd": None if self.module is None else "relaxed" in self.module,
                "module_bytes": self.module_bytes}
