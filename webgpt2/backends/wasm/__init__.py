"""The wasm backend: SIMD WebAssembly kernels (C, compiled to one module) run by wasmtime."""

from webgpt2.backends.wasm.backend import WasmBackend, WasmTensor, load_module
from webgpt2.backends.wasm.driver import Driver, DriverError
from webgpt2.backends.wasm.memory import LinearMemory, WasmOutOfMemoryError

__all__ = ["Driver", "DriverError", "LinearMemory", "WasmBackend", "WasmOutOfMemoryError",
           "WasmTensor", "load_module"]
