"""The embedded default model, webgpt2/assets/gpt2_shakespeare (issue 6).

The folder is a Hugging Face GPT-2 checkpoint trained by tools/train_shakespeare.py: these
tests check its format (with the standard library only), that its tokenizer round-trips,
that it has learnt something (perplexity on text from a held-out play, which it never saw),
and that webgpt2 and transformers compute the same thing with it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "webgpt2" / "assets" / "gpt2_shakespeare"
EOT = "<|endoftext|>"
MAX_FOLDER_BYTES = 10_000_000

# Julius Caesar III.2 and Twelfth Night I.1, as in the corpus: both plays are held out.
HELDOUT_PASSAGE = """ANTONY.
Friends, Romans, countrymen, lend me your ears;
I come to bury Caesar, not to praise him.
The evil that men do lives after them;
The good is oft interred with their bones:
So let it be with Caesar. The noble Brutus
Hath told you Caesar was ambitious:
If it were so, it was a grievous fault;
And grievously hath Caesar answer'd it.

DUKE.
If music be the food of love, play on,
Give me excess of it; that, surfeiting,
The appetite may sicken and so die.--
That strain again;--it had a dying fall;
O, it came o'er my ear like the sweet south,
That breathes upon a bank of violets,
Stealing and giving odour.--Enough; no more;
'Tis not so sweet now as it was before.
"""


def _config() -> dict:
    return json.loads((FOLDER / "config.json").read_text(encoding="utf-8"))


def _vocab() -> dict:
    return json.loads((FOLDER / "vocab.json").read_text(encoding="utf-8"))


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def test_folder_is_complete_and_small():
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "README.md",
    ):
        assert (FOLDER / name).is_file(), name
    total = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file())
    assert total <= MAX_FOLDER_BYTES, f"{total:,} bytes"


def test_config_is_gpt2():
    c = _config()
    assert c["model_type"] == "gpt2"
    assert c["architectures"] == ["GPT2LMHeadModel"]
    assert c["activation_function"] == "gelu_new"
    assert c["layer_norm_epsilon"] == 1e-5
    assert c.get("tie_word_embeddings", True) is True
    assert c["vocab_size"] == len(_vocab())
    assert c["bos_token_id"] == c["eos_token_id"] == c["vocab_size"] - 1
    assert c["n_embd"] % c["n_head"] == 0


def test_vocabulary_in_gpt2_format():
    vocab = _vocab()
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab[EOT] == len(vocab) - 1  # the special token has the last id, like 50256
    lines = (FOLDER / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    merges = lines[1:]
    assert all(len(m.split(" ")) == 2 for m in merges)
    # Every id is a byte (256) or a merge, plus <|endoftext|>.
    assert len(merges) == len(vocab) - 256 - 1
    for m in merges:
        a, b = m.split(" ")
        assert a + b in vocab, m


def test_safetensors_names_shapes_and_float16():
    c = _config()
    header = _safetensors_header(FOLDER / "model.safetensors")
    h, v, p, n_layer = c["n_embd"], c["vocab_size"], c["n_positions"], c["n_layer"]
    inner = c.get("n_inner") or 4 * h
    expected = {
        "transformer.wte.weight": [v, h],
        "transformer.wpe.weight": [p, h],
        "transformer.ln_f.weight": [h],
        "transformer.ln_f.bias": [h],
    }
    for i in range(n_layer):
        pre = f"transformer.h.{i}."
        expected.update(
            {
                pre + "ln_1.weight": [h],
                pre + "ln_1.bias": [h],
                pre + "attn.c_attn.weight": [h, 3 * h],
                pre + "attn.c_attn.bias": [3 * h],
                pre + "attn.c_proj.weight": [h, h],
                pre + "attn.c_proj.bias": [h],
                pre + "ln_2.weight": [h],
                pre + "ln_2.bias": [h],
                pre + "mlp.c_fc.weight": [h, inner],
                pre + "mlp.c_fc.bias": [inner],
                pre + "mlp.c_proj.weight": [inner, h],
                pre + "mlp.c_proj.bias": [h],
            }
        )
    assert {k: t["shape"] for k, t in header.items()} == expected
    assert {t["dtype"] for t in header.values()} == {"F16"}


def test_tokenizer_round_trip_pure_python():
    from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained(FOLDER)
    ids = tok.tokenize(HELDOUT_PASSAGE)
    assert max(ids) < len(_vocab()) - 1
    assert tok.detokenize(ids) == HELDOUT_PASSAGE
    # Shakespeare's words are single tokens.
    vocab = _vocab()
    for word in ("\u0120thou", "\u0120love", "\u0120Caesar", "\u0120king"):
        assert word in vocab, word


def test_tokenizer_json_matches_vocab_and_merges():
    tokenizers = pytest.importorskip("tokenizers")
    from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer

    fast = tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    ours = GPT2Tokenizer.from_pretrained(FOLDER)
    text = EOT + HELDOUT_PASSAGE + EOT + "  odd   spacing\tand ümlauts, 'tis done.\n"
    ids = fast.encode(text).ids
    assert ids[0] == len(_vocab()) - 1
    assert fast.decode(ids, skip_special_tokens=False) == text
    assert ours.tokenize(HELDOUT_PASSAGE) == fast.encode(HELDOUT_PASSAGE).ids


def _hf_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel.from_pretrained(str(FOLDER), dtype=torch.float32)
    model.eval()
    return torch, transformers, model


def test_transformers_loads_it_and_it_has_learnt_shakespeare():
    torch, transformers, model = _hf_model()
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(FOLDER))
    ids = [tok.eos_token_id] + tok(HELDOUT_PASSAGE)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        loss = model(input_ids=x, labels=x).loss.item()
    # An untrained model of this size is at about 4,000; the trained one is far below.
    assert math.exp(loss) < 150, math.exp(loss)
    # Greedy text from <|endoftext|> is words, not one token repeated.
    with torch.no_grad():
        out = model.generate(
            torch.tensor([[tok.eos_token_id]]),
            max_new_tokens=40,
            do_sample=False,
            pad_token_id=tok.eos_token_id,
        )
    text = tok.decode(out[0, 1:])
    assert len(set(out[0, 1:].tolist())) > 10, text


def test_webgpt2_cpu_scores_match_transformers():
    pytest.importorskip("numpy")
    torch, transformers, model = _hf_model()
    from webgpt2 import GPT2CausalLM

    lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en", backend="cpu", progress=False)
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(FOLDER))
    ids = [tok.eos_token_id] + tok(HELDOUT_PASSAGE)["input_ids"]
    ours = lm.score([ids])[0][:-1]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1]
        ref = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none").tolist()
    assert len(ours) == len(ref)
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-3


def _card_samples() -> list[tuple[str, str]]:
    """(command, output) pairs from the model card's "Sample generations" section."""
    card = (FOLDER / "README.md").read_text(encoding="utf-8")
    section = card.split("## Sample generations", 1)[1].split("### For reference", 1)[0]
    blocks = section.split("```")
    pairs = []
    for i, block in enumerate(blocks):
        if block.startswith("sh\n") and i + 2 < len(blocks) and blocks[i + 2].startswith("text\n"):
            pairs.append((block[3:].strip(), blocks[i + 2][5:]))
    return pairs


