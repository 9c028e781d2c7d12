"""GenerationConfig: the one list of generate's options, its checks, and the shells that
use it (the streaming API, the page's option names)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from webgpt2 import GPT2CausalLM
from webgpt2.generation import (
    GenerationConfig,
    GenerationOptionError,
    GreedySampler,
    TopKSampler,
    UnexpectedOptionError,
    sampler_from_config,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)


def test_every_option_is_documented_with_its_default():
    for f in dataclasses.fields(GenerationConfig):
        assert f.metadata.get("doc"), f.name
        assert f"{f.name} (default {f.default!r}): " in GenerationConfig.__doc__
    assert set(GenerationConfig.strategy_options()) <= set(GenerationConfig.option_names())


@pytest.mark.parametrize("options,error,match", [
    ({"max_new_tokens": 2.7}, GenerationOptionError, "max_new_tokens is 2.7; expected an "
                                                     "integer >= 0"),
    ({"max_new_tokens": True}, GenerationOptionError, "max_new_tokens is True"),
    ({"max_length": 0}, GenerationOptionError, "max_length is 0; expected an integer >= 1"),
    ({"sampler": "beam", "num_beams": 0}, GenerationOptionError, "num_beams is 0"),
    ({"sampler": "beam", "num_beams": 2.0}, GenerationOptionError, "num_beams is 2.0"),
    ({"sampler": "contrastive", "top_k": 0}, GenerationOptionError, "top_k is 0"),
    ({"sampler": "top_k", "top_k": False}, GenerationOptionError, "top_k is False"),
    ({"sampler": "random", "temperature": -1}, GenerationOptionError, "temperature is -1"),
    ({"sampler": "top_p", "top_p": 1.5}, GenerationOptionError, "top_p is 1.5"),
    ({"sampler": "contrastive", "penalty_alpha": 2}, GenerationOptionError,
     "penalty_alpha is 2"),
    ({"sampler": "beam", "early_stopping": "sometimes"}, GenerationOptionError,
     "early_stopping is 'sometimes'"),
    ({"seed": 1.5}, GenerationOptionError, "seed is 1.5"),
    ({"repetition_penalty": 0}, GenerationOptionError, "repetition_penalty is 0"),
    ({"stop_token_ids": 5}, GenerationOptionError, "stop_token_ids is 5"),
    ({"stop_strings": [""]}, GenerationOptionError, "stop_strings is"),
    ({"bad_words_ids": [[]]}, GenerationOptionError, "bad_words_ids"),
    ({"strip_prompt": "yes"}, GenerationOptionError, "strip_prompt is 'yes'"),
    ({"sampler": 42}, GenerationOptionError, "sampler is 42"),
    ({"sampler": "nucleus"}, ValueError, "unknown sampler 'nucleus'"),
    ({"num_beams": 3}, UnexpectedOptionError, "num_beams is not an option of the 'greedy'"),
    ({"sampler": TopKSampler(), "top_k": 3}, UnexpectedOptionError, "with a Sampler object"),
])
def test_bad_options_are_named_with_their_value(options, error, match):
    with pytest.raises(error, match=match):
        GenerationConfig(**options).validate()


def test_errors_are_value_and_type_errors_a_shell_can_rename():
    with pytest.raises(ValueError) as bad:
        GenerationConfig(sampler="beam", num_beams=0).validate()
    assert bad.value.option == "num_beams"
    assert bad.value.renamed("--num-beams") == "--num-beams is 0; expected an integer >= 1"
    with pytest.raises(TypeError, match="unexpected generate options: top_n"):
        GenerationConfig().update(top_n=3)


def test_sampler_from_config():
    assert repr(sampler_from_config(GenerationConfig(sampler="top_k", top_k=7))) == repr(
        TopKSampler(k=7))
    assert isinstance(sampler_from_config(GenerationConfig(sampler="random", temperature=0)),
                      GreedySampler)
    sampler = TopKSampler(k=3)
    assert sampler_from_config(GenerationConfig(sampler=sampler)) is sampler


def test_generate_takes_a_config_and_keywords_override_it(lm):
    config = GenerationConfig(max_new_tokens=6, sampler="top_k", top_k=9, seed=2)
    expected = lm.generate("Hello", max_new_tokens=6, sampler=TopKSampler(k=9), seed=2)
    assert lm.generate("Hello", generation_config=config) == expected
    assert lm.generate("Hello", generation_config=config, max_new_tokens=3) == lm.generate(
        "Hello", max_new_tokens=3, sampler=TopKSampler(k=9), seed=2)
    with pytest.raises(TypeError, match="unexpected generate options: top_n"):
        lm.generate("Hello", top_n=3)
    with pytest.raises(ValueError, match="max_new_tokens is 2.7"):
        lm.generate("Hello", max_new_tokens=2.7)


def test_temperature_zero_is_greedy(lm):
    greedy = lm.generate("Hello", max_new_tokens=8, stop_token_ids=None)
    assert lm.generate("Hello", max_new_tokens=8, stop_token_ids=None, sampler="top_k",
                       temperature=0, seed=1) == greedy


def test_stream_tokens_give_the_generated_ids_with_their_text(lm):
    steps = list(lm.stream_tokens("Hello", max_new_tokens=10, stop_token_ids=None))
    ids = [i for _, step in steps for i in step]
    assert len(ids) == 10
    out = lm.generate("Hello", max_new_tokens=10, stop_token_ids=None, strip_prompt=True)
    assert "".join(text for text, _ in steps) == out
    assert lm.preprocessor.tokenizer.detokenize(ids) == out


def test_a_streamer_gets_put_ids_then_end(lm):
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, ids):
            self.calls.append(list(ids))

        def end(self):
            self.calls.append("end")

    recorder = Recorder()
    text = lm.generate("Hello", max_new_tokens=5, stop_token_ids=None, streamer=recorder)
    assert recorder.calls[-1] == "end" and len(recorder.calls) == 6
    ids = [c[0] for c in recorder.calls[:-1]]
    assert text == "Hello" + lm.preprocessor.tokenizer.detokenize(ids)
    beam = Recorder()  # beam search puts all its ids once, when it finishes
    lm.generate("Hello", max_new_tokens=5, stop_token_ids=None, sampler="beam",
                num_beams=2, streamer=beam)
    assert len(beam.calls) == 2 and len(beam.calls[0]) == 5


def _page_session():
    spec = importlib.util.spec_from_file_location("webgpt2_page", ROOT / "web" / "session.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pages_options_are_the_configs():
    session = _page_session()
    fields = set(GenerationConfig.option_names())
    assert set(session.PAGE_OPTIONS.values()) <= fields
    assert set(session.PAGE_DEFAULTS) <= fields
    form = {"sampler": "top_k", "temperature": 0.8, "k": 40, "p": 0.9, "alpha": 0.6,
            "numBeams": 4, "maxNewTokens": 32, "seed": None, "stopStrings": []}
    config = session.generation_config(form)
    assert (config.top_k, config.temperature, config.num_beams, config.max_new_tokens) == (
        40, 0.8, None, 32)
    assert session.generation_config({"sampler": "beam"}).num_beams == 4
    for options, message in [({"sampler": "beam", "numBeams": 0}, "numBeams is 0"),
                             ({"sampler": "contrastive", "k": 0}, "k is 0"),
                             ({"maxNewTokens": 2.5}, "maxNewTokens is 2.5"),
                             ({"topK": 3}, "unknown generate options ['topK']")]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            session.generation_config(options)
