"""The browser driver: the page's `navigator.gpu` through Pyodide's JavaScript FFI.

WebGPU in a browser is asynchronous (adapters, devices, pipelines and buffer maps are
promises). `pyodide.ffi.run_sync` (JavaScript Promise Integration) suspends Python until a
promise settles, so every method here is a plain call and the `webgpu` backend's code is the
same as on wgpu-py. That needs Python to have been entered through `runPythonAsync` or
`callPromising` (not `runPython`); the driver says so when it was not.

Uploads cross from Python to JavaScript without a copy: the Python buffer is exposed to
`queue.writeBuffer` as a view of the WebAssembly heap, and WebGPU copies it during the call.
WGSL that naga (wgpu-py) accepts but browsers reject is mended on the way in (a missing
`enable subgroups;`, an infinity written as a constant bitcast), so one source serves both
drivers. GPU errors that surface asynchronously
(validation errors of a submission, a lost device) are collected as they arrive and raised as
`DriverError` from the next call.

Example (inside a Pyodide worker, entered through `callPromising`):
    >>> from webgpt2.backends.webgpu.browser import BrowserDriver
    >>> from webgpt2.backends.webgpu.backend import WebGPUBackend
    >>> backend = WebGPUBackend(driver=BrowserDriver())  # doctest: +SKIP
"""

from __future__ import annotations

import re
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
    camel_case,
    usage_flags,
)

# submit()'s flat command array: six entries per command, the first saying which.
_DISPATCH, _COPY = 0, 1
_ENCODE_AND_SUBMIT = """(device, ops) => {
    const encoder = device.createCommandEncoder();
    let pass = null;
    for (let i = 0; i < ops.length; i += 6) {
        if (ops[i] === 0) {
            if (pass === null) pass = encoder.beginComputePass();
            pass.setPipeline(ops[i + 1]);
            pass.setBindGroup(0, ops[i + 2]);
            pass.dispatchWorkgroups(ops[i + 3], ops[i + 4], ops[i + 5]);
        } else {
            if (pass !== null) { pass.end(); pass = null; }
            encoder.copyBufferToBuffer(ops[i + 1], ops[i + 2], ops[i + 3], ops[i + 4], ops[i + 5]);
        }
    }
    if (pass !== null) pass.end();
    device.queue.submit([encoder.finish()]);
}"""


# Two places where naga (wgpu-py) accepts WGSL that the spec, and so Tint in browsers,
# rejects; `_for_browsers` mends both so one source serves both drivers:
# - WGSL that uses an optional feature must say `enable <feature>;`, which naga refuses: the
#   directive is added when the device has the feature and the source uses it;
# - a const-expression may not produce an infinity or a NaN, so `bitcast<f32>(0xff800000u)`
#   (-inf) fails to compile: such bitcasts are made run-time expressions by or-ing in a
#   module-scope private zero.
_FEATURE_USES = {
    "subgroups": re.compile(r"\bsubgroup[A-Z]\w*\s*\(|\bsubgroup_(?:size|invocation_id)\b"),
    "f16": re.compile(r"\bf16\b|\bvec[234]h\b"),
}
_DEVICE_FEATURE = {"subgroups": "subgroups", "f16": "shader-f16"}


_F32_BITCAST = re.compile(r"bitcast<f32>\(\s*(0[xX][0-9a-fA-F]+)[uU]?\s*\)")
_RUNTIME_ZERO = "webgpt2_runtime_zero"


def _for_browsers(wgsl: str, features: frozenset[str]) -> str:
    """wgsl as browsers accept it (see above). Additions go on the first line and at the
    end, so compile errors keep their line numbers."""
    enables = [name for name, use in _FEATURE_USES.items()
               if _DEVICE_FEATURE[name] in features and use.search(wgsl)
               and not re.search(rf"^\s*enable\s+[^;]*\b{name}\b", wgsl, re.MULTILINE)]

    def runtime(match: re.Match) -> str:
        bits = int(match.group(1), 16)
        if (bits >> 23) & 0xFF != 0xFF:  # finite: a const-expression is fine
            return match.group(0)
        return f"bitcast<f32>({match.group(1)}u | {_RUNTIME_ZERO})"

    body = _F32_BITCAST.sub(runtime, wgsl)
    if body != wgsl:
        body += f"\nvar<private> {_RUNTIME_ZERO}: u32 = 0u;\n"
    return "".join(f"enable {name}; " for name in enables) + body