def test_model_card_samples_are_reproduced_by_their_commands():
    import shlex
    import subprocess
    import sys

    samples = _card_samples()
    assert len(samples) >= 3, "the card should show greedy and seeded samples"
    for command, text in samples:
        args = shlex.split(command)
        assert args[0] == "webgpt2"
        done = subprocess.run([sys.executable, "-m", "webgpt2.cli", *args[1:], "--quiet"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout == text, command


def test_model_card_greedy_sample_is_transformers_greedy():
    """The card's greedy text is what transformers' greedy decoding gives (an independent
    check that the card shows the model and not a webgpt2 artefact)."""
    torch, transformers, model = _hf_model()
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(FOLDER))
    command, text = _card_samples()[0]
    assert "--sampler" not in command and '"ROMEO:"' in command
    new_tokens = int(command.split("--max-new-tokens")[1].split()[0])
    ids = [tok.eos_token_id] + tok("ROMEO:")["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, 1:], skip_special_tokens=True)
    assert text == expected + "\n"


def test_webgpt2_perplexity_matches_transformers_and_beats_untrained():
    """Held-out perplexity through webgpt2's score() equals transformers' to 1e-3 relative
    (tools/evaluate_shakespeare.py does the same over the whole held-out split)."""
    torch, transformers, model = _hf_model()
    from webgpt2 import GPT2CausalLM

    lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en", backend="cpu", progress=False)
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(FOLDER))
    ids = [tok.eos_token_id] + tok(HELDOUT_PASSAGE * 3)["input_ids"]
    ours = lm.perplexity(ids)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, lm.max_sequence_length):
            chunk = torch.tensor([ids[start:start + lm.max_sequence_length]])
            if chunk.shape[1] < 2:
                break
            total += model(input_ids=chunk, labels=chunk).loss.item() * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    theirs = math.exp(total / count)
    assert ours == pytest.approx(theirs, rel=1e-3)
    torch.manual_seed(0)
    untrained = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(FOLDER))
    with torch.no_grad():
        x = torch.tensor([ids[:lm.max_sequence_length]])
        baseline = math.exp(untrained.eval()(input_ids=x, labels=x).loss.item())
    assert ours < baseline / 20, (ours, baseline)
