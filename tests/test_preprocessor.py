"""GPT2Preprocessor, GPT2CausalLMPreprocessor and StartEndPacker (KerasHub's semantics).

Expected ids come from Hugging Face's GPT-2 tokenizer; the packing rules are KerasHub's
``StartEndPacker``: start token, ids cut from the right, end token, right padding, and a
padding mask that is True on every real token (start and end included).
"""

from __future__ import annotations

import pytest

from webgpt2.models.gpt2.gpt2_causal_lm_preprocessor import GPT2CausalLMPreprocessor
from webgpt2.models.gpt2.gpt2_preprocessor import GPT2Preprocessor
from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
from webgpt2.tokenizers import StartEndPacker

EOT_ID = 50256

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "  spaces\tand\nnewlines  ",
    "café 日本語 😀👍🏽 ١٢٣",
    "I'm sure they'll say it's fine.",
]


@pytest.fixture(scope="module")
def tokenizer(gpt2_dir) -> GPT2Tokenizer:
    return GPT2Tokenizer.from_pretrained(gpt2_dir, use_fast=False)


@pytest.fixture(scope="module")
def reference(gpt2_dir) -> dict[str, list[int]]:
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(gpt2_dir))
    return {text: hf(text)["input_ids"] for text in TEXTS + ["x " * 40]}


def packed(ids: list[int], length: int, start: bool = True, end: bool = True):
    """KerasHub's StartEndPacker, written out for one row."""
    budget = length - int(start) - int(end)
    row = [EOT_ID] * start + ids[:budget] + [EOT_ID] * end
    return row + [EOT_ID] * (length - len(row)), [True] * len(row) + [False] * (length - len(row))


# -- StartEndPacker -------------------------------------------------------------------------


def test_packer_rows_and_batches():
    packer = StartEndPacker(5, start_value=1, end_value=2, pad_value=0, return_padding_mask=True)
    assert packer([7, 8]) == ([1, 7, 8, 2, 0], [True, True, True, True, False])
    assert packer([[7, 8], [7, 8, 9, 10, 11, 12]]) == (
        [[1, 7, 8, 2, 0], [1, 7, 8, 9, 2]],
        [[True, True, True, True, False], [True] * 5],
    )
    assert packer([7, 8], add_start_value=False, add_end_value=False)[0] == [7, 8, 0, 0, 0]
    assert packer([], sequence_length=3) == ([1, 2, 0], [True, True, False])
    assert StartEndPacker(2, start_value=1, end_value=2)([7, 8, 9]) == [1, 2]
    assert StartEndPacker(None, start_value=[1, 3])([[7], [7, 8, 9]]) == [
        [1, 3, 7, 0, 0],
        [1, 3, 7, 8, 9],
    ]


# -- GPT2Preprocessor -----------------------------------------------------------------------


def test_preprocessor_batch(tokenizer, reference):
    preprocessor = GPT2Preprocessor(tokenizer, sequence_length=8)
    out = preprocessor(TEXTS)
    assert set(out) == {"token_ids", "padding_mask"}
    assert len(out["token_ids"]) == len(TEXTS)
    for text, ids, mask in zip(TEXTS, out["token_ids"], out["padding_mask"]):
        assert (ids, mask) == packed(reference[text], 8)
        assert len(ids) == len(mask) == 8
        assert all(isinstance(m, bool) for m in mask)


def test_preprocessor_single_string_gives_one_row(tokenizer, reference):
    out = GPT2Preprocessor(tokenizer, sequence_length=16)("Hello world")
    assert (out["token_ids"], out["padding_mask"]) == packed(reference["Hello world"], 16)
    assert out["token_ids"][:4] == [EOT_ID, 15496, 995, EOT_ID]


def test_preprocessor_truncates_from_the_right_and_keeps_end_token(tokenizer, reference):
    text = "x " * 40
    out = GPT2Preprocessor(tokenizer, sequence_length=10)(text)
    assert out["token_ids"] == [EOT_ID] + reference[text][:8] + [EOT_ID]
    assert out["padding_mask"] == [True] * 10


@pytest.mark.parametrize("start, end", [(False, True), (True, False), (False, False)])
def test_preprocessor_start_end_flags(tokenizer, reference, start, end):
    preprocessor = GPT2Preprocessor(
        tokenizer, sequence_length=6, add_start_token=start, add_end_token=end
    )
    for text in TEXTS:
        out = preprocessor(text)
        assert (out["token_ids"], out["padding_mask"]) == packed(reference[text], 6, start, end)


def test_preprocessor_sequence_length_override_and_y(tokenizer, reference):
    preprocessor = GPT2Preprocessor(tokenizer, sequence_length=8)
    out = preprocessor("a", sequence_length=3)
    assert out["token_ids"] == [EOT_ID, reference["a"][0], EOT_ID]
    x, y = preprocessor("a", y=[1])
    assert y == [1] and len(x["token_ids"]) == 8
    x, y, sample_weight = preprocessor(["a"], y=[1], sample_weight=[0.5])
    assert (y, sample_weight) == ([1], [0.5])
    assert preprocessor([]) == {"token_ids": [], "padding_mask": []}
    preprocessor.sequence_length = 4
    assert len(preprocessor("a")["token_ids"]) == 4
    with pytest.raises(ValueError, match="sequence_length"):
        preprocessor.sequence_length = 0


