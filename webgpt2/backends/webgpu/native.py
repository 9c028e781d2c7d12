"""The native driver: WebGPU through wgpu-py (Vulkan, Metal, D3D12, or lavapipe on a CPU).

It asks for a high-performance adapter, a device with the adapter's largest buffer and
workgroup limits and the optional features the kernels can use (shader-f16, subgroups), and
turns wgpu-py's exceptions into `DriverError` / `ShaderError`. It waits for the GPU by
mapping a buffer: wgpu 0.32's `queue.on_submitted_work_done_sync` is broken.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from typing import Any

from webgpt2.backends.webgpu.driver import (
    OPTIONAL_FEATURES,
    REPORTED_LIMITS,
    REQUESTED_LIMITS,
    AdapterInfo,
    BindGroupCache,
    Binding,
    Copy,
    Dispatch,
    Driver,
    DriverError,
    ShaderError,
    usage_flags,
)

# wgpu-native names a few features differently from the WebGPU spec.
_SPEC_FEATURE_NAMES = {"subgroup": "subgroups"}


def _ensure_runtime_dir() -> None:
    """Point XDG_RUNTIME_DIR at a private folder if unset or unusable (silences Mesa)."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current:
        try:
            mode = os.stat(current)
            if stat.S_ISDIR(mode.st_mode) and mode.st_uid == os.getuid() \
                    and stat.S_IMODE(mode.st_mode) == 0o700:
                return
        except OSError:
            pass
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="webgpt2-xdg-")  # mode 0700


