"""The generate loop, written once for any model with `build_cache` and `call_with_cache`.

It follows KerasHub's `CausalLM.generate`: prompts are packed on the right (start token,
then tokens, then padding) into rows of `max_length`; the cache is filled once for the
positions every row has (the shortest prompt), then each step feeds one token per row:
the row's own prompt token while it is still inside its prompt, else the sampled one.
That makes a ragged batch give each row exactly what it would get alone.

Each step the logits processors (repetition penalty, no-repeat-n-gram, bad words, min new
tokens; see `logits_processors`) see each row's own tokens, and each row stops on its own:
a stop token, a stop string (see `stopping`) or its last position. Search samplers (beam,
contrastive) take over the whole decode through `SearchSampler.run` with the same state and
options.

Host data crossing per step: one token id per row in, one token id per row out (the
sampler runs on the backend).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from webgpt2.generation.config import (
    GenerationConfig,
    GenerationOptionError,
    config_from_options,
    sampler_from_config,
)
from webgpt2.generation.decoding import (
    DecodeOptions,
    GenerationState,
    accept_token,
    process_logits,
    start_decode,
)
from webgpt2.generation.inputs import check_work, state_from_packed, state_from_text
from webgpt2.generation.logits_processors import build_logits_processors
from webgpt2.generation.samplers import (
    GreedySampler,
    Sampler,
    SearchSampler,
    TopKSampler,
    TopPSampler,
)
from webgpt2.generation.stopping import GeneratedText, StopStringMatcher
from webgpt2.generation.streamers import TextStreamer, token_bytes_of

__all__ = ["GenerationState", "GenerativeTask"]


class GenerativeTask:
    """Mixin for models that generate text: `generate`, `stream`, `stream_tokens` and
    `generate_step`.

    The model provides `backend`, `preprocessor`, `max_sequence_length`,
    `vocabulary_size`, `cache_bytes(batch, cache_length)`,
    `build_cache(token_ids, cache_length, last_position_only)`, `call_with_cache(...)` and
    `project(hidden)`.

    Example:
        >>> from webgpt2 import GPT2CausalLM
        >>> issubclass(GPT2CausalLM, GenerativeTask)
        True
    """

    backend: Any
    preprocessor: Any

    # ---- public API -------------------------------------------------------------------
    def generate(self, inputs: Any, max_length: int | None = None, *,
                 generation_config: GenerationConfig | None = None,
                 stream: Callable[[str], None] | None = None, streamer: Any = None,
                 **options: Any) -> Any:
        """Generate text (or token ids) for one prompt or a batch.

        inputs: a string, a list of strings, or a dict with "token_ids" and "padding_mask"
        (lists of rows, already packed as the preprocessor's `generate_preprocess` does).
        max_length and the keyword options are `GenerationConfig`'s (max_new_tokens,
        stop_token_ids, stop_strings, sampler, temperature, top_k, top_p, num_beams, seed,
        repetition_penalty, ...: see it for each one's meaning and default); they override
        `generation_config`'s, and an unknown one is an error naming it.
        stream: called with each new piece of text as it is produced (one prompt only; not
        with beam search). streamer: an object with `put(token_ids)` and `end()` given each
        step's new ids of the one prompt (beam search puts them all when it finishes).
        Returns a string, a list of strings, or for dict inputs a dict of token ids and
        padding mask. With `BeamSampler(return_all_beams=True)` each prompt gives a list
        of num_beams results, best first (and dicts get "scores").

        Example:
            >>> from webgpt2 import GPT2CausalLM
            >>> lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en")
            >>> text = lm.generate("ROMEO:", max_new_tokens=12, repetition_penalty=1.3,
            ...                    no_repeat_ngram_size=2, stop_strings=["\\n"])
            >>> text.startswith("ROMEO:") and text.count("\\n") <= 1
            True
        """
        config = self._config(generation_config, max_length, options)
        if stream is None and streamer is None:
            return self._last(self._run(inputs, config, streaming=False))
        steps = self._steps(inputs, config, pieces_only=stream is not None)
        for text, ids in steps:
            if streamer is not None and ids:
                streamer.put(ids)
            if stream is not None and text:
                stream(text)
        if streamer is not None:
            streamer.end()
        return steps.result

    def stream(self, prompt: str, max_length: int | None = None, *,
               generation_config: GenerationConfig | None = None, **options: Any
               ) -> Iterator[str]:
        """Yield the generated text piece by piece as tokens are produced.

        Takes the options of `generate`. A piece never ends inside a multi-byte character,
        and with stop_strings the pieces join to exactly the text `generate` returns after
        the prompt. Beam search, which knows its text only at the end, cannot stream.

        Example:
            >>> from webgpt2 import GPT2CausalLM
            >>> lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en")
            >>> pieces = list(lm.stream("ROMEO:", max_new_tokens=6))
            >>> "".join(pieces) == lm.generate("ROMEO:", max_new_tokens=6)[len("ROMEO:"):]
            True
        """
        config = self._config(generation_config, max_length, options)
        steps = iter(self._steps(prompt, config, pieces_only=True))
        try:
            for text, _ in steps:
                if text:
                    yield text
        finally:
            steps.close()  # type: ignore[attr-defined]  # frees the cache when left early

    def stream_tokens(self, prompt: str, max_length: int | None = None, *,
                      generation_config: GenerationConfig | None = None, **options: Any
                      ) -> Iterator[tuple[str, list[int]]]:
        """Yield (text, token_ids) as tokens are produced: each step's new ids (the stop
        token included) with the text they made safe to show, which may be "" (see
        `TextStreamer`); a last ("...", []) gives text held back to the end, if any.

        Takes the options of `generate`. The texts join as `stream`'s pieces do and the ids
        are the generated ones; beam search yields all of its ids once, when it finishes.

        Example:
            >>> from webgpt2 import GPT2CausalLM
            >>> lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en")
            >>> steps = list(lm.stream_tokens("ROMEO:", max_new_tokens=6))
            >>> [len(ids) for _, ids in steps]
            [1, 1, 1, 1, 1, 1]
            >>> "".join(t for t, _ in steps) == "".join(lm.stream("ROMEO:", max_new_tokens=6))
            True
        """
        config = self._config(generation_config, max_length, options)
        yield from self._steps(prompt, config, pieces_only=False)

    def generate_step(self, inputs: dict, stop_token_ids: Sequence[int] | None = None,
                      end_token_id: int | None = None, *,
                      generation_config: GenerationConfig | None = None,
                      **options: Any) -> dict:
        """Fill a packed batch: KerasHub's `generate_step` on token ids.

        inputs: {"token_ids": [[...]], "padding_mask": [[...]]}, every row of the same
        length (that length is max_length). Returns the same dict with the generated ids
        filled in and a padding mask that is True up to and including each row's stop token.
        Takes generate's other options too (sampler, seed, logits processors, ...).

        Example:
            >>> from webgpt2 import GPT2Backbone, GPT2CausalLM
            >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
            ...                         hidden_dim=8, intermediate_dim=16,
            ...                         max_sequence_length=16, backend="cpu")
            >>> backbone.initialize_weights(seed=0)
            >>> lm = GPT2CausalLM(backbone)   # no tokenizer: token ids in and out
            >>> out = lm.generate_step({"token_ids": [[1, 2, 0, 0]],
            ...                         "padding_mask": [[True, True, False, False]]},
            ...                        repetition_penalty=1.5)
            >>> out["padding_mask"], len(out["token_ids"][0])
            ([[True, True, True, True]], 4)
        """
        if end_token_id is not None:
            stop_token_ids = [end_token_id]
        options = {**options, "stop_token_ids": stop_token_ids}
        config = self._config(generation_config, None, options)
        return self._last(self._run(inputs, config, streaming=False))

    # ---- the loop ---------------------------------------------------------------------
    @staticmethod
    def _config(generation_config: GenerationConfig | None, max_length: int | None,
                options: dict) -> GenerationConfig:
        if max_length is not None:
            options = {**options, "max_length": max_length}
        return config_from_options(generation_config, options)

    @staticmethod
    def _last(events: Iterator[tuple[str, Any]]) -> Any:
        result = None
        for kind, value in events:
            if kind == "result":
                result = value
        return result

    def _steps(self, prompt: Any, config: GenerationConfig, pieces_only: bool) -> _Steps:
        """(text, ids) per generated step of one prompt; `result` is generate's after."""
        if not isinstance(prompt, str):
            raise ValueError("streaming takes a single prompt string; got "
                             f"{type(prompt).__name__}")
        return _Steps(self._run(prompt, config, streaming=True, pieces_only=pieces_only),
                      TextStreamer(self._require_preprocessor().tokenizer,
                                   config.stop_strings))

    def _run(self, inputs: Any, config: GenerationConfig, streaming: bool,
             pieces_only: bool = False) -> Iterator[tuple[str, Any]]:
        """Events of one generation: ("ids", a step's new ids of the one prompt) while
        streaming, then ("result", what generate returns)."""
        sampler = sampler_from_config(config)
        single = isinstance(inputs, str)
        is_dict = isinstance(inputs, dict)
        searches_to_the_end = isinstance(sampler, SearchSampler) and not sampler.streams
        if streaming and searches_to_the_end and (
                pieces_only or getattr(sampler, "return_all_beams", False)):
            raise ValueError(f"the {sampler.name!r} sampler knows its tokens only at the end; "
                             "it cannot stream (call generate without stream)")
        decode_options = self._decode_options(config)
        if is_dict:
            if config.max_length is not None:
                raise ValueError("max_length is the packed rows' length for dict inputs; "
                                 "pack them to the length you want")
            state = state_from_packed(self, inputs, config.max_new_tokens)
        else:
            state = state_from_text(self, inputs, config.max_length, config.max_new_tokens)
        check_work(self, sampler, len(state.token_ids), len(state.token_ids[0]),
                         len(decode_options.stop_token_ids))
        if decode_options.stop_strings is not None:
            state.generated = [GeneratedText(decode_options.stop_strings)
                               for _ in state.token_ids]
        for tokens, forced in self._decode(state, decode_options, sampler):
            if streaming and not forced[0]:
                yield "ids", [tokens[0]]
        if streaming and searches_to_the_end:
            n = state.prompt_lengths[0]
            yield "ids", [t for t, m in zip(state.token_ids[0][n:], state.padding_mask[0][n:])
                          if m]
        yield "result", self._result(state, decode_options, single, is_dict,
                                     config.strip_prompt)

    def _decode_options(self, config: GenerationConfig) -> DecodeOptions:
        stop_token_ids = config.stop_token_ids
        if stop_token_ids == "auto":
            stop_token_ids = [self._require_preprocessor().tokenizer.end_token_id]
        stop_token_ids = tuple(stop_token_ids or ())
        for t in stop_token_ids:
            if isinstance(t, bool) or not isinstance(t, int) \
                    or not 0 <= t < self.vocabulary_size:
                raise GenerationOptionError(
                    "stop_token_ids", f"holds {t!r}; expected token ids in "
                    f"[0, {self.vocabulary_size})")
        matcher = None
        token_bytes = None
        if config.stop_strings is not None:
            matcher = StopStringMatcher(config.stop_strings)
            token_bytes = token_bytes_of(self._require_preprocessor().tokenizer)
        processors = build_logits_processors(
            repetition_penalty=config.repetition_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            bad_words_ids=config.bad_words_ids,
            min_new_tokens=config.min_new_tokens,
            eos_token_ids=stop_token_ids,
            logits_processors=config.logits_processors,
        )
        return DecodeOptions(stop_token_ids=stop_token_ids, processors=processors,
                             stop_strings=matcher, token_bytes=token_bytes, seed=config.seed)

    def _decode(self, state: GenerationState, options: DecodeOptions, sampler: Sampler
                ) -> Iterator[tuple[list[int], list[bool]]]:
        """Run the model over `state` in place, yielding each step's tokens and which rows
        were forced (still inside their prompt)."""
        if min(state.prompt_lengths) == 0:
            raise ValueError("a prompt row is empty: each needs at least one token (the "
                             "preprocessor adds the start token)")
        max_length = len(state.token_ids[0])
        # After a row stops, its remaining positions are no longer real tokens.
        for r, n in enumerate(state.prompt_lengths):
            for i in range(n, max_length):
                state.padding_mask[r][i] = False
        if isinstance(sampler, SearchSampler):
            yield from sampler.run(self, state, options)
            return
        yield from self._sample_tokens(state, options, sampler)

    def _sample_tokens(self, state: GenerationState, options: DecodeOptions, sampler: Sampler
                       ) -> Iterator[tuple[list[int], list[bool]]]:
        """The token loop: one forward pass and one sampler call per step."""
        backend = self.backend
        batch = len(state.token_ids)
        max_length = len(state.token_ids[0])
        index = min(state.prompt_lengths)
        seed = sampler.seed if options.seed is None else options.seed
        rngs = None
        if sampler.uses_randomness:
            # One stream per row, all from the same seed: a row draws the same numbers
            # whether it is generated alone or in a batch.
            base = random.Random(seed).random() if seed is None else seed
            rngs = [random.Random(base) for _ in range(batch)]
        done = [state.prompt_lengths[r] >= state.row_ends[r] for r in range(batch)]
        if all(done):
            return
        # Plain greedy steps take their tokens from the hidden states (the backend may skip
        # logits: Backend.reverse_embedding_argmax) and are all alike, so a backend may
        # replay them without this Python (Backend.step_replayer).
        greedy = type(sampler) is GreedySampler and not options.processors
        # Top-k sampling reads only the k largest logits of a row: the backend may leave the
        # others out (-inf) when nothing (a logits processor) changes them first.
        cut = 0
        if type(sampler) in (TopKSampler, TopPSampler) and not options.processors:
            cut = sampler.k or 0
        logits, last, cache = start_decode(self, state, logits=not greedy, top_k=cut)
        replayer, replayed = None, []
        if greedy:
            replayed = self.lm_head.argmax(last)
            replayer = backend.step_replayer()
        backend.release(last)

        def forward(tokens: list[int], index: int) -> Any:
            """The logits of feeding `tokens` at cache index `index` (the cache in place)."""
            step = backend.tensor([[t] for t in tokens], "int32")
            logits, hidden, _ = self.call_with_cache(step, cache, index, top_k=cut)
            backend.release(step)
            backend.release(hidden)
            return logits

        def greedy_step(tokens: list[int], index: int) -> list[int]:
            step = backend.tensor([[t] for t in tokens], "int32")
            try:
                return self.greedy_next_tokens(step, cache, index)
            finally:
                backend.release(step)

        try:
            while True:
                forced = [index < state.prompt_lengths[r] for r in range(batch)]
                live = [not (forced[r] or done[r]) for r in range(batch)]
                step_rngs = [rngs[r] if live[r] and rngs is not None else None
                             for r in range(batch)]
                if logits is None:  # a greedy step's tokens, already sampled
                    sampled = replayed
                else:
                    processed = logits
                    if options.processors:
                        processed = process_logits(
                            backend, options, logits,
                            [state.sequence(r, index) if live[r] else [] for r in range(batch)],
                            state.prompt_lengths)
                    sampled = sampler.next_tokens(backend, processed, step_rngs)
                    if processed is not logits:
                        backend.release(processed)
                    backend.release(logits)
                for r in range(batch):
                    if live[r] and accept_token(state, options, r, index, sampled[r]):
                        done[r] = True
                # A finished row is fed its padding: its positions are masked out anyway.
                tokens = [state.token_ids[r][index] for r in range(batch)]
                yield tokens, forced
                index += 1
                if all(done) or index >= max_length:
                    return
                if not greedy:
                    logits = forward(tokens, index - 1)
                elif replayer is None:
                    replayed = greedy_step(tokens, index - 1)
                else:
                    replayed = replayer.run(lambda: greedy_step(tokens, index - 1), index - 1,
                                            tokens)
        finally:
            backend.release(cache)

    # ---- results ----------------------------------------------------------------------
    def _result(self, state: GenerationState, options: DecodeOptions, single: bool,
                is_dict: bool, strip_prompt: bool) -> Any:
        if state.beams is not None:
            return self._beam_result(state, options, single, is_dict, strip_prompt)
        packed = {"token_ids": state.token_ids, "padding_mask": state.padding_mask}
        if strip_prompt:
            packed = _strip(state.token_ids, state.padding_mask, state.prompt_lengths)
        if is_dict:
            return packed
        texts = self._texts(packed)
        if state.generated is not None:
            for r, row in enumerate(state.generated):
                if row.cut:
                    texts[r] = self._cut_text(packed["token_ids"][r],
                                              packed["padding_mask"][r], row.cut)
        return texts[0] if single else texts

    def _beam_result(self, state: GenerationState, options: DecodeOptions, single: bool,
                     is_dict: bool, strip_prompt: bool) -> Any:
        """Every beam of every prompt, best first (BeamSampler(return_all_beams=True))."""
        per_prompt = []
        for r, beams in enumerate(state.beams or []):
            n = state.prompt_lengths[r]
            width = len(state.token_ids[r])
            prompt = state.token_ids[r][:n]
            ids, masks, scores, cuts = [], [], [], []
            for tokens, score in beams:
                filler = state.token_ids[r][n + len(tokens):]
                ids.append(prompt + tokens + filler)
                masks.append([True] * (n + len(tokens)) + [False] * (width - n - len(tokens)))
                scores.append(score)
                cut = 0
                if options.stop_strings is not None and options.token_bytes is not None:
                    text = GeneratedText(options.stop_strings)
                    for t in tokens:
                        text.add(options.token_bytes(t))
                    cut = text.cut
                cuts.append(cut)
            if strip_prompt:
                stripped = _strip(ids, masks, [n] * len(ids))
                ids, masks = stripped["token_ids"], stripped["padding_mask"]
            per_prompt.append((ids, masks, scores, cuts))
        if is_dict:
            return {"token_ids": [p[0] for p in per_prompt],
                    "padding_mask": [p[1] for p in per_prompt],
                    "scores": [p[2] for p in per_prompt]}
        texts = []
        for ids, masks, _, cuts in per_prompt:
            beam_texts = self._texts({"token_ids": ids, "padding_mask": masks})
            for b, cut in enumerate(cuts):
                if cut:
                    beam_texts[b] = self._cut_text(ids[b], masks[b], cut)
            texts.append(beam_texts)
        return texts[0] if single else texts

    def _texts(self, packed: dict) -> list[str]:
        texts = self._require_preprocessor().generate_postprocess(packed)
        return [texts] if isinstance(texts, str) else list(texts)

    def _cut_text(self, token_ids: list[int], padding_mask: list[bool], cut: int) -> str:
        """A row's text without its last `cut` bytes (what follows its stop string)."""
        tokenizer = self._require_preprocessor().tokenizer
        special = set(tokenizer.special_token_ids)
        kept = [t for t, m in zip(token_ids, padding_mask) if m and t not in special]
        data = tokenizer.ids_to_bytes(kept)
        return data[:len(data) - cut].decode("utf-8", errors="replace")

    # ---- packing ----------------------------------------------------------------------
    def _require_preprocessor(self) -> Any:
        if self.preprocessor is None:
            raise ValueError("this model has no preprocessor: pass token ids as a dict "
                             "{'token_ids', 'padding_mask'} or attach a GPT2CausalLMPreprocessor")
        return self.preprocessor

def _strip(token_ids: list[list[int]], padding_mask: list[list[bool]],
           prompt_lengths: list[int]) -> dict:
    """Rows with their prompts moved out of the way: generated tokens first."""
    return {
        "token_ids": [row[n:] + row[:n] for row, n in zip(token_ids, prompt_lengths)],
        "padding_mask": [row[n:] + [False] * n for row, n in zip(padding_mask, prompt_lengths)],
    }


class _Steps:
    """A generation's (text, ids) steps; after them, `result` is what generate returns.

    Closing it (or leaving a for loop over it early) ends the generation and frees its
    cache on the backend."""

    def __init__(self, events: Iterator[tuple[str, Any]], streamer: TextStreamer) -> None:
        self._events = events
        self._streamer = streamer
        self.result: Any = None

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        try:
            for kind, value in self._events:
                if kind == "ids":
                    yield self._streamer.put(value), value
                else:
                    self.result = value
            rest = self._streamer.end()
            if rest:
                yield rest, []
        finally:
            self._events.close()
