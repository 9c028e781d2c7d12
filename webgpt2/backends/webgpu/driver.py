"""The device driver boundary of the `webgpu` backend.

The backend (kernels, buffers, the order of dispatches) is written once against this small
surface. Two drivers implement it: `NativeDriver` on wgpu-py (Vulkan, Metal, D3D12, or
lavapipe on a CPU) and `BrowserDriver` on the page's `navigator.gpu` through Pyodide's JS
FFI, where `pyodide.ffi.run_sync` (JSPI) turns each GPU promise into a plain call. Every
method is synchronous so the backend code is the same in both places.

The surface mirrors the WebGPU spec's names (buffers, compute pipelines with automatic
layouts, bind groups, one command encoder per submission), so that the spec is its
documentation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class DriverError(RuntimeError):
    """The device failed: no adapter, a lost device, a limit too small, or a bad shader."""


class ShaderError(DriverError):
    """A WGSL module failed to compile or a pipeline failed to build."""


# Buffer usages, as the backend asks for them, and the WebGPU usage flags each stands for
# (by their names in the spec's GPUBufferUsage, which wgpu-py's BufferUsage shares).
BUFFER_USAGE_FLAGS = {
    "storage": ("STORAGE", "COPY_SRC", "COPY_DST"),  # weights, activations, the KV cache
    "uniform": ("UNIFORM", "COPY_DST"),  # the dispatches' parameters
    "readback": ("MAP_READ", "COPY_DST"),  # staging for reads to the host
}


def usage_flags(flags: Any) -> dict[str, int]:
    """Each usage's flags or-ed together, from an object whose attributes are the flags
    (`wgpu.BufferUsage`, or the page's `GPUBufferUsage`)."""
    usages = {}
    for usage, names in BUFFER_USAGE_FLAGS.items():
        value = 0
        for name in names:
            value |= int(getattr(flags, name))
        usages[usage] = value
    return usages


# Limits the backend sizes its buffers and kernels by: every driver asks the device for the
# adapter's maximum of each, since WebGPU's defaults (128 MiB bindings, 256 MiB buffers) are
# far smaller than GPT-2's token embedding needs. Spelled as `AdapterInfo.limits` keys them;
# the browser's JavaScript names are the camelCase forms (`camel_case`).
REQUESTED_LIMITS = (
    "max_buffer_size",
    "max_storage_buffer_binding_size",
    "max_compute_workgroup_storage_size",
    "max_compute_invocations_per_workgroup",
    "max_compute_workgroup_size_x",
    "max_compute_workgroups_per_dimension",
    "max_storage_buffers_per_shader_stage",
)
REPORTED_LIMITS = REQUESTED_LIMITS + (
    "max_uniform_buffer_binding_size",
    "min_storage_buffer_offset_alignment",
    "min_uniform_buffer_offset_alignment",
)
# Features used where present, by their WebGPU spec names.
OPTIONAL_FEATURES = ("shader-f16", "subgroups", "timestamp-query")


def camel_case(name: str) -> str:
    """`max_buffer_size` -> `maxBufferSize` (the JavaScript API's spelling)."""
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


@dataclass(frozen=True)
class Binding:
    """One entry of a bind group: binding index, buffer, byte offset and size (None = rest)."""

    binding: int
    buffer: Any
    offset: int = 0
    size: int | None = None


@dataclass(frozen=True)
class Dispatch:
    """One compute dispatch: a pipeline, its group-0 bindings and a workgroup count."""

    pipeline: Any
    bindings: Sequence[Binding]
    workgroups: tuple[int, int, int]


@dataclass(frozen=True)
class Copy:
    """A buffer-to-buffer copy recorded in the same command buffer as the dispatches."""

    source: Any
    source_offset: int
    destination: Any
    destination_offset: int
    size: int


@dataclass
class AdapterInfo:
    """What the driver runs on, for `webgpt2 info` and for choosing kernel variants."""

    name: str
    backend_type: str
    driver: str  # "native" or "browser"
    limits: dict[str, int] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    adapter_type: str = ""  # "CPU", "DiscreteGPU", ... where the driver says (native)
    # vendor, architecture, device and driver description: what a measured choice of kernel
    # shapes is cached under (tuning.py), so a new driver version measures again
    identity: str = ""


class BindGroupCache:
    """Bind groups by (pipeline, bindings), least recently used out first.

    A decode step repeats the same dispatches on the same pooled buffers, so after the first
    steps most bind groups come from here. `create(layout, bindings)` makes one with the
    driver's API; `layout_of(pipeline)` gives a pipeline's group-0 layout. The cache keeps
    the pipelines and buffers it names alive, so an id in a key is never reused while cached;
    a destroyed buffer's groups are dropped (`forget_buffer`).
    """

    def __init__(self, create: Callable[[Any, Sequence[Binding]], Any],
                 layout_of: Callable[[Any], Any], capacity: int = 4096) -> None:
        self._create, self._layout_of, self._capacity = create, layout_of, capacity
        self._layouts: dict[int, tuple[Any, Any]] = {}
        self._groups: OrderedDict[tuple, tuple[Any, list]] = OrderedDict()
        self._keys_by_buffer: dict[int, list[tuple]] = {}

    def get(self, pipeline: Any, bindings: Sequence[Binding]) -> Any:
        key = (id(pipeline),) + tuple(
            (b.binding, id(b.buffer), b.offset, b.size) for b in bindings)
        cached = self._groups.get(key)
        if cached is not None:
            self._groups.move_to_end(key)
            return cached[0]
        layout = self._layouts.get(id(pipeline))
        if layout is None:
            layout = self._layouts[id(pipeline)] = (self._layout_of(pipeline), pipeline)
        group = self._create(layout[0], bindings)
        self._groups[key] = (group, [b.buffer for b in bindings])
        for b in bindings:
            self._keys_by_buffer.setdefault(id(b.buffer), []).append(key)
        if len(self._groups) > self._capacity:
            old_key, (_, buffers) = self._groups.popitem(last=False)
            for buffer in buffers:
                keys = self._keys_by_buffer.get(id(buffer))
                if keys is not None and old_key in keys:
                    keys.remove(old_key)
                    if not keys:
                        del self._keys_by_buffer[id(buffer)]
        return group

    def forget_buffer(self, buffer: Any) -> None:
        for key in self._keys_by_buffer.pop(id(buffer), ()):
            self._groups.pop(key, None)


class Driver:
    """Abstract driver; see the module docstring. The public methods that check their
    arguments do so here, once, and call the drivers' `_create_buffer`."""

    info: AdapterInfo
    _bind_groups: BindGroupCache

    def create_buffer(self, size: int, usage: str, label: str = "") -> Any:
        """A zero-initialised buffer of `size` bytes (a multiple of 4)."""
        if size % 4:
            raise ValueError(f"buffer size {size} is not a multiple of 4")
        if usage not in BUFFER_USAGE_FLAGS:
            raise ValueError(f"buffer usage {usage!r}; expected one of "
                             f"{sorted(BUFFER_USAGE_FLAGS)}")
        limit = self.info.limits.get("max_buffer_size", 0)
        if limit and size > limit:
            raise DriverError(
                f"a {size}-byte buffer{' (' + label + ')' if label else ''} exceeds the "
                f"device's max_buffer_size of {limit} bytes"
            )
        # WebGPU refuses empty buffers; a zero-sized tensor still gets one to bind.
        return self._create_buffer(max(size, 4), usage, label)

    def _create_buffer(self, size: int, usage: str, label: str) -> Any:
        raise NotImplementedError

    def write_buffer(self, buffer: Any, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue a host-to-buffer copy; it lands before the next submission's work."""
        raise NotImplementedError

    def read_buffer(self, buffer: Any, offset: int, size: int) -> bytes:
        """Wait for all submitted work, then copy `size` bytes back to the host."""
        raise NotImplementedError

    def create_pipeline(self, wgsl: str, entry_point: str, label: str = "") -> Any:
        """A compute pipeline with an automatic layout. Raises ShaderError naming `label`."""
        raise NotImplementedError

    def submit(self, commands: Sequence[Dispatch | Copy]) -> None:
        """Encode `commands` in order into one command buffer and submit it once."""
        raise NotImplementedError

    def submit_timed(self, commands: Sequence[Dispatch | Copy]) -> list[float]:
        """Submit like `submit`, each dispatch in its own pass between two timestamps, wait,
        and return each dispatch's GPU time in nanoseconds (for profiles: the extra passes
        and the wait change the total). Needs the "timestamp-query" feature."""
        raise DriverError(f"{type(self).__name__} does not time dispatches")

    def destroy_buffer(self, buffer: Any) -> None:
        """Free the buffer's memory now, and the bind groups that name it."""
        self._bind_groups.forget_buffer(buffer)
        buffer.destroy()
