"""generate(), stream(), generate_step() and their errors, on the cpu backend."""

from __future__ import annotations

import pytest

import webgpt2
from webgpt2 import GPT2CausalLM
from webgpt2.generation.samplers import TopKSampler, TopPSampler


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)


def _new_ids(lm, prompt, **options):
    """The token ids generate() produced after the prompt (and its start token)."""
    packed = lm.preprocessor.generate_preprocess(prompt, sequence_length=lm.max_sequence_length)
    n = sum(packed["padding_mask"])
    length = n + options.pop("max_new_tokens")
    out = lm.generate({"token_ids": [packed["token_ids"][:length]],
                       "padding_mask": [packed["padding_mask"][:length]]}, **options)
    return [t for t, m in zip(out["token_ids"][0][n:], out["padding_mask"][0][n:]) if m]


def test_generate_returns_prompt_plus_exactly_max_new_tokens(lm):
    text = lm.generate("The quick brown fox", max_new_tokens=12, stop_token_ids=None)
    assert text.startswith("The quick brown fox")
    ids = _new_ids(lm, "The quick brown fox", max_new_tokens=12, stop_token_ids=None)
    assert len(ids) == 12
    assert text == "The quick brown fox" + lm.preprocessor.tokenizer.detokenize(ids)


def test_stop_token_ends_generation_and_is_masked_after(lm):
    ids = _new_ids(lm, "Hello", max_new_tokens=20, stop_token_ids=None)
    stop = ids[6]
    first = ids.index(stop)
    stopped = _new_ids(lm, "Hello", max_new_tokens=20, stop_token_ids=[stop])
    assert stopped == ids[:first + 1]


def test_stream_pieces_concatenate_to_the_generated_text(lm):
    pieces = list(lm.stream("Once upon a time", max_new_tokens=16, stop_token_ids=None))
    text = lm.generate("Once upon a time", max_new_tokens=16, stop_token_ids=None)
    assert "".join(pieces) == text[len("Once upon a time"):]
    seen = []
    lm.generate("Once upon a time", max_new_tokens=16, stop_token_ids=None, stream=seen.append)
    assert seen == pieces


@pytest.mark.parametrize("sampler", ["greedy", TopKSampler(k=7, temperature=0.9),
                                     TopPSampler(p=0.8, temperature=1.2), "random"])
def test_batched_ragged_prompts_equal_one_by_one(lm, sampler):
    prompts = ["Hi", "The quick brown fox jumps over", ("A much longer prompt, with commas, "
                "and more words than the others have")]
    batched = lm.generate(prompts, max_new_tokens=9, sampler=sampler, seed=11,
                          stop_token_ids=None)
    alone = [lm.generate(p, max_new_tokens=9, sampler=sampler, seed=11, stop_token_ids=None)
             for p in prompts]
    assert batched == alone


def test_seed_makes_sampling_reproducible(lm):
    a = lm.generate("Hello", max_new_tokens=10, sampler="top_k", seed=5)
    b = lm.generate("Hello", max_new_tokens=10, sampler="top_k", seed=5)
    c = lm.generate("Hello", max_new_tokens=10, sampler="random", seed=6)
    assert a == b
    assert a != c


def test_strip_prompt_drops_the_prompt(lm):
    full = lm.generate("Hello world", max_new_tokens=6, stop_token_ids=None)
    stripped = lm.generate("Hello world", max_new_tokens=6, stop_token_ids=None,
                           strip_prompt=True)
    assert full == "Hello world" + stripped


def test_max_length_is_total_length(lm):
    ids = lm.preprocessor.tokenizer.tokenize("Hello world")
    out = lm.generate("Hello world", max_length=len(ids) + 1 + 4, stop_token_ids=None)
    assert len(lm.preprocessor.tokenizer.tokenize(out)) == len(ids) + 4


# ---- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,error,match", [
    ("", ValueError, "empty"),
    (42, TypeError, "int"),
    ([], ValueError, "empty"),
    (["ok", None], TypeError, "NoneType"),
])
def test_bad_prompts(lm, prompt, error, match):
    with pytest.raises(error, match=match):
        lm.generate(prompt, max_new_tokens=2)


def test_prompt_longer_than_context(lm):
    with pytest.raises(ValueError, match="prompt is .* tokens.*max_sequence_length is 128"):
        lm.generate("word " * 200, max_new_tokens=2)


def test_max_length_beyond_context(lm):
    with pytest.raises(ValueError, match="max_sequence_length 128"):
        lm.generate("Hello", max_length=129)
    with pytest.raises(ValueError, match="max_sequence_length 128"):
        lm.generate("Hello", max_new_tokens=500)


def test_token_ids_outside_vocabulary(lm):
    with pytest.raises(ValueError, match="token id 50257 is outside the vocabulary"):
        lm.call_with_cache([[1, 50257]], lm.backbone.new_cache(1, 4), 0)
    with pytest.raises(ValueError, match="token id -1"):
        lm.build_cache([[-1]])


def test_wrong_cache_shape_and_index(lm):
    cache = lm.backbone.new_cache(1, 8)
    with pytest.raises(ValueError, match="cache has shape"):
        lm.call_with_cache([[1], [2]], cache, 0)
    with pytest.raises(ValueError, match="cache_update_index 8"):
        lm.call_with_cache([[1]], cache, 8)
    with pytest.raises(ValueError, match="cache_update_index -1"):
        lm.call_with_cache([[1]], cache, -1)
    with pytest.raises(ValueError, match="max_sequence_length"):
        lm.backbone.new_cache(1, 1000)


def test_unknown_sampler_backend_and_bad_options(lm):
    with pytest.raises(ValueError, match="unknown sampler 'nucleus'"):
        lm.generate("Hi", max_new_tokens=2, sampler="nucleus")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        webgpt2.get_backend("tpu")
    with pytest.raises(ValueError, match="temperature"):
        TopKSampler(temperature=0)
    with pytest.raises(ValueError, match="p is 1.5"):
        TopPSampler(p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate("Hi", max_new_tokens=-1)
    with pytest.raises(ValueError, match="single prompt"):
        list(lm.stream(["a", "b"], max_new_tokens=2))
