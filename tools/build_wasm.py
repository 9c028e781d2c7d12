"""Build the wasm backend's kernels: every `wasm/*.c` into one WebAssembly module, four times.

    python tools/build_wasm.py            # writes webgpt2/backends/wasm/kernels*.wasm
    python tools/build_wasm.py --check    # exit 1 if a committed module differs from a build

`kernels.wasm` runs on one thread (natively in wasmtime, and in any page);
`kernels-threads.wasm` is the same sources built with atomics for a shared memory, which a
cross-origin isolated page instantiates once per thread (matmul.c's pool); it exports its
`__stack_pointer` so that each thread's instance gets a stack of its own.
`kernels-relaxed.wasm` and `kernels-relaxed-threads.wasm` are those two built with
`-mrelaxed-simd`: the matrix products' multiply-adds become f32x4.relaxed_madd (common.h's
MADD), which engines with relaxed SIMD run as one FMA where the CPU has it; the drivers load
them where the engine validates relaxed SIMD, else the two above.

Needs clang-19 and wasm-ld-19 (Debian: `apt-get install -y clang-19 lld-19`). The module is
freestanding (no libc): it imports its memory (`env.memory`, up to 4 GiB) and exports the
kernels by name. The output is byte-for-byte deterministic for one compiler version: the
sources go in sorted order, no debug information is emitted, and the name and producers
sections are stripped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "wasm"
OUTPUT = ROOT / "webgpt2" / "backends" / "wasm" / "kernels.wasm"
THREADS_OUTPUT = OUTPUT.with_name("kernels-threads.wasm")
RELAXED_OUTPUT = OUTPUT.with_name("kernels-relaxed.wasm")
RELAXED_THREADS_OUTPUT = OUTPUT.with_name("kernels-relaxed-threads.wasm")
CLANG = "clang-19"
FLAGS = [
    "--target=wasm32",
    "-msimd128",
    # memcpy / memset become single memory.copy / memory.fill instructions.
    "-mbulk-memory",
    "-O3",
    "-Wall",
    "-Werror",
    "-nostdlib",
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    "-Wl,--max-memory=4294967296",
    "-Wl,--strip-all",
]
THREAD_FLAGS = [
    "-matomics",
    "-Wl,--shared-memory",
    "-Wl,--export=__stack_pointer",
]
RELAXED_FLAGS = ["-mrelaxed-simd"]
# (output, threads, relaxed) for every module the backend ships.
MODULES = (
    (OUTPUT, False, False),
    (THREADS_OUTPUT, True, False),
    (RELAXED_OUTPUT, False, True),
    (RELAXED_THREADS_OUTPUT, True, True),
)


def build(output: Path, clang: str = CLANG, threads: bool = False,
          relaxed: bool = False) -> bytes:
    """Compile and link the kernels into `output` (the shared-memory build with threads,
    relaxed SIMD's multiply-add with relaxed); returns the module's bytes."""
    sources = sorted(p.relative_to(ROOT).as_posix() for p in SOURCES.glob("*.c"))
    if not sources:
        raise FileNotFoundError(f"no kernel sources in {SOURCES}")
    command = [clang, *FLAGS, *(THREAD_FLAGS if threads else []),
               *(RELAXED_FLAGS if relaxed else []), *sources, "-o", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return output.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh build with the committed module instead of writing")
    parser.add_argument("--clang", default=CLANG, help=f"the compiler (default {CLANG})")
    args = parser.parse_args()
    status = 0
    for output, threads, relaxed in MODULES:
        if not args.check:
            data = build(output, args.clang, threads, relaxed)
            print(f"wrote {output.relative_to(ROOT)} ({len(data)} bytes)")
            continue
        with tempfile.TemporaryDirectory() as folder:
            fresh = build(Path(folder) / output.name, args.clang, threads, relaxed)
        if not output.exists() or fresh != output.read_bytes():
            print(f"{output.relative_to(ROOT)} is out of date: run python tools/build_wasm.py",
                  file=sys.stderr)
            status = 1
        else:
            print(f"{output.relative_to(ROOT)} is up to date ({len(fresh)} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
