"""The NumPy backend: `cpu` natively, `wasm` under Pyodide (the same code)."""

from webgpt2.backends.cpu.backend import CPUBackend

__all__ = ["CPUBackend"]
