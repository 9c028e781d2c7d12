"""Issue 15's "work is bounded" and "no silent wrong values" for generate and score: a bad
count, id or mask is an error naming it, and a search too wide for the machine is refused
before anything is allocated (num_beams=10000 on the 2-layer model used to be killed by the
kernel's out-of-memory killer)."""

from __future__ import annotations

import pytest

import webgpt2
from webgpt2 import GPT2CausalLM

BACKENDS = [b for b in ("cpu", "wasm", "webgpu") if b in webgpt2.available_backends()]


@pytest.fixture(scope="module", params=BACKENDS)
def lm(request, tiny_checkpoint):
    return GPT2CausalLM.from_pretrained(tiny_checkpoint, backend=request.param, progress=False)


def test_a_search_too_wide_is_refused_before_allocation(lm):
    with pytest.raises(ValueError, match=r"num_beams=10000 .* GiB, over the"):
        lm.generate("Hi", max_new_tokens=2, sampler="beam", num_beams=10000)
    with pytest.raises(ValueError, match=r"a batch of 100000 .* GiB, over the"):
        lm.generate(["Hi"] * 100_000, max_new_tokens=2)
    # The model still works afterwards.
    assert isinstance(lm.generate("Hi", max_new_tokens=2), str)


@pytest.mark.parametrize("ids, message", [
    ([[1.5, 2]], "token_ids holds 1.5"),
    ([[True, 2]], "token_ids holds True"),
    ([[-1, 2]], "token_ids holds -1"),
    ([[1, 60000]], "token_ids holds 60000"),
])
def test_packed_token_ids_must_be_vocabulary_integers(lm, ids, message):
    with pytest.raises(ValueError, match=message):
        lm.generate({"token_ids": ids, "padding_mask": [[True, True]]}, max_new_tokens=1)


def test_packed_padding_mask_must_be_booleans(lm):
    with pytest.raises(ValueError, match="padding_mask holds 'yes'"):
        lm.generate({"token_ids": [[1, 2]], "padding_mask": [[True, "yes"]]}, max_new_tokens=1)


def test_stop_token_ids_outside_the_vocabulary_are_errors(lm):
    with pytest.raises(ValueError, match=r"stop_token_ids holds 1000000; expected token ids"):
        lm.generate("Hi", max_new_tokens=2, stop_token_ids=[1_000_000])
    with pytest.raises(ValueError, match=r"stop_token_ids is \[True\]"):
        lm.generate("Hi", max_new_tokens=2, stop_token_ids=[True])


@pytest.mark.parametrize("kwargs, message", [
    ({"target_ids": [[1, -2, 3]]}, "target id -2 is outside the vocabulary"),
    ({"target_ids": [[1, 60000, 3]]}, "target id 60000 is outside the vocabulary"),
    ({"target_ids": [[1, 2]]}, r"target_ids must have token_ids' shape \[1, 3\]"),
    ({"padding_mask": [[True, True]]}, r"padding_mask must have token_ids' shape \[1, 3\]"),
    ({"padding_mask": [[True, 2, True]]}, "padding_mask holds 2"),
])
def test_score_checks_its_targets_and_mask(lm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lm.score([[1, 2, 3]], **kwargs)


@pytest.mark.parametrize("option, value", [
    ("max_new_tokens", 2.7), ("max_new_tokens", True), ("num_beams", 0), ("seed", 1.5),
])
def test_counts_must_be_integers(lm, option, value):
    sampler = {"num_beams": "beam"}.get(option, "greedy")
    options = {"max_new_tokens": 2, "sampler": sampler, option: value}
    with pytest.raises(ValueError, match=f"{option} is {value}"):
        lm.generate("Hi", **options)
