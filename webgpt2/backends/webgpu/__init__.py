"""The `webgpu` backend: WGSL kernels on WebGPU (wgpu-py natively, navigator.gpu in a page)."""

from webgpt2.backends.webgpu.backend import WebGPUBackend
from webgpt2.backends.webgpu.driver import DriverError, ShaderError
from webgpt2.backends.webgpu.recorder import load_shader
from webgpt2.backends.webgpu.tensor import WebGPUTensor

__all__ = ["DriverError", "ShaderError", "WebGPUBackend", "WebGPUTensor", "load_shader"]
