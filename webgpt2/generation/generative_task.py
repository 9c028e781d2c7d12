"""The generate loop, written once for any model with `build_cache` and `call_with_cache`.

It follows KerasHub's `CausalLM.generate`: prompts are packed on the right (start token,
then tokens, then padding) into rows of `max_length`; the cache is filled once for the
positions every row has (the shortest prompt), then each step feeds one token per row:
the row's own prompt token while it is still inside its prompt, else the sampled one.
That makes a ragged batch give each row exactly what it would get alone.

Host data crossing per step: one token id per row in, one token id per row out (the
sampler runs on the backend).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from webgpt2.generation.samplers import Sampler, get_sampler


@dataclass
class GenerationState:
    """The rows being generated: token ids and masks as plain lists."""

    token_ids: list[list[int]]
    padding_mask: list[list[bool]]  # True where the position holds a real token
    prompt_lengths: list[int]
    row_ends: list[int]  # each row stops before this position


class GenerativeTask:
    """Mixin for models that generate text: `generate`, `stream` and `generate_step`.

    The model provides `backend`, `preprocessor`, `max_sequence_length`,
    `build_cache(token_ids, cache_length)`, `call_with_cache(...)` and `project(hidden)`.
    """

    backend: Any
    preprocessor: Any

    # ---- public API -------------------------------------------------------------------
    def generate(self, inputs: Any, max_length: int | None = None, *,
                 max_new_tokens: int | None = None,
                 stop_token_ids: Sequence[int] | str | None = "auto",
                 sampler: str | Sampler | None = None, seed: int | None = None,
                 strip_prompt: bool = False,
                 stream: Callable[[str], None] | None = None) -> Any:
        """Generate text (or token ids) for one prompt or a batch.

        inputs: a string, a list of strings, or a dict with "token_ids" and "padding_mask"
        (lists of rows, already packed as the preprocessor's `generate_preprocess` does).
        max_length: total length of prompt plus generation (KerasHub's meaning); by default
        the preprocessor's sequence_length. max_new_tokens: new tokens per row instead.
        stop_token_ids: "auto" (the tokenizer's end token), None, or a list of ids.
        sampler: a name ("greedy", "random", "top_k", "top_p") or a Sampler object.
        seed: makes random samplers reproducible (overrides the sampler's own seed).
        stream: called with each new piece of text as it is produced (one prompt only).
        Returns a string, a list of strings, or for dict inputs a dict of token ids and
        padding mask.
        """
        pieces = self._run(inputs, max_length, max_new_tokens, stop_token_ids, sampler, seed,
                           strip_prompt, streaming=stream is not None)
        result = None
        for kind, value in pieces:
            if kind == "text":
                stream(value)  # type: ignore[misc]
            else:
                result = value
        return result

    def stream(self, prompt: str, max_length: int | None = None, **options: Any
               ) -> Iterator[str]:
        """Yield the generated text piece by piece as tokens are produced.

        Takes the options of `generate`. A piece never ends inside a multi-byte character.
        """
        for kind, value in self._run(prompt, max_length, options.pop("max_new_tokens", None),
                                     options.pop("stop_token_ids", "auto"),
                                     options.pop("sampler", None), options.pop("seed", None),
                                     options.pop("strip_prompt", False), streaming=True,
                                     **options):
            if kind == "text":
                yield value

    def generate_step(self, inputs: dict, stop_token_ids: Sequence[int] | None = None,
                      end_token_id: int | None = None, sampler: str | Sampler | None = None,
                      seed: int | None = None, max_new_tokens: int | None = None) -> dict:
        """Fill a packed batch: KerasHub's `generate_step` on token ids.

        inputs: {"token_ids": [[...]], "padding_mask": [[...]]}, every row of the same
        length (that length is max_length). Returns the same dict with the generated ids
        filled in and a padding mask that is True up to and including each row's stop token.
        """
        if end_token_id is not None:
            stop_token_ids = [end_token_id]
        _check_max_new_tokens(max_new_tokens)
        state = self._state_from_packed(inputs, max_new_tokens)
        for _ in self._decode(state, stop_token_ids, get_sampler(sampler), seed):
            pass
        return {"token_ids": state.token_ids, "padding_mask": state.padding_mask}

    # ---- the loop ---------------------------------------------------------------------
    def _run(self, inputs: Any, max_length: int | None, max_new_tokens: int | None,
             stop_token_ids: Any, sampler: Any, seed: int | None, strip_prompt: bool,
             streaming: bool, **unexpected: Any) -> Iterator[tuple[str, Any]]:
        if unexpected:
            raise TypeError(f"unexpected generate options: {sorted(unexpected)}")
        _check_max_new_tokens(max_new_tokens)
        sampler = get_sampler(sampler)
        single = isinstance(inputs, str)
        is_dict = isinstance(inputs, dict)
        if streaming and not single:
            raise ValueError("streaming takes a single prompt string; got "
                             f"{type(inputs).__name__}")
        if stop_token_ids == "auto":
            stop_token_ids = [self._require_preprocessor().tokenizer.end_token_id]
        if is_dict:
            if max_length is not None:
                raise ValueError("max_length is the packed rows' length for dict inputs; "
                                 "pack them to the length you want")
            state = self._state_from_packed(inputs, max_new_tokens)
        else:
            state = self._state_from_text(inputs, max_length, max_new_tokens)
        detokenizer = None
        if streaming:
            detokenizer = self._require_preprocessor().tokenizer.streaming_detokenizer()
        for tokens, forced in self._decode(state, stop_token_ids, sampler, seed):
            if detokenizer is not None and not forced[0]:
                if stop_token_ids and tokens[0] in stop_token_ids:
                    continue
                text = detokenizer.put(tokens[0])
                if text:
                    yield "text", text
        if detokenizer is not None:
            rest = detokenizer.flush()
            if rest:
                yield "text", rest
        packed = {"token_ids": state.token_ids, "padding_mask": state.padding_mask}
        if strip_prompt:
            packed = {
                "token_ids": [row[n:] + row[:n] for row, n in
                              zip(state.token_ids, state.prompt_lengths)],
                "padding_mask": [row[n:] + [False] * n for row, n in
                                 zip(state.padding_mask, state.prompt_lengths)],
            }
        if is_dict:
            yield "result", packed
            return
        texts = self._require_preprocessor().generate_postprocess(packed)
        if isinstance(texts, str):
            texts = [texts]
        yield "result", texts[0] if single else list(texts)

    def _decode(self, state: GenerationState, stop_token_ids: Sequence[int] | None,
                sampler: Sampler, seed: int | None
                ) -> Iterator[tuple[list[int], list[bool]]]:
        """Run the model over `state` in place, yielding each step's tokens and which rows
        were forced (still inside their prompt)."""
        backend = self.backend
        batch = len(state.token_ids)
        max_length = len(state.token_ids[0])
        stops = set(stop_token_ids or ())
        index = min(state.prompt_lengths)
        if index == 0:
            raise ValueError("a prompt row is empty: each needs at least one token (the "
                             "preprocessor adds the start token)")
        if seed is None:
            seed = sampler.seed
        rngs = None
        if sampler.uses_randomness:
            # One stream per row, all from the same seed: a row draws the same numbers
            # whether it is generated alone or in a batch.
            base = random.Random(seed).random() if seed is None else seed
            rngs = [random.Random(base) for _ in range(batch)]
        done = [state.prompt_lengths[r] >= state.row_ends[r] for r in range(batch)]
        # After a row stops, its remaining positions are no longer real tokens.
        for r in range(batch):
            for i in range(state.prompt_lengths[r], max_length):
                state.padding_mask[r][i] = False
        if all(done):
            return
        ids = backend.tensor([row[:index] for row in state.token_ids], "int32")
        hidden, cache = self.build_cache(ids, cache_length=max_length)
        backend.release(ids)
        last = backend.select_position(hidden, index - 1)
        logits = self.project(last)
        backend.release(hidden)
        try:
            while True:
                forced = [index < state.prompt_lengths[r] for r in range(batch)]
                step_rngs = [None if (forced[r] or done[r] or rngs is None) else rngs[r]
                             for r in range(batch)]
                sampled = sampler.next_tokens(backend, logits, step_rngs)
                backend.release(logits)
                for r in range(batch):
                    if not forced[r] and not done[r]:
                        state.token_ids[r][index] = sampled[r]
                        state.padding_mask[r][index] = True
                        if sampled[r] in stops or index + 1 >= state.row_ends[r]:
                            done[r] = True
                # A finished row is fed its padding: its positions are masked out anyway.
                tokens = [state.token_ids[r][index] for r in range(batch)]
                yield tokens, forced
                index += 1
                if all(done) or index >= max_length:
                    return
                step = backend.tensor([[t] for t in tokens], "int32")
                logits, hidden, cache = self.call_with_cache(step, cache, index - 1)
                backend.release(step)
                backend.release(hidden)
        finally:
            backend.release(cache)

    # ---- packing ----------------------------------------------------------------------
    def _require_preprocessor(self) -> Any:
        if self.preprocessor is None:
            raise ValueError("this model has no preprocessor: pass token ids as a dict "
                             "{'token_ids', 'padding_mask'} or attach a GPT2CausalLMPreprocessor")
        return self.preprocessor

    def _state_from_text(self, inputs: Any, max_length: int | None,
                         max_new_tokens: int | None) -> GenerationState:
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("inputs is an empty list; expected at least one prompt")
            for item in inputs:
                if not isinstance(item, str):
                    raise TypeError(f"prompt must be a string; got {type(item).__name__}")
        elif not isinstance(inputs, str):
            raise TypeError("inputs must be a string, a list of strings or a dict of token "
                            f"ids; got {type(inputs).__name__}")
        preprocessor = self._require_preprocessor()
        limit = self.max_sequence_length
        if max_length is not None:
            self._check_max_length(max_length)
        packed = preprocessor.generate_preprocess(inputs, sequence_length=limit)
        token_ids = packed["token_ids"]
        if isinstance(token_ids[0], int):
            token_ids, mask = [token_ids], [packed["padding_mask"]]
        else:
            mask = packed["padding_mask"]
        lengths = [sum(1 for m in row if m) for row in mask]
        if max_length is None:
            if max_new_tokens is not None:
                max_length = min(limit, max(lengths) + max_new_tokens)
            else:
                max_length = min(limit, getattr(preprocessor, "sequence_length", limit))
        longest = max(lengths)
        if longest > max_length:
            raise ValueError(f"prompt is {longest} tokens; max_length {max_length} leaves no "
                             "room for it")
        if max_new_tokens is not None and max(lengths) + max_new_tokens > limit:
            raise ValueError(
                f"prompt of {longest} tokens plus max_new_tokens {max_new_tokens} exceeds this "
                f"model's max_sequence_length {limit}"
            )
        token_ids = [list(row[:max_length]) for row in token_ids]
        mask = [list(row[:max_length]) for row in mask]
        return self._state(token_ids, mask, max_new_tokens)

    def _state_from_packed(self, inputs: dict, max_new_tokens: int | None) -> GenerationState:
        try:
            token_ids = [list(row) for row in inputs["token_ids"]]
            mask = [[bool(m) for m in row] for row in inputs["padding_mask"]]
        except (KeyError, TypeError) as e:
            raise ValueError("inputs must be a dict with 'token_ids' and 'padding_mask' "
                             f"lists of rows ({e})") from None
        lengths = {len(row) for row in token_ids} | {len(row) for row in mask}
        if not token_ids or len(lengths) != 1 or len(mask) != len(token_ids):
            raise ValueError("token_ids and padding_mask must be non-empty rows of one length")
        self._check_max_length(lengths.pop())
        return self._state(token_ids, mask, max_new_tokens)

    def _check_max_length(self, max_length: int) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length is {max_length!r}; expected a positive integer")
        if max_length > self.max_sequence_length:
            raise ValueError(f"max_length {max_length} exceeds this model's "
                             f"max_sequence_length {self.max_sequence_length}")

    def _state(self, token_ids: list[list[int]], mask: list[list[bool]],
               max_new_tokens: int | None) -> GenerationState:
        max_length = len(token_ids[0])
        lengths = []
        for row in mask:
            # Right padding: the prompt is the leading run of True.
            n = 0
            while n < len(row) and row[n]:
                n += 1
            lengths.append(n)
        ends = [max_length if max_new_tokens is None else min(max_length, n + max_new_tokens)
                for n in lengths]
        return GenerationState(token_ids, mask, lengths, ends)


def _check_max_new_tokens(max_new_tokens: int | None) -> None:
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 0):
        raise ValueError(f"max_new_tokens is {max_new_tokens!r}; expected an integer >= 0")
