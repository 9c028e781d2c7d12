"""The wasm backend's relaxed-SIMD builds (`kernels-relaxed*.wasm`, tools/build_wasm.py): only
they use relaxed SIMD, which build the native driver loads, and what their multiply-add may
change.

The page's side (WebAssembly.validate in Chromium) is in test_browser_wasm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_wasm
from host_util import host

wasmtime = pytest.importorskip("wasmtime")

from webgpt2.backends.wasm import WasmBackend  # noqa: E402
from webgpt2.backends.wasm.native import _validates as validates  # noqa: E402
from webgpt2.backends.wasm.tensor import (  # noqa: E402
    RELAXED_ENV,
    RELAXED_SIMD_PROBE,
    load_module,
    use_relaxed,
)

# 1 + 2^-12: its square, 1 + 2^-11 + 2^-24, is a tie in f32 that rounds to 1 + 2^-11.
A = 1.0 + 2.0 ** -12


def engine(relaxed: bool) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_relaxed_simd = relaxed
    config.wasm_threads = True
    return wasmtime.Engine(config)


def native(relaxed: bool | None = None) -> WasmBackend:
    from webgpt2.backends.wasm.native import NativeDriver

    return WasmBackend(driver=NativeDriver(relaxed=relaxed))


def test_only_the_relaxed_builds_and_the_probe_need_relaxed_simd():
    without, with_it = engine(False), engine(True)
    assert not validates(without, RELAXED_SIMD_PROBE) and validates(with_it, RELAXED_SIMD_PROBE)
    for threads in (False, True):
        assert validates(without, load_module(threads))
        relaxed = load_module(threads, relaxed=True)
        assert not validates(without, relaxed) and validates(with_it, relaxed)


def test_the_native_driver_loads_the_baseline_unless_told(monkeypatch):
    """wasmtime has relaxed SIMD, but runs the relaxed build's tiled products slower (native.py):
    natively the baseline build is the default; the argument or $WEBGPT2_WASM_RELAXED picks."""
    monkeypatch.delenv(RELAXED_ENV, raising=False)
    info = native().describe()
    assert info["relaxed_simd_engine"] is True  # wasmtime has relaxed SIMD
    assert info["module"] == "kernels.wasm" and info["relaxed_simd"] is False
    assert info["module_bytes"] == len(load_module())
    relaxed = native(relaxed=True).describe()
    assert relaxed["module"] == "kernels-relaxed.wasm" and relaxed["relaxed_simd"] is True
    monkeypatch.setenv(RELAXED_ENV, "1")
    assert native().describe()["module"] == "kernels-relaxed.wasm"
    assert native(relaxed=False).describe()["module"] == "kernels.wasm"  # the argument wins
    assert use_relaxed(False) is True  # forced, even where the module would not compile
    monkeypatch.setenv(RELAXED_ENV, "0")
    assert use_relaxed(True) is False  # the page's default (the browser has it) overridden
    monkeypatch.setenv(RELAXED_ENV, "yes")
    with pytest.raises(ValueError, match="expected 0, 1 or auto"):
        use_relaxed(True)


@pytest.mark.parametrize("rows", [1, 5])  # the streamed and the tiled products
def test_the_relaxed_multiply_add_may_fuse_and_the_baseline_does_not(rows):
    """A lane's sum A*A (rounded: 1 + 2^-11) + A*-A is -2^-24 when the second product is
    fused into the addition, 0 when it is rounded first. The relaxed build may do either
    (it fuses on x86-64 with FMA3 and on arm64); the baseline always rounds."""
    w = np.zeros((8, 2), np.float32)
    w[0, :], w[4, :] = A, -A
    x = np.zeros((rows, 8), np.float32)
    x[:, 0] = x[:, 4] = A
    results = {}
    for relaxed in (False, True):
        b = native(relaxed)
        results[relaxed] = np.asarray(b.to_list(b.linear(b.upload(host(x)),
                                                         b.upload(host(w), "linear"))))
    assert (results[False] == 0.0).all()
    assert (results[True] == 0.0).all() or (results[True] == -(2.0 ** -24)).all(), results


@pytest.mark.parametrize("relaxed", [False, True])
@pytest.mark.parametrize("rows, k", [(1, 8), (1, 3072), (2, 77), (5, 64)])
def test_float16_products_equal_float32_in_both_builds(relaxed, rows, k):
    """Bit-identity of the float16 kernels with float32 over the widened weights holds with
    and without a fused multiply-add: the scaled products are the same real numbers."""
    test_wasm.test_float16_products_equal_float32_on_the_widened_weights(native(relaxed), rows,
                                                                         k)