class NativeDriver(Driver):
    """A wgpu-py device.

    Example:
        >>> from webgpt2.backends.webgpu.native import NativeDriver
        >>> driver = NativeDriver()  # doctest: +SKIP
        >>> driver.info.driver  # doctest: +SKIP
        'native'
    """

    def __init__(self, power_preference: str = "high-performance") -> None:
        _ensure_runtime_dir()
        try:
            import wgpu
        except ImportError as e:
            raise DriverError(
                "the wgpu package is not installed (pip install 'webgpt2[webgpu]')"
            ) from e
        self._wgpu = wgpu
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        except Exception as e:  # wgpu raises its own error types when nothing is there
            adapter = None
            reason = f" ({type(e).__name__}: {e})"
        else:
            reason = ""
        if adapter is None:
            raise DriverError(
                f"no WebGPU adapter was found by wgpu-py{reason}; install a Vulkan, Metal or "
                "D3D12 driver (on Linux without a GPU: mesa-vulkan-drivers for lavapipe). "
                "The backend registry lists the backends that are available."
            )
        adapter_limits = dict(adapter.limits)
        native_features = set(adapter.features)
        features = {_SPEC_FEATURE_NAMES.get(f, f) for f in native_features}
        native_names = {spec: native for native, spec in _SPEC_FEATURE_NAMES.items()
                        if native in native_features}
        required_features = [native_names.get(f, f) for f in OPTIONAL_FEATURES if f in features]
        required_limits = {}
        for name in REQUESTED_LIMITS:
            key = name.replace("_", "-")
            if key in adapter_limits:
                required_limits[key] = adapter_limits[key]
        try:
            self._device = adapter.request_device_sync(
                label="webgpt2", required_features=required_features,
                required_limits=required_limits,
            )
        except Exception as e:
            raise DriverError(f"the WebGPU adapter refused a device: {e}") from e
        device_limits = dict(self._device.limits)
        info = adapter.info
        self.info = AdapterInfo(
            name=info.get("device") or info.get("description") or "unknown adapter",
            backend_type=str(info.get("backend_type", "unknown")),
            driver="native",
            limits={n: int(device_limits[n.replace("_", "-")]) for n in REPORTED_LIMITS
                    if n.replace("_", "-") in device_limits},
            features=frozenset(_SPEC_FEATURE_NAMES.get(f, f) for f in self._device.features),
            adapter_type=str(info.get("adapter_type", "")),
            identity=" | ".join(str(info.get(k, "")) for k in
                                ("vendor", "architecture", "device", "description",
                                 "backend_type")),
        )
        self._queue = self._device.queue
        self._usages = usage_flags(wgpu.BufferUsage)
        self._bind_groups = BindGroupCache(self._create_bind_group,
                                           lambda pipeline: pipeline.get_bind_group_layout(0))

    # ---- buffers ----------------------------------------------------------------------
    def _create_buffer(self, size: int, usage: str, label: str) -> Any:
        try:
            return self._device.create_buffer(label=label, size=size, usage=self._usages[usage])
        except self._wgpu.GPUError as e:
            raise DriverError(f"could not create a {size}-byte {usage} buffer: {e}") from e

    def write_buffer(self, buffer: Any, offset: int, data: bytes | bytearray | memoryview) -> None:
        try:
            self._queue.write_buffer(buffer, offset, data)
        except self._wgpu.GPUError as e:
            raise DriverError(f"write_buffer failed: {e}") from e

    def read_buffer(self, buffer: Any, offset: int, size: int) -> bytes:
        try:
            if buffer.usage & self._wgpu.BufferUsage.MAP_READ:
                # The mapping waits for the submitted work that writes the buffer. "READ"
                # would add an empty submission per map (about 2 ms on lavapipe); the copy
                # that fills this buffer was submitted already, which is what it syncs for.
                try:
                    buffer.map_sync("READ_NOSYNC", offset, size)
                except (ValueError, KeyError, TypeError):
                    buffer.map_sync(self._wgpu.MapMode.READ, offset, size)
                try:
                    return bytes(buffer.read_mapped(offset, size))
                finally:
                    buffer.unmap()
            return bytes(self._queue.read_buffer(buffer, offset, size))
        except self._wgpu.GPUError as e:
            raise DriverError(f"reading {size} bytes back from the device failed: {e}") from e
        except RuntimeError as e:  # a failed map (device lost) is a RuntimeError in wgpu-py
            raise DriverError(f"reading {size} bytes back from the device failed: {e}") from e

    # ---- pipelines --------------------------------------------------------------------
    def create_pipeline(self, wgsl: str, entry_point: str, label: str = "") -> Any:
        where = f"{label or 'shader'} (entry point {entry_point!r})"
        try:
            module = self._device.create_shader_module(label=label, code=wgsl)
        except self._wgpu.GPUError as e:
            raise ShaderError(f"WGSL compile error in {where}:\n{e}") from e
        try:
            return self._device.create_compute_pipeline(
                label=f"{label}:{entry_point}", layout="auto",
                compute={"module": module, "entry_point": entry_point},
            )
        except self._wgpu.GPUError as e:
            raise ShaderError(f"compute pipeline for {where} failed to build:\n{e}") from e

    # ---- work -------------------------------------------------------------------------
    def _create_bind_group(self, layout: Any, bindings: Sequence[Binding]) -> Any:
        return self._device.create_bind_group(layout=layout, entries=[
            {"binding": b.binding,
             "resource": {"buffer": b.buffer, "offset": b.offset,
                          "size": b.buffer.size - b.offset if b.size is None else b.size}}
            for b in bindings
        ])

    def submit(self, commands: Sequence[Dispatch | Copy]) -> None:
        try:
            encoder = self._device.create_command_encoder()
            compute_pass = None
            for command in commands:
                if isinstance(command, Dispatch):
                    if compute_pass is None:
                        compute_pass = encoder.begin_compute_pass()
                    compute_pass.set_pipeline(command.pipeline)
                    compute_pass.set_bind_group(0, self._bind_groups.get(command.pipeline,
                                                                    command.bindings))
                    compute_pass.dispatch_workgroups(*command.workgroups)
                else:
                    if compute_pass is not None:
                        compute_pass.end()
                        compute_pass = None
                    encoder.copy_buffer_to_buffer(command.source, command.source_offset,
                                                  command.destination,
                                                  command.destination_offset, command.size)
            if compute_pass is not None:
                compute_pass.end()
            self._queue.submit([encoder.finish()])
        except self._wgpu.GPUError as e:
            raise DriverError(f"submitting {len(commands)} commands failed: {e}") from e

    def submit_timed(self, commands: Sequence[Dispatch | Copy]) -> list[float]:
        if "timestamp-query" not in self.info.features:
            raise DriverError("this device has no timestamp-query feature to time dispatches")
        wgpu = self._wgpu
        dispatches = sum(isinstance(c, Dispatch) for c in commands)
        count = max(2 * dispatches, 2)
        # The query set and its buffer are made per call: profiles are rare and short.
        queries = self._device.create_query_set(type="timestamp", count=count)
        resolved = self._device.create_buffer(
            size=count * 8, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        try:
            encoder = self._device.create_command_encoder()
            slot = 0
            for command in commands:
                if isinstance(command, Dispatch):
                    compute_pass = encoder.begin_compute_pass(timestamp_writes={
                        "query_set": queries, "beginning_of_pass_write_index": slot,
                        "end_of_pass_write_index": slot + 1})
                    compute_pass.set_pipeline(command.pipeline)
                    compute_pass.set_bind_group(0, self._bind_groups.get(command.pipeline,
                                                                    command.bindings))
                    compute_pass.dispatch_workgroups(*command.workgroups)
                    compute_pass.end()
                    slot += 2
                else:
                    encoder.copy_buffer_to_buffer(command.source, command.source_offset,
                                                  command.destination,
                                                  command.destination_offset, command.size)
            if slot:
                encoder.resolve_query_set(queries, 0, slot, resolved, 0)
            self._queue.submit([encoder.finish()])
            stamps = memoryview(self._queue.read_buffer(resolved, 0, count * 8)).cast("Q")
        except wgpu.GPUError as e:
            raise DriverError(f"submitting {len(commands)} timed commands failed: {e}") from e
        finally:
            resolved.destroy()
            queries.destroy()
        # Timestamps are nanoseconds (WebGPU's unit); a pass may end "before" it began on
        # drivers that reorder, which counts as zero.
        return [max(0, stamps[i + 1] - stamps[i]) for i in range(0, slot, 2)]