class BrowserDriver(Driver):
    """A WebGPU device of the page (or of its worker) through Pyodide.

    Example:
        >>> driver = BrowserDriver()  # doctest: +SKIP
        >>> driver.info.driver  # doctest: +SKIP
        'browser'
    """

    def __init__(self, power_preference: str = "high-performance") -> None:
        try:
            import js
            from pyodide.ffi import (
                JsException,
                can_run_sync,
                create_once_callable,
                create_proxy,
                run_sync,
                to_js,
            )
        except ImportError as e:
            raise DriverError("the browser driver runs only inside Pyodide (no `js` module "
                              "here); natively, use the wgpu-py driver") from e
        self._js = js
        self._JsException = JsException
        self._run_sync = run_sync
        self._create_proxy = create_proxy
        self._to_js = to_js
        if not can_run_sync():
            raise DriverError(
                "WebGPU calls need JavaScript Promise Integration here: enter Python through "
                "pyodide.runPythonAsync or a function's callPromising, not runPython (and use "
                "a browser with JSPI, such as Chromium 137 or later)"
            )
        gpu = getattr(js.navigator, "gpu", None)
        if not gpu:
            raise DriverError(
                "this browser has no WebGPU (navigator.gpu is undefined); use a recent "
                "Chromium, Edge or Firefox, served over https or from localhost"
            )
        adapter = self._await(gpu.requestAdapter(self._object(
            {"powerPreference": power_preference})), "requesting a WebGPU adapter")
        if not adapter:
            raise DriverError("navigator.gpu.requestAdapter() found no adapter (WebGPU may be "
                              "disabled or blocklisted for this GPU; see chrome://gpu)")
        names = [camel_case(n) for n in REQUESTED_LIMITS]
        required_limits = {name: getattr(adapter.limits, name) for name in names
                           if getattr(adapter.limits, name, None) is not None}
        required_features = [f for f in OPTIONAL_FEATURES if adapter.features.has(f)]
        self._device = self._await(adapter.requestDevice(self._object({
            "label": "webgpt2",
            "requiredLimits": required_limits,
            "requiredFeatures": required_features,
        })), "requesting a WebGPU device")
        self._queue = self._device.queue
        from pyodide.code import run_js

        self._encode_and_submit = run_js(_ENCODE_AND_SUBMIT)
        self._lost: str | None = None
        self._errors: list[str] = []
        self._device.lost.then(create_once_callable(self._on_lost))
        self._error_listener = create_proxy(self._on_uncaptured_error)
        self._device.addEventListener("uncapturederror", self._error_listener)

        adapter_info = getattr(adapter, "info", None)
        name = ""
        if adapter_info:
            parts = [str(getattr(adapter_info, key, "") or "") for key in
                     ("vendor", "architecture", "device", "description")]
            name = " ".join(p for p in dict.fromkeys(parts) if p)
        limits = {n: int(getattr(self._device.limits, camel_case(n))) for n in REPORTED_LIMITS
                  if getattr(self._device.limits, camel_case(n), None) is not None}
        self.info = AdapterInfo(
            name=name or "browser WebGPU adapter",
            backend_type="browser WebGPU",
            driver="browser",
            limits=limits,
            features=frozenset(f for f in OPTIONAL_FEATURES if self._device.features.has(f)),
            identity=" | ".join(parts) + " | browser" if adapter_info else "",
        )
        self._map_read = int(js.GPUBufferUsage.MAP_READ)
        self._usages = usage_flags(js.GPUBufferUsage)
        self._modules: dict[str, Any] = {}
        # With cached bind groups a dispatch costs three FFI calls.
        self._bind_groups = BindGroupCache(self._create_bind_group,
                                           lambda pipeline: pipeline.getBindGroupLayout(0))

    # ---- plumbing ---------------------------------------------------------------------
    def _object(self, value: dict) -> Any:
        """A plain JavaScript object (WebGPU descriptors are dictionaries, not Maps)."""
        return self._to_js(value, dict_converter=self._js.Object.fromEntries)

    def _await(self, promise: Any, doing: str) -> Any:
        try:
            return self._run_sync(promise)
        except self._JsException as e:
            raise DriverError(f"{doing} failed: {e}") from None

    def _on_lost(self, info: Any) -> None:
        reason = str(getattr(info, "reason", "") or "unknown")
        self._lost = f"the WebGPU device was lost ({reason}): {getattr(info, 'message', '')}"

    def _on_uncaptured_error(self, event: Any) -> None:
        self._errors.append(str(getattr(event.error, "message", event.error)))

    def _check(self) -> None:
        """Raise what the device reported since the last call (a loss, a failed command)."""
        if self._lost is not None:
            raise DriverError(f"{self._lost}; load the model again to get a new device")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DriverError("the GPU rejected earlier work: " + "; ".join(errors))

    @property
    def lost(self) -> bool:
        """Whether the device is gone (the backend needs a new driver)."""
        return self._lost is not None

    # ---- buffers ----------------------------------------------------------------------
    def _create_buffer(self, size: int, usage: str, label: str) -> Any:
        self._check()
        try:
            return self._device.createBuffer(self._object(
                {"size": size, "usage": self._usages[usage], "label": label}))
        except self._JsException as e:
            raise DriverError(f"could not create a {size}-byte {usage} buffer: {e}") from None

    def write_buffer(self, buffer: Any, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check()
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.nbytes % 4 or offset % 4:
            raise ValueError(f"write_buffer of {view.nbytes} bytes at offset {offset}: both "
                             "must be multiples of 4")
        if view.nbytes == 0:
            return
        # A view of the WebAssembly heap, valid while the PyBuffer is held; writeBuffer
        # copies it before returning, so nothing is copied on the Python side.
        proxy = self._create_proxy(view)
        heap = proxy.getBuffer("u8")
        try:
            self._queue.writeBuffer(buffer, offset, heap.data)
        except self._JsException as e:
            raise DriverError(f"write_buffer of {view.nbytes} bytes at offset {offset} "
                              f"failed: {e}") from None
        finally:
            heap.release()
            proxy.destroy()

    def read_buffer(self, buffer: Any, offset: int, size: int) -> bytes:
        self._check()
        if size == 0:
            return b""
        if int(buffer.usage) & self._map_read:
            # A readback buffer is mapped directly; mapAsync wants an offset that is a
            # multiple of 8 and a size that is a multiple of 4.
            start = offset - offset % 8
            staging, owned = buffer, False
        else:
            start = offset - offset % 4
            staging, owned = None, True
        end = -(-(offset + size) // 4) * 4
        try:
            if owned:
                staging = self._device.createBuffer(self._object(
                    {"size": end - start, "usage": self._usages["readback"],
                     "label": "webgpt2 readback"}))
                encoder = self._device.createCommandEncoder()
                encoder.copyBufferToBuffer(buffer, start, staging, 0, end - start)
                self._queue.submit(self._to_js([encoder.finish()]))
                map_offset = 0
            else:
                map_offset = start
            self._await(staging.mapAsync(self._js.GPUMapMode.READ, map_offset, end - start),
                        f"reading {size} bytes back from the device")
            self._check()
            mapped = self._js.Uint8Array.new(staging.getMappedRange(map_offset, end - start))
            data = mapped.to_bytes()
        except self._JsException as e:
            raise DriverError(f"reading {size} bytes back from the device failed: {e}") from None
        finally:
            if staging is not None:
                if owned:
                    staging.destroy()
                elif str(staging.mapState) != "unmapped":
                    staging.unmap()
        skip = offset - start
        return data[skip:skip + size]

    # ---- pipelines --------------------------------------------------------------------
    def create_pipeline(self, wgsl: str, entry_point: str, label: str = "") -> Any:
        self._check()
        where = f"{label or 'shader'} (entry point {entry_point!r})"
        module = self._modules.get(wgsl)
        if module is None:
            self._device.pushErrorScope("validation")
            code = _for_browsers(wgsl, self.info.features)
            module = self._device.createShaderModule(self._object({"code": code,
                                                                   "label": label}))
            info = self._await(module.getCompilationInfo(), f"compiling {where}")
            scope_error = self._await(self._device.popErrorScope(), f"compiling {where}")
            errors = [f"line {m.lineNum}:{m.linePos}: {m.message}" for m in info.messages
                      if str(m.type) == "error"]
            if errors or scope_error:
                detail = "\n".join(errors) or str(scope_error.message)
                raise ShaderError(f"WGSL compile error in {where}:\n{detail}")
            self._modules[wgsl] = module
        self._device.pushErrorScope("validation")
        try:
            pipeline = self._run_sync(self._device.createComputePipelineAsync(self._object({
                "label": f"{label}:{entry_point}",
                "layout": "auto",
                "compute": {"module": module, "entryPoint": entry_point},
            })))
        except self._JsException as e:
            self._run_sync(self._device.popErrorScope())
            raise ShaderError(f"compute pipeline for {where} failed to build:\n{e}") from None
        scope_error = self._await(self._device.popErrorScope(), f"building {where}")
        if scope_error:
            raise ShaderError(f"compute pipeline for {where} failed to build:\n"
                              f"{scope_error.message}")
        return pipeline

    # ---- work -------------------------------------------------------------------------
    def _create_bind_group(self, layout: Any, bindings: Sequence[Binding]) -> Any:
        entries = []
        for b in bindings:
            resource = {"buffer": b.buffer, "offset": b.offset}
            if b.size is not None:
                resource["size"] = b.size
            entries.append({"binding": b.binding, "resource": resource})
        return self._device.createBindGroup(self._object({"layout": layout, "entries": entries}))

    def submit(self, commands: Sequence[Dispatch | Copy]) -> None:
        self._check()
        # The commands go to JavaScript as one flat array and are encoded there: a crossing
        # of the FFI costs tens of microseconds, and a decode step has dozens of dispatches.
        ops: list = []
        for command in commands:
            if isinstance(command, Dispatch):
                ops += (_DISPATCH, command.pipeline,
                        self._bind_groups.get(command.pipeline, command.bindings),
                        *command.workgroups)
            elif isinstance(command, Copy):
                ops += (_COPY, command.source, command.source_offset, command.destination,
                        command.destination_offset, command.size)
            else:
                raise TypeError(f"submit takes Dispatch and Copy commands; got "
                                f"{type(command).__name__}")
        try:
            self._encode_and_submit(self._device, self._to_js(ops))
        except self._JsException as e:
            raise DriverError(f"submitting {len(commands)} commands failed: {e}") from None