def test_preprocessor_type_error(tokenizer):
    with pytest.raises(TypeError, match="int"):
        GPT2Preprocessor(tokenizer)(3)


# -- GPT2CausalLMPreprocessor: labels -------------------------------------------------------


def test_causal_lm_labels_are_the_next_token(tokenizer, reference):
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    x, y, sample_weight = preprocessor(TEXTS)
    for text, ids, mask, labels, weights in zip(
        TEXTS, x["token_ids"], x["padding_mask"], y, sample_weight
    ):
        full_ids, full_mask = packed(reference[text], 9)
        assert ids == full_ids[:-1] and mask == full_mask[:-1]
        assert labels == full_ids[1:] and weights == full_mask[1:]
        assert len(ids) == len(labels) == len(weights) == 8


def test_causal_lm_single_string(tokenizer):
    x, y, sample_weight = GPT2CausalLMPreprocessor(tokenizer, sequence_length=5)("Hello world")
    assert x["token_ids"] == [EOT_ID, 15496, 995, EOT_ID, EOT_ID]
    assert x["padding_mask"] == [True, True, True, True, False]
    assert y == [15496, 995, EOT_ID, EOT_ID, EOT_ID]
    assert sample_weight == [True, True, True, False, False]


def test_causal_lm_ignores_given_labels(tokenizer):
    with pytest.warns(UserWarning, match="ignored"):
        _, y, _ = GPT2CausalLMPreprocessor(tokenizer, sequence_length=4)("a", y=[9])
    assert y != [9]


# -- generate_preprocess / generate_postprocess ---------------------------------------------


def test_generate_preprocess(tokenizer, reference):
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=32)
    out = preprocessor.generate_preprocess("Hello world")
    assert out["token_ids"] == [EOT_ID, 15496, 995] + [EOT_ID] * 29
    assert out["padding_mask"] == [True] * 3 + [False] * 29
    batch = preprocessor.generate_preprocess(TEXTS, sequence_length=40)
    for text, ids, mask in zip(TEXTS, batch["token_ids"], batch["padding_mask"]):
        assert (ids, mask) == packed(reference[text], 40, start=True, end=False)


def test_generate_postprocess_inverts_generate_preprocess(tokenizer):
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=24)
    assert preprocessor.generate_postprocess(preprocessor.generate_preprocess(TEXTS)) == TEXTS
    for text in TEXTS:
        prompt = preprocessor.generate_preprocess(text)
        assert preprocessor.generate_postprocess(prompt) == text


def test_generate_postprocess_strips_end_and_padding(tokenizer):
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    # What generate returns: prompt, generated ids, end token, then padding.
    generated = {
        "token_ids": [[EOT_ID, 15496, 995, 0, EOT_ID, 7, 7, 7]],
        "padding_mask": [[True, True, True, True, True, False, False, False]],
    }
    assert preprocessor.generate_postprocess(generated) == ["Hello world!"]


def test_generate_postprocess_accepts_array_likes(tokenizer):
    np = pytest.importorskip("numpy")
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=6)
    prompt = preprocessor.generate_preprocess(["Hello world", "a"])
    arrays = {key: np.array(value) for key, value in prompt.items()}
    assert preprocessor.generate_postprocess(arrays) == ["Hello world", "a"]


def test_generate_preprocess_errors(tokenizer):
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    with pytest.raises(ValueError, match="prompt is empty"):
        preprocessor.generate_preprocess("")
    with pytest.raises(ValueError, match=r"prompt is empty \(index 1\)"):
        preprocessor.generate_preprocess(["a", ""])
    with pytest.raises(ValueError, match="prompt is empty"):
        preprocessor.generate_preprocess([])
    for bad, name in ((3, "int"), (b"abc", "bytes"), (None, "NoneType"), (["a", 1.0], "float")):
        with pytest.raises(TypeError, match=name):
            preprocessor.generate_preprocess(bad)
    with pytest.raises(ValueError, match=r"prompt is 20 tokens; .*sequence_length is 8"):
        preprocessor.generate_preprocess("x " * 19 + "x")
    # Seven tokens plus the start token fill the row exactly: allowed.
    assert len(preprocessor.generate_preprocess("x " * 6 + "x")["token_ids"]) == 8
    with pytest.raises(ValueError, match=r"prompt is 8 tokens; .*sequence_length is 8"):
        preprocessor.generate_preprocess("x " * 7 + "x")


def test_toy_vocabulary_round_trip():
    """No GPT-2 files needed: the docstring's toy vocabulary."""
    vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    preprocessor = GPT2CausalLMPreprocessor(
        GPT2Tokenizer(vocabulary, ["a b", "Ġ ab"]), sequence_length=6
    )
    prompt = preprocessor.generate_preprocess(["ab ab", "ba"])
    assert prompt["token_ids"] == [[5, 3, 4, 5, 5, 5], [5, 1, 0, 5, 5, 5]]
    assert preprocessor.generate_postprocess(prompt) == ["ab ab", "ba"]
