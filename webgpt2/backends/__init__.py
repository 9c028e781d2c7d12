"""Backend registry: choose and query backends the way TensorFlow.js does.

Example:
    >>> import webgpt2
    >>> "cpu" in webgpt2.available_backends()
    True
    >>> webgpt2.set_backend("cpu")
    >>> webgpt2.get_backend().name
    'cpu'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from webgpt2.backends.base import Backend, BackendError, HostTensor

__all__ = [
    "Backend",
    "BackendError",
    "HostTensor",
    "available_backends",
    "backend_status",
    "get_backend",
    "register_backend",
    "set_backend",
]

# name -> zero-argument factory; factories import their dependencies lazily so that a
# missing numpy or wgpu only matters for the backend that needs it.
_FACTORIES: dict[str, Callable[[], Backend]] = {}
_INSTANCES: dict[str, Backend] = {}
_FAILURES: dict[str, str] = {}
_current: str | None = None


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make a backend choosable by name. The factory runs on first use."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)
    _FAILURES.pop(name, None)


def _lazy(module: str, attribute: str) -> Callable[[], Backend]:
    def factory() -> Backend:
        return getattr(importlib.import_module(module), attribute)()

    return factory


# cpu is NumPy wherever NumPy imports (natively, or in a Pyodide that has it).
register_backend("cpu", _lazy("webgpt2.backends.cpu", "CPUBackend"))
register_backend("webgpu", _lazy("webgpt2.backends.webgpu", "WebGPUBackend"))
register_backend("wasm", _lazy("webgpt2.backends.wasm", "WasmBackend"))


def _instantiate(name: str) -> Backend:
    if name in _INSTANCES:
        return _INSTANCES[name]
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown backend {name!r}; expected one of {sorted(_FACTORIES)}"
        )
    if name in _FAILURES:
        raise BackendError(f"backend {name!r} is not available: {_FAILURES[name]}")
    try:
        backend = _FACTORIES[name]()
    except Exception as e:  # any failure to start a backend is reported, with its cause
        _FAILURES[name] = f"{type(e).__name__}: {e}"
        usable = [n for n in _FACTORIES if n != name and _probe(n)]
        raise BackendError(
            f"backend {name!r} is not available: {_FAILURES[name]}. "
            f"Available backends: {usable or 'none'}"
        ) from e
    _INSTANCES[name] = backend
    return backend


def _probe(name: str) -> bool:
    try:
        _instantiate(name)
        return True
    except BackendError:
        return False


def backend_status() -> dict[str, str]:
    """Each registered backend and either "available" or why it is not."""
    return {n: ("available" if _probe(n) else _FAILURES[n]) for n in _FACTORIES}


def available_backends() -> list[str]:
    """Names of the backends that can run here, in preference order."""
    return [n for n in _FACTORIES if _probe(n)]


def set_backend(name: str) -> None:
    """Make `name` the default backend (it is started now, so a failure shows here)."""
    global _current
    _instantiate(name)
    _current = name


def get_backend(name: str | Backend | None = None) -> Backend:
    """The named backend, or the current default (the first available one if none is set)."""
    global _current
    if isinstance(name, Backend):
        return name
    if name is not None:
        return _instantiate(name)
    if _current is None:
        usable = available_backends()
        if not usable:
            raise BackendError(f"no backend is available: {backend_status()}")
        # Prefer the NumPy backend as a default: it is exact and needs no device.
        _current = usable[0]
    return _instantiate(_current)
