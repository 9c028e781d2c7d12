"""Kernel shapes for the adapter at hand: a small "device profile" chosen from what WebGPU
says about the adapter (its type or name, its features and limits).

Two configurations, because they pull in opposite directions:
- "small": a CPU adapter (lavapipe, SwiftShader, WARP) or anything that runs a few
  workgroups at a time. Every workgroup costs a thread's start-up and every barrier is
  expensive, so matrix-vector products are one pass with no split over K.
- "large": a GPU with tens or hundreds of compute units. A 768-wide layer gives only 24-72
  workgroups of 32 output columns; splitting K into parts (a second pass adds the parts and
  applies the epilogue) starts about `target_workgroups` of them so that every unit streams
  weights.
The adapter's type decides: a CPU (or a known CPU rasteriser's name) takes "small", a GPU
"large". An adapter that says neither (browsers do not report the type) is measured once
(tuning.py: both configurations on a decode- and a prefill-shaped product, the faster kept,
cached per adapter and driver). `WebGPUBackend(device_profile="small" | "large" |
"measure")` forces one or the measurement (tests run all three here), and so does the
environment variable WEBGPT2_WEBGPU_PROFILE for backends made without one (the registry's),
so that a whole test suite can run with either configuration pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from webgpt2.backends.webgpu.driver import AdapterInfo

# Words in adapter names that mean the "GPU" is a CPU rasteriser.
_CPU_ADAPTER_NAMES = ("llvmpipe", "lavapipe", "swiftshader", "microsoft basic render", "warp")


@dataclass(frozen=True)
class DeviceProfile:
    """name: "small" or "large". target_workgroups: how many workgroups a matrix-vector
    product should start (its K is split until it does; 0: never split). max_splits: the
    most parts K is split into. min_split_words: the fewest vec4 words of K per part, so
    that a part is still a stream, not a few loads. block_attention: a prompt's attention
    runs in query blocks against key tiles in workgroup memory (attention_blocks.wgsl), which
    pays where loads from memory cost more than barriers; a CPU adapter, whose barriers are
    thread synchronisations, keeps attention.wgsl / attend_prompt."""

    name: str
    target_workgroups: int
    max_splits: int = 8
    min_split_words: int = 32
    block_attention: bool = False

    def matvec_splits(self, workgroups: int, k_words: int) -> int:
        """Parts to split K into for a product that starts `workgroups` workgroups unsplit
        and has `k_words` vec4 words of K per row."""
        if self.target_workgroups <= 0 or workgroups >= self.target_workgroups:
            return 1
        splits = 1
        while (splits * 2 <= self.max_splits and workgroups * splits < self.target_workgroups
               and k_words // (splits * 2) >= self.min_split_words):
            splits *= 2
        return splits


SMALL = DeviceProfile("small", target_workgroups=0)
LARGE = DeviceProfile("large", target_workgroups=256, block_attention=True)
PROFILES = {"small": SMALL, "large": LARGE}


def is_cpu_adapter(info: AdapterInfo) -> bool:
    name = info.name.lower()
    return info.adapter_type.upper() == "CPU" or any(n in name for n in _CPU_ADAPTER_NAMES)


_GPU_TYPES = ("DISCRETEGPU", "INTEGRATEDGPU", "VIRTUALGPU")


def choose_profile(info: AdapterInfo, forced: str | None = None) -> DeviceProfile | None:
    """The profile for this adapter, or the one named by `forced` (or by the environment);
    None where it is to be measured (forced "measure", or an adapter of unknown type)."""
    if forced is None:
        forced = os.environ.get("WEBGPT2_WEBGPU_PROFILE") or None
    if forced is not None:
        if forced not in PROFILES and forced != "measure":
            raise ValueError(f"device_profile {forced!r}; expected one of "
                             f"{sorted(PROFILES) + ['measure']}")
        return PROFILES.get(forced)
    if is_cpu_adapter(info):
        return SMALL
    return LARGE if info.adapter_type.upper() in _GPU_TYPES else None
