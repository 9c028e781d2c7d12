"""Recording kernel dispatches and submitting them, for the webgpu backend.

Operations record dispatches into a pending list; it is submitted, all in one command
buffer, only when the host needs data (`read`) or `flush()` is called, so a greedy decode
step is one submission. The parameters of every pending dispatch are packed into one uniform
buffer, a slot each, written once per submission, so none is overwritten before it runs.

What Python needs to know of a kernel comes from its WGSL, read once when its pipeline is
built (`Kernel`): the fields of its `struct Params` (names and u32 / i32 / f32 types, so
parameters are packed by name), its `@workgroup_size`, and its module-scope integer
constants (how many outputs a workgroup covers, where that is not one per invocation).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webgpt2.backends.webgpu.driver import Binding, Copy, Dispatch, Driver, DriverError
from webgpt2.backends.webgpu.tensor import ceil_div

_PARAMS_SLOT = 256  # bytes per dispatch in the parameter buffer (WebGPU's default alignment)
_MAX_WORKGROUPS = 65535  # per grid dimension (WebGPU's default and common maximum)
_SCALAR_FORMATS = {"u32": "I", "i32": "i", "f32": "f"}


def _shader_folders() -> list[Path]:
    """The installed wheel's copy (`webgpt2/shaders`) first, then the repository root's."""
    package = Path(__file__).resolve().parents[2]
    return [package / "shaders", package.parent / "shaders"]


def load_shader(file_name: str, _included: set[str] | None = None) -> str:
    """The WGSL source of one kernel family, e.g. `load_shader("linear.wgsl")`.

    A line `//!include other.wgsl` is replaced by that file's source (a variant kernel
    reuses its family's parameters, bindings and helpers; kernels share helpers), once per
    loaded shader however many files include it. A line `//!provides other.wgsl` in an
    included file counts as including other.wgsl: a variant replaces one of its family's
    parts (attention_f16.wgsl its cache accessors) by including its own first.
    """
    included = set() if _included is None else _included
    for folder in _shader_folders():
        path = folder / file_name
        if path.is_file():
            included.add(file_name)
            parts = []
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.startswith("//!provides "):
                    included.add(line.split()[1])
                elif not line.startswith("//!include "):
                    parts.append(line)
                elif line.split()[1] not in included:
                    parts.append(load_shader(line.split()[1], included))
            return "".join(parts)
    raise DriverError(
        f"shader {file_name!r} not found; looked in {[str(f) for f in _shader_folders()]}"
    )


_COMMENT = re.compile(r"//[^\n]*")
_PARAMS = re.compile(r"\bstruct\s+Params\s*\{([^}]*)\}")
_FIELD = re.compile(r"^\s*(\w+)\s*:\s*([\w<>]+)\s*$")
_CONSTANT = re.compile(r"^const\s+(\w+)\s*(?::\s*\w+\s*)?=\s*(0[xX][0-9a-fA-F]+|\d+)[uUiI]?\s*;",
                       re.MULTILINE)


class Kernel:
    """One entry point's compute pipeline and what its WGSL says about calling it.

    `workgroup_size`: invocations per workgroup; `constants`: the module's integer
    constants by name; `params(**values)`: the bytes of its `struct Params`, every field by
    name, each packed as the WGSL declares it (a u32 field given 1.0 is an error, an f32
    field given 1 is 1.0).
    """

    __slots__ = ("label", "pipeline", "workgroup_size", "constants", "fields", "_names",
                 "_struct")

    def __init__(self, label: str, pipeline: Any, wgsl: str, entry_point: str) -> None:
        self.label = label
        self.pipeline = pipeline
        code = _COMMENT.sub("", wgsl)
        self.constants = {name: int(value, 0) for name, value in _CONSTANT.findall(code)}
        size = re.search(rf"@workgroup_size\(([^)]*)\)\s*fn\s+{re.escape(entry_point)}\b", code)
        if size is None:
            raise DriverError(f"{label}: no @compute @workgroup_size(...) fn {entry_point}")
        self.workgroup_size = 1
        for dimension in size.group(1).split(","):
            dimension = dimension.strip().rstrip("uUiI")
            self.workgroup_size *= self.constants[dimension] if dimension in self.constants \
                else int(dimension, 0)
        self.fields: tuple[str, ...] = ()
        formats = ""
        declared = _PARAMS.search(code)
        if declared is not None:
            names, codes = [], []
            for line in declared.group(1).split(","):
                if not line.strip():
                    continue
                field = _FIELD.match(line)
                if field is None or field.group(2) not in _SCALAR_FORMATS:
                    raise DriverError(f"{label}: Params field {line.strip()!r} is not a u32, "
                                      f"i32 or f32 (the only types packed by name)")
                names.append(field.group(1))
                codes.append(_SCALAR_FORMATS[field.group(2)])
            self.fields, formats = tuple(names), "".join(codes)
        self._names = frozenset(self.fields)
        # struct packs an int into an "f" field as a float, and refuses a float for "I".
        self._struct = struct.Struct("<" + formats)

    def params(self, **values: float) -> bytes:
        if values.keys() != self._names:
            missing = [f for f in self.fields if f not in values]
            extra = [v for v in values if v not in self.fields]
            raise TypeError(f"{self.label} Params: missing {missing}, unknown {extra}; its "
                            f"fields are {list(self.fields)}")
        try:
            return self._struct.pack(*[values[f] for f in self.fields])
        except struct.error as e:
            raise TypeError(f"{self.label} Params {values}: {e}") from None


class Recorder:
    """The pending dispatches of one device, their parameters, and their submission.

    `counters` counts dispatches, submissions, read-backs and the bytes moved (for
    benchmarks and tests). While `profile` is a dict (None by default), each submission
    times its dispatches (the driver's timestamp queries) and adds them there:
    profile["file.wgsl:entry"] = [nanoseconds, dispatches].
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.max_workgroups = min(_MAX_WORKGROUPS, int(driver.info.limits.get(
            "max_compute_workgroups_per_dimension", _MAX_WORKGROUPS)))
        self.counters: dict[str, int] = {}
        self.reset_counters()
        self._kernels: dict[tuple[str, str], Kernel] = {}
        self._pending: list[Any] = []  # Copy, or (kernel, bindings, workgroups, params)
        # Run after the next submission: freeing what pending work may still use.
        self._deferred: list[Callable[[], None]] = []
        self._submitting = False
        self._params_buffer: Any = None
        self._params_capacity = 0
        self._readback: Any = None
        self._readback_size = 0
        self.profile: dict[str, list[float]] | None = None

    def reset_counters(self) -> None:
        self.counters.update(dispatches=0, submissions=0, readbacks=0, bytes_read=0,
                             bytes_written=0)

    def kernel(self, file_name: str, entry_point: str, wgsl: str | None = None) -> Kernel:
        """The kernel of an entry point of `shaders/<file_name>` (or of the source `wgsl`),
        built on first use."""
        key = (file_name, entry_point)
        kernel = self._kernels.get(key)
        if kernel is None:
            source = load_shader(file_name) if wgsl is None else wgsl
            pipeline = self.driver.create_pipeline(source, entry_point, label=file_name)
            kernel = self._kernels[key] = Kernel(f"{file_name}:{entry_point}", pipeline,
                                                 source, entry_point)
        return kernel

    def dispatch(self, kernel: Kernel, bindings: list[Binding],
                 workgroups: int | tuple[int, int, int], /, **params: float) -> None:
        """Record a dispatch of `kernel`; binding 0 will be its Params, packed from `params`."""
        packed = kernel.params(**params)
        if isinstance(workgroups, int):
            workgroups = self._grid(workgroups)
        if workgroups[0] == 0:
            return
        self._pending.append((kernel, bindings, workgroups, packed))

    def copy(self, source: Any, source_offset: int, destination: Any, destination_offset: int,
             size: int) -> None:
        """Record a buffer-to-buffer copy of `size` bytes (multiples of 4) between dispatches."""
        if size:
            self._pending.append(Copy(source, source_offset, destination, destination_offset,
                                      size))

    def _grid(self, count: int) -> tuple[int, int, int]:
        """`count` workgroups as an x * y grid (kernels flatten it as y * nx + x)."""
        x = min(count, self.max_workgroups)
        y = ceil_div(count, x) if x else 0
        if y > self.max_workgroups:
            raise DriverError(f"{count} workgroups exceed the device's grid of "
                              f"{self.max_workgroups} x {self.max_workgroups}")
        return (x, y, 1)

    def idle(self) -> bool:
        """Whether no work is pending (nor being submitted)."""
        return not self._pending and not self._submitting

    def discard(self) -> None:
        """Forget the pending work (after a dispatch that failed to record)."""
        self._pending = []

    def when_idle(self, action: Callable[[], None]) -> None:
        """Run `action` now if no work is pending, else after that work is submitted."""
        if self._pending or self._submitting:
            self._deferred.append(action)
        else:
            action()

    def flush(self) -> None:
        """Submit every pending dispatch now, in one command buffer."""
        if not self._pending or self._submitting:
            return
        self._submitting = True
        try:
            self._submit(self._pending)
        finally:
            self._pending = []
            self._submitting = False
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()

    def _submit(self, pending: list) -> None:
        slots = sum(1 for c in pending if not isinstance(c, Copy))
        needed = max(slots, 1) * _PARAMS_SLOT
        if needed > self._params_capacity:
            if self._params_buffer is not None:
                self.driver.destroy_buffer(self._params_buffer)
            self._params_capacity = max(needed, 2 * self._params_capacity, 64 * _PARAMS_SLOT)
            self._params_buffer = self.driver.create_buffer(self._params_capacity, "uniform",
                                                            "dispatch parameters")
        arena = bytearray(needed)
        commands: list[Dispatch | Copy] = []
        labels: list[str] = []
        slot = 0
        for command in pending:
            if isinstance(command, Copy):
                commands.append(command)
                continue
            kernel, bindings, workgroups, params = command
            offset = slot * _PARAMS_SLOT
            arena[offset:offset + len(params)] = params
            bindings.append(Binding(0, self._params_buffer, offset, _PARAMS_SLOT))
            commands.append(Dispatch(kernel.pipeline, bindings, workgroups))
            labels.append(kernel.label)
            slot += 1
        self.driver.write_buffer(self._params_buffer, 0, arena)
        if self.profile is None:
            self.driver.submit(commands)
        else:
            for label, nanoseconds in zip(labels, self.driver.submit_timed(commands)):
                entry = self.profile.setdefault(label, [0.0, 0])
                entry[0] += nanoseconds
                entry[1] += 1
        self.counters["submissions"] += 1
        self.counters["dispatches"] += slot

    def read(self, buffer: Any, offset: int, size: int) -> bytes:
        """Submit pending work plus a copy of `size` bytes into the read-back buffer; read it."""
        padded = ceil_div(size, 4) * 4
        if padded > self._readback_size:
            if self._readback is not None:
                self.driver.destroy_buffer(self._readback)
            self._readback_size = max(padded, 256)
            self._readback = self.driver.create_buffer(self._readback_size, "readback",
                                                       "read back")
        self._pending.append(Copy(buffer, offset, self._readback, 0, padded))
        self.flush()
        data = self.driver.read_buffer(self._readback, 0, padded)
        self.counters["readbacks"] += 1
        self.counters["bytes_read"] += padded
        return data[:size]

    def write(self, buffer: Any, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self.driver.write_buffer(buffer, offset, data)
        self.counters["bytes_written"] += len(data)
