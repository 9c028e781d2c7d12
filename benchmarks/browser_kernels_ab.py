"""Two builds of the wasm kernels side by side in headless Chromium: GPT-2 124M's decode
products (linear, M = 1, the 48 matrices of 12 layers, random weights) in float32 and in
float16, and its greedy head (greedy_head through the screen of a random 50257 x 768 float32
table), each module on its own memory, alternated step by step.

    python benchmarks/browser_kernels_ab.py A.wasm B.wasm [--reps 30]

For kernel work: build a variant (tools/build_wasm.py's build(path, relaxed=True)) and put
it beside the committed module. Prints each module's median ms per step (the 48 products)
for both storages, per head, and B / A. The second module's memory has run 3-9% faster than the
first's with the same module on this machine (allocation order), so run both orders
(A B, then B A) and compare B / A against that bias, or run A against itself first.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_util import chromium  # noqa: E402
from common import browser_missing  # noqa: E402

SCRIPT = """async ([moduleA, moduleB, reps]) => {
  const shapes = [[768, 2304], [768, 768], [768, 3072], [3072, 768]];  // c_attn .. mlp c_proj
  const decode = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  async function setup(bytes) {
    const memory = new WebAssembly.Memory({ initial: 13000, maximum: 65536 });
    const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
    const e = instance.exports;
    let next = 64 << 20;  // above the module's own data and stack
    const alloc = (n) => { const at = next; next += Math.ceil(n / 64) * 64; return at; };
    const u16 = new Uint16Array(memory.buffer), f32 = new Float32Array(memory.buffer);
    let seed = 1;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const layers = [];
    for (let l = 0; l < 12; l++) for (const [K, N] of shapes) {
      const w16 = alloc(K * N * 2), w32 = alloc(K * N * 4), bias = alloc(N * 4);
      for (let i = 0; i < K * N; i++) {
        // a packed half (common.h): normal, |w 2^10| in [2^-7, 2^13)
        u16[w16 / 2 + i] = ((random() < 0.5) << 15) | ((8 + (random() * 12 | 0)) << 10)
          | (random() * 1024 | 0);
        f32[w32 / 4 + i] = (random() - 0.5) * 0.1;
      }
      f32.fill(0.01, bias / 4, bias / 4 + N);
      layers.push({ K, N, w16, w32, bias });
    }
    const x = alloc(3072 * 4), out = alloc(3072 * 4);
    for (let i = 0; i < 3072; i++) f32[x / 4 + i] = Math.sin(i);
    const V = 50257, H = 768;
    const table = alloc(V * H * 4), screen = alloc(Number(e.screen_bytes(V, H)));
    const scratch = alloc(Number(e.greedy_scratch_bytes(V, H)));
    for (let i = 0; i < V * H; i++) f32[table / 4 + i] = (random() - 0.5) * 0.2;
    if (!e.screen_table(table, V, H, 0, screen, scratch)) throw new Error("no screen");
    return (what) => {
      if (what === "head") return e.greedy_head(x, table, screen, out, 1, H, V, 0, scratch);
      const half = what === "16";
      for (const L of layers)
        e.linear(x, half ? L.w16 : L.w32, L.bias, 0, out, 1, L.K, L.N, 1 | (half ? 8 : 0));
    };
  }
  const A = await setup(decode(moduleA)), B = await setup(decode(moduleB));
  const kinds = ["16", "32", "head"];
  for (let i = 0; i < 5; i++) for (const step of [A, B]) for (const k of kinds) step(k);
  const times = {};
  for (let r = 0; r < reps; r++) {
    const order = r % 2 ? [["A", A], ["B", B]] : [["B", B], ["A", A]];
    for (const [name, step] of order) for (const k of kinds) {
      const start = performance.now();
      step(k);
      (times[name + k] ??= []).push(performance.now() - start);
    }
  }
  const median = (a) => a.sort((p, q) => p - q)[a.length >> 1];
  return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="module A (.wasm)")
    parser.add_argument("b", type=Path, help="module B (.wasm)")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    if browser_missing("browser benchmark"):
        return 1
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in (args.a, args.b)]
    with chromium() as context:
        page = context.new_page()
        page.goto("about:blank")
        m = page.evaluate(SCRIPT, [*encoded, args.reps])
    for name, path in (("A", args.a), ("B", args.b)):
        print(f"{name} {path.name}: float16 {m[name + '16']:6.2f} ms, float32 "
              f"{m[name + '32']:6.2f} ms per 48 products (float16 / float32 "
              f"{m[name + '16'] / m[name + '32']:.3f}); head {m[name + 'head']:5.2f} ms")
    print(f"B / A: float16 {m['B16'] / m['A16']:.3f}, float32 {m['B32'] / m['A32']:.3f}, "
          f"head {m['Bhead'] / m['Ahead']:.3f} (medians of {args.reps}, alternated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
