"""`GenerationConfig`: the one list of generate's options, with their defaults and checks.

`generate`, `stream`, `stream_tokens` and `generate_step` build one from their keywords;
the command line's flags (`webgpt2.cli`) and the page's options (`web/session.py`) are
mapped onto its fields, so an option is named, defaulted and checked here only. The shape
follows transformers' (and transformers.js's) `GenerationConfig`; the names of the
strategy options are transformers' (`top_k`, `top_p`, `num_beams`, `penalty_alpha`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webgpt2.generation.logits_processors import LogitsProcessor, build_logits_processors
from webgpt2.generation.samplers import GreedySampler, Sampler, sampler_class
from webgpt2.generation.stopping import StopStringMatcher

__all__ = ["GenerationConfig", "GenerationOptionError", "UnexpectedOptionError",
           "sampler_from_config"]


def _option(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


class _OptionError(Exception):
    """An error about one option: `option` is its name here, `detail` the rest of the
    message, so a shell can say the same with its own name for the option."""

    def __init__(self, option: str, detail: str, prefix: str = "") -> None:
        self.option, self.detail = option, detail
        super().__init__(f"{prefix}{option} {detail}")

    def renamed(self, name: str) -> str:
        """The message with the option called `name` (a flag, the page's name)."""
        return f"{name} {self.detail}"


class GenerationOptionError(_OptionError, ValueError):
    """An option's value is wrong: `num_beams is 0; expected an integer >= 1`."""


class UnexpectedOptionError(_OptionError, TypeError):
    """An option generate does not take, or one the chosen sampler does not use."""


@dataclass
class GenerationConfig:
    """How `generate` generates: every option, its default and what it means.

    An option left at None is off, or takes its sampler's default (given after "default").
    Options of the strategy (temperature, top_k, top_p, num_beams, length_penalty,
    early_stopping, penalty_alpha) belong to the samplers named with them; giving one that
    the chosen sampler does not use is an error, as is giving any with a Sampler object.

    Example:
        >>> config = GenerationConfig(max_new_tokens=8, sampler="top_k", top_k=40,
        ...                           temperature=0.8, seed=1).validate()
        >>> sampler_from_config(config)
        TopKSampler(k=40, temperature=0.8, seed=None)
        >>> GenerationConfig(max_new_tokens=2.7).validate()
        Traceback (most recent call last):
        ...
        webgpt2.generation.config.GenerationOptionError: max_new_tokens is 2.7; expected an \
integer >= 0
    """

    max_length: int | None = _option(
        None, "total length of prompt plus generation (KerasHub's meaning); default: the "
              "prompt plus max_new_tokens, else the preprocessor's sequence_length")
    max_new_tokens: int | None = _option(
        None, "new tokens per row at most, instead of max_length")
    min_new_tokens: int | None = _option(
        None, "the stop tokens are held back until a row has this many new tokens")
    stop_token_ids: Sequence[int] | str | None = _option(
        "auto", "'auto' (the tokenizer's end token), None (never stop early) or token ids")
    stop_strings: Sequence[str] | str | None = _option(
        None, "a row stops once its generated text contains one of these; its text ends "
              "where the stop string ends")
    sampler: str | Sampler | None = _option(
        None, "'greedy' (default), 'random', 'top_k', 'top_p', 'beam', 'contrastive', a "
              "registered name, or a Sampler object")
    temperature: float | None = _option(
        None, "random, top_k, top_p: logits are divided by it (default 1.0); 0 is greedy")
    top_k: int | None = _option(
        None, "top_k: tokens kept (default 5); top_p: a top-k cut before the nucleus; "
              "contrastive: candidates (default 5)")
    top_p: float | None = _option(
        None, "top_p: the nucleus' probability mass, 0 < top_p <= 1 (default 0.1)")
    num_beams: int | None = _option(None, "beam: hypotheses kept (default 5)")
    length_penalty: float | None = _option(
        None, "beam: finished scores are divided by generated length ** this (default 1.0)")
    early_stopping: bool | str | None = _option(
        None, "beam: True (num_beams finished), False (no beam can improve) or 'never' "
              "(default False)")
    penalty_alpha: float | None = _option(
        None, "contrastive: the degeneration penalty's weight in [0, 1] (default 0.6; 0 is "
              "greedy)")
    seed: int | None = _option(
        None, "makes random samplers reproducible (overrides a Sampler object's seed)")
    repetition_penalty: float | None = _option(
        None, "> 0; scores of tokens already in the row are divided (positive) or "
              "multiplied by it; 1.0 is off")
    no_repeat_ngram_size: int | None = _option(
        None, "no n-gram of this size occurs twice in a row; 0 is off")
    bad_words_ids: Sequence[Sequence[int]] | None = _option(
        None, "token sequences never generated (each a list of ids)")
    logits_processors: Sequence[LogitsProcessor] | None = _option(
        None, "more LogitsProcessor objects, applied after the ones above")
    strip_prompt: bool = _option(False, "return the generated text (or ids) without the prompt")

    @classmethod
    def option_names(cls) -> list[str]:
        """Every option, in the order above."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def option_doc(cls, name: str) -> str:
        """What an option means, with its default."""
        return next(f.metadata["doc"] for f in dataclasses.fields(cls) if f.name == name)

    @staticmethod
    def strategy_options() -> list[str]:
        """The options that configure a sampler rather than the generate loop."""
        return ["temperature", "top_k", "top_p", "num_beams", "length_penalty",
                "early_stopping", "penalty_alpha"]

    def update(self, **options: Any) -> GenerationConfig:
        """A checked copy with `options` changed; an unknown name is an error naming it.

        Example:
            >>> GenerationConfig().update(max_new_tokens=4).max_new_tokens
            4
            >>> GenerationConfig().update(top_n=4)
            Traceback (most recent call last):
            ...
            webgpt2.generation.config.UnexpectedOptionError: unexpected generate options: \
top_n is not one of GenerationConfig's options
        """
        names = set(self.option_names())
        for name in sorted(options):
            if name not in names:
                raise UnexpectedOptionError(name, "is not one of GenerationConfig's options",
                                            prefix="unexpected generate options: ")
        return dataclasses.replace(self, **options).validate()

    def validate(self) -> GenerationConfig:
        """Check every option; returns the config itself.

        Raises GenerationOptionError (a ValueError) naming the option and its value, or
        UnexpectedOptionError (a TypeError) for a strategy option the sampler does not use.
        """
        _integer("max_length", self.max_length, 1)
        _integer("max_new_tokens", self.max_new_tokens, 0)
        _integer("min_new_tokens", self.min_new_tokens, 0)
        _integer("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        _integer("seed", self.seed, 0)
        _integer("top_k", self.top_k, 1)
        _integer("num_beams", self.num_beams, 1)
        _number("temperature", self.temperature, "a number >= 0", lambda v: v >= 0)
        _number("top_p", self.top_p, "a number with 0 < top_p <= 1", lambda v: 0 < v <= 1)
        _number("length_penalty", self.length_penalty, "a number", lambda v: True)
        _number("penalty_alpha", self.penalty_alpha, "a number in [0, 1]",
                lambda v: 0 <= v <= 1)
        _number("repetition_penalty", self.repetition_penalty, "a number > 0",
                lambda v: v > 0)
        if self.early_stopping not in (None, True, False, "never") or isinstance(
                self.early_stopping, (int, float)) and not isinstance(self.early_stopping, bool):
            raise GenerationOptionError("early_stopping", f"is {self.early_stopping!r}; "
                                        "expected True, False or 'never'")
        if not isinstance(self.strip_prompt, bool):
            raise GenerationOptionError("strip_prompt", f"is {self.strip_prompt!r}; "
                                        "expected True or False")
        ids = self.stop_token_ids
        if ids != "auto" and ids is not None and (
                not isinstance(ids, (list, tuple))
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids)):
            raise GenerationOptionError("stop_token_ids", f"is {ids!r}; expected 'auto', None "
                                        "or a list of token ids")
        try:
            if self.stop_strings is not None:
                StopStringMatcher(self.stop_strings)
            build_logits_processors(bad_words_ids=self.bad_words_ids,
                                    logits_processors=self.logits_processors)
        except ValueError as e:
            option = "stop_strings" if str(e).startswith("stop_strings") else "bad_words_ids"
            raise GenerationOptionError(option, str(e)[len(option) + 1:]) from None
        self._check_strategy()
        return self

    def _check_strategy(self) -> None:
        sampler = self.sampler
        given = [n for n in self.strategy_options() if getattr(self, n) is not None]
        if isinstance(sampler, Sampler):
            if given:
                raise UnexpectedOptionError(
                    given[0], "is given with a Sampler object; set it on the object instead",
                    prefix="unexpected generate options: ")
            return
        if sampler is not None and not isinstance(sampler, str):
            raise GenerationOptionError("sampler", f"is {sampler!r}; expected a sampler name "
                                        "or a Sampler object")
        name = sampler or "greedy"
        used = sampler_class(name).config_options
        for option in given:
            if option not in used:
                raise UnexpectedOptionError(
                    option, f"is not an option of the {name!r} sampler (it takes "
                    f"{', '.join(used) or 'none'})", prefix="unexpected generate options: ")


def _integer(name: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < minimum):
        raise GenerationOptionError(name, f"is {value!r}; expected an integer >= {minimum}")


def _number(name: str, value: Any, expected: str, ok: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not ok(value)):
        raise GenerationOptionError(name, f"is {value!r}; expected {expected}")


def sampler_from_config(config: GenerationConfig) -> Sampler:
    """The sampler a config asks for: its Sampler object, or the named sampler built from
    the strategy options it takes (its own defaults for the ones left None). A temperature
    of 0 is greedy search, as in transformers.

    Example:
        >>> sampler_from_config(GenerationConfig(sampler="beam", num_beams=3))
        BeamSampler(num_beams=3, return_all_beams=False, length_penalty=1.0, early_stopping=False)
        >>> sampler_from_config(GenerationConfig(sampler="top_p", temperature=0))
        GreedySampler()
    """
    if isinstance(config.sampler, Sampler):
        return config.sampler
    cls = sampler_class(config.sampler or "greedy")
    if config.temperature == 0 and "temperature" in cls.config_options:
        cls = GreedySampler
    kwargs = {argument: getattr(config, option)
              for option, argument in cls.config_options.items()
              if getattr(config, option) is not None}
    return cls(**kwargs)


def config_from_options(generation_config: GenerationConfig | None,
                        options: Mapping[str, Any]) -> GenerationConfig:
    """generate's `generation_config=` with its keyword options applied, checked."""
    if generation_config is None:
        generation_config = GenerationConfig()
    elif not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config is {type(generation_config).__name__}; expected "
                        "a GenerationConfig")
    return generation_config.update(**options)


GenerationConfig.__doc__ = (GenerationConfig.__doc__ or "") + "\n    Options:\n" + "".join(
    f"        {f.name} (default {f.default!r}): {f.metadata['doc']}\n"
    for f in dataclasses.fields(GenerationConfig))
