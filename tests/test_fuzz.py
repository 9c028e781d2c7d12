"""Seeded, bounded fuzzing of the readers: random mutations of a safetensors file, of
config.json, vocab.json, merges.txt and tokenizer.json, and random text for the tokenizer.
Each case may succeed or raise a ValueError subclass (the project's own errors); anything
else, or a case slower than a second, fails. A few seconds in all."""

from __future__ import annotations

import json
import random
import struct
import time

import pytest

from webgpt2.backends.base import HostTensor
from webgpt2.io import read_gpt2_config, read_safetensors
from webgpt2.io.safetensors import write_safetensors
from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer

SEED = 15
CASE_SECONDS = 1.0
TOKENS = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"-1", b"1e999", b"NaN", b"null",
          b"true", b"\xff", b"\x00", b" ", b"99999999999999999999", b"[" * 200,
          b"[" * 100_000, b'{"a": ' * 50_000, b" c", b"\n"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = rng.choice(TOKENS)
        elif kind == 2:
            del data[at:at + rng.randint(1, 16)]
        elif kind == 3:
            data = data[:at]
        else:
            data[at:at] = data[rng.randrange(len(data) + 1):][:rng.randint(1, 64)]
    return bytes(data)


def run_case(call, label: str) -> None:
    start = time.perf_counter()
    try:
        call()
    except ValueError:
        pass
    except Exception as error:  # pragma: no cover - what the test exists to find
        pytest.fail(f"{label}: {type(error).__name__}: {str(error)[:300]}")
    elapsed = time.perf_counter() - start
    assert elapsed < CASE_SECONDS, f"{label} took {elapsed:.2f} s"


def test_fuzz_safetensors_reader(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {
        "wte.weight": HostTensor.from_floats([0.5] * 12, (3, 4)),
        "h.0.attn.bias": HostTensor("float16", (2, 2), bytes(8)),
        "ids": HostTensor("int32", (2,), bytes(8)),
    }, {"format": "pt"})
    original = path.read_bytes()
    (length,) = struct.unpack("<Q", original[:8])
    header, body = original[8:8 + length], original[8 + length:]
    rng = random.Random(SEED)
    for case in range(1500):
        if case % 2:
            data = mutate(original, rng)
        else:  # a mutated header with a length that fits it: the JSON itself is parsed
            new = mutate(header, rng)
            data = struct.pack("<Q", len(new)) + new + body
        run_case(lambda d=data: read_safetensors(d), f"safetensors case {case}")


def test_fuzz_config_and_tokenizer_files(tmp_path, tiny_checkpoint):
    config = (tiny_checkpoint / "config.json").read_bytes()
    vocab = {**{chr(c): c - 97 for c in range(97, 107)}, "ab": 10, "abc": 11,
             "<|endoftext|>": 12}
    merges = "#version: 0.2\na b\nab c\n"
    tokenizer_json = json.dumps({"model": {"type": "BPE", "vocab": vocab,
                                           "merges": [["a", "b"], ["ab", "c"]]},
                                 "added_tokens": [{"id": 12, "content": "<|endoftext|>"}]})
    files = {"config.json": config, "vocab.json": json.dumps(vocab).encode(),
             "merges.txt": merges.encode(), "tokenizer.json": tokenizer_json.encode()}
    rng = random.Random(SEED)
    for case in range(600):
        name = rng.choice(sorted(files))
        folder = tmp_path / str(case)
        folder.mkdir()
        wanted = ("tokenizer.json",) if name == "tokenizer.json" else (
            "config.json", "vocab.json", "merges.txt")
        for each in wanted:
            data = mutate(files[each], rng) if each == name else files[each]
            (folder / each).write_bytes(data)
        if name == "config.json":
            run_case(lambda f=folder: read_gpt2_config(f), f"{name} case {case}")
        else:
            # Odd cases go through Hugging Face tokenizers when it is installed.
            fast = None if case % 2 else False
            run_case(lambda f=folder, u=fast: GPT2Tokenizer.from_pretrained(f, use_fast=u)
                     .tokenize("abc abcd"), f"{name} case {case}")


def test_fuzz_tokenizer_text(tiny_checkpoint):
    tokenizer = GPT2Tokenizer.from_pretrained(tiny_checkpoint, use_fast=False)
    rng = random.Random(SEED)
    alphabet = "ab <|endoftext|>\n\t\u00e9\u4e2d\U0001f600\ud800\x00'sll 12"
    for case in range(800):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        run_case(lambda t=text: tokenizer.detokenize(tokenizer.tokenize(t)),
                 f"tokenize case {case}")
        ids = [rng.randint(-3, tokenizer.vocabulary_size() + 3) for _ in range(rng.randint(0, 8))]
        run_case(lambda i=ids: tokenizer.detokenize(i), f"detokenize case {case}")
