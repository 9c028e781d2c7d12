"""Held-out perplexity of the shipped Shakespeare model: webgpt2's `score()` beside
transformers', on the same text and the same windows.

    python tools/prepare_corpus.py           # once: writes tools/.work/corpus/heldout.txt
    python tools/evaluate_shakespeare.py [--backend cpu]

Windows: non-overlapping 256-token windows over the held-out split (the four unseen plays),
each window's first token context only, as the model card's evaluation. Prints both
perplexities and their relative difference, and the untrained model's for scale.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "webgpt2" / "assets" / "gpt2_shakespeare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", default=str(ROOT / "tools" / ".work" / "corpus" /
                                                 "heldout.txt"))
    parser.add_argument("--backend", default="cpu")
    args = parser.parse_args()
    heldout = Path(args.heldout)
    if not heldout.exists():
        sys.exit(f"{heldout} is missing: run `python tools/prepare_corpus.py` first")

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from webgpt2 import GPT2CausalLM

    lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en", backend=args.backend, progress=False)
    text = heldout.read_text(encoding="utf-8")
    ids = lm.preprocessor.tokenizer.tokenize(text)
    window = lm.max_sequence_length

    t0 = time.perf_counter()
    ours = lm.perplexity(ids, stride=window)
    t1 = time.perf_counter()

    def transformers_perplexity(model) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(ids) - 1, window):
                chunk = ids[start:start + window]
                if len(chunk) < 2:
                    break
                x = torch.tensor([chunk])
                total += model(input_ids=x, labels=x).loss.item() * (len(chunk) - 1)
                count += len(chunk) - 1
        return math.exp(total / count)

    trained = GPT2LMHeadModel.from_pretrained(FOLDER, dtype=torch.float32).eval()
    t2 = time.perf_counter()
    theirs = transformers_perplexity(trained)
    t3 = time.perf_counter()
    torch.manual_seed(1337)
    untrained = GPT2LMHeadModel(GPT2Config.from_pretrained(FOLDER)).eval()
    baseline = transformers_perplexity(untrained)

    print(f"held-out text: {len(text):,} characters, {len(ids):,} tokens, "
          f"{window}-token windows")
    print(f"  webgpt2 {lm.backend.name} score(): perplexity {ours:.4f}  ({t1 - t0:.1f} s)")
    print(f"  transformers:          perplexity {theirs:.4f}  ({t3 - t2:.1f} s)")
    print(f"  relative difference {abs(ours - theirs) / theirs:.2e} (target <= 1e-3)")
    print(f"  untrained model (transformers, seed 1337): perplexity {baseline:,.1f}")


if __name__ == "__main__":
    main()
