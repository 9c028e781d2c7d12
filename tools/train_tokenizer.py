"""Train the byte-level BPE vocabulary of the embedded Shakespeare model (issue 6).

GPT-2's format and GPT-2's rules: byte-level pre-tokenizer with GPT-2's regex,
add_prefix_space=False, ByteLevel decoder, ``<|endoftext|>`` as the one special token with
the LAST id (4095 here, like GPT-2's 50256). Trained on the training split only.

Writes into OUT (default: webgpt2/assets/gpt2_shakespeare/):

    vocab.json  merges.txt  tokenizer.json  tokenizer_config.json

and checks that ``transformers.GPT2TokenizerFast.from_pretrained(OUT)`` and
``tokenizers.Tokenizer.from_file(OUT/tokenizer.json)`` give the same ids and round-trip the
held-out text exactly.

Usage (from the repository root, after tools/prepare_corpus.py):

    python tools/train_tokenizer.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EOT = "<|endoftext|>"


def train(train_text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the special token is added after training, with the last id
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    docs = [d for d in train_text.split(EOT) if d]
    tok.train_from_iterator(docs, trainer=trainer)
    assert tok.get_vocab_size() == vocab_size - 1, tok.get_vocab_size()
    tok.add_special_tokens([EOT])
    assert tok.token_to_id(EOT) == vocab_size - 1
    return tok


def write_gpt2_files(tok, out: Path, model_max_length: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]))
    assert list(vocab.values()) == list(range(len(vocab)))
    (out / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    merges = spec["model"]["merges"]
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "model_max_length": model_max_length,
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )


def verify(out: Path, heldout_text: str) -> dict:
    from tokenizers import Tokenizer
    from transformers import GPT2TokenizerFast

    fast = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = GPT2TokenizerFast.from_pretrained(str(out))
    # Also from vocab.json + merges.txt alone (positional: keyword args build an empty
    # tokenizer in transformers 5.24).
    hf_vm = GPT2TokenizerFast(str(out / "vocab.json"), str(out / "merges.txt"))
    eot_id = len(json.loads((out / "vocab.json").read_text(encoding="utf-8"))) - 1
    assert hf.eos_token_id == eot_id == fast.token_to_id(EOT), (hf.eos_token_id, eot_id)

    docs = [d for d in heldout_text.split(EOT) if d]
    n_tokens = 0
    for doc in docs:
        a = fast.encode(doc).ids
        b = hf(doc)["input_ids"]
        c = hf_vm(doc)["input_ids"]
        assert a == b == c, "tokenizer.json and vocab.json/merges.txt disagree"
        assert fast.decode(a) == doc and hf.decode(b) == doc, "round trip failed"
        n_tokens += len(a)
    # The special token is one id wherever it appears.
    s = EOT + "To be, or not to be" + EOT
    ids = hf(s)["input_ids"]
    assert ids[0] == eot_id and ids[-1] == eot_id and hf.decode(ids) == s, ids
    assert fast.encode(s).ids == ids
    return {
        "heldout_tokens": n_tokens,
        "heldout_bytes": len(heldout_text.encode()),
        "eot_id": eot_id,
        "example": hf.convert_ids_to_tokens(
            hf("To be, or not to be: that is the question:")["input_ids"]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", type=Path, default=HERE / ".work" / "corpus")
    ap.add_argument("--out", type=Path, default=ROOT / "webgpt2" / "assets" / "gpt2_shakespeare")
    ap.add_argument("--vocab-size", type=int, default=4096, help="total, <|endoftext|> included")
    ap.add_argument("--model-max-length", type=int, default=256)
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train_text = (args.corpus / "train.txt").read_text(encoding="utf-8")
    heldout_text = (args.corpus / "heldout.txt").read_text(encoding="utf-8")
    tok = train(train_text, args.vocab_size)
    write_gpt2_files(tok, args.out, args.model_max_length)
    info = verify(args.out, heldout_text)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        digest = hashlib.sha256((args.out / name).read_bytes()).hexdigest()
        print(f"{name}: sha256 {digest}")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
