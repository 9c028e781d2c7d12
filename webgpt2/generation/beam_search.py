"""Beam search, step for step as transformers' `generate(num_beams=..., do_sample=False)`.

Each prompt keeps `num_beams` running hypotheses. Every step runs all prompts' beams as one
batch through `call_with_cache`, takes log_softmax of the logits, applies the logits
processors to those log-probabilities (as transformers does in beam search), adds each
beam's running score and keeps the best continuations:

- the top K = max(2, 1 + number of stop tokens) * num_beams continuations over all of a
  prompt's beams are candidates (so that num_beams stay open even if the best end);
- a candidate that ends (a stop token, a stop string, or the row's last position) and is
  among the top num_beams becomes a finished hypothesis with score
  sum_log_probs / generated_length ** length_penalty; the best num_beams finished are kept;
- the best num_beams candidates that do not end are the next running beams, and the KV
  cache rows are reordered by their parent beams on the backend (`reorder_cache`);
- a prompt is done when (early_stopping=True) it has num_beams finished hypotheses, or
  (False / "never") transformers' heuristic says no running beam can beat the worst
  finished one, or every candidate ended.

Prompts of a ragged batch are independent: a prompt's beams are fed its own prompt
tokens until its prompt ends, then searched, so each gets what it would get alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from webgpt2.generation.decoding import (
    DecodeOptions,
    GenerationState,
    process_logits,
    start_decode,
)
from webgpt2.generation.samplers import SearchSampler, register_sampler

# transformers' stand-in for "impossible": added to scores that must never be chosen.
_NEVER = 1.0e9


class _Hypotheses:
    """One prompt's beam-search state (transformers' per-batch-item tensors, as lists)."""

    def __init__(self, row: int, state: GenerationState, sampler: BeamSampler,
                 options: DecodeOptions) -> None:
        nb = sampler.num_beams
        self.row = row
        self.prompt_length = state.prompt_lengths[row]
        self.prompt = state.token_ids[row][:self.prompt_length]
        self.row_end = state.row_ends[row]
        self.sampler = sampler
        self.options = options
        self.running: list[list[int]] = [[] for _ in range(nb)]
        # Only beam 0 is real at first: the others start at -1e9 so the first step does
        # not pick the same token num_beams times.
        self.running_scores = [0.0] + [-_NEVER] * (nb - 1)
        self.parents = list(range(nb))
        self.tails = [b""] * nb  # the last bytes of each beam's text, for stop strings
        self.finished: list[tuple[float, list[int]]] = []  # (score, tokens), best first
        self.improvable = True
        self.done = self.prompt_length >= self.row_end

    def step(self, values: list[list[float]], ids: list[list[int]], index: int,
             keep: int) -> None:
        """Choose the next running beams and finished hypotheses from each beam's top
        processed log-probabilities (`values`, `ids`) for position `index`."""
        sampler, options = self.sampler, self.options
        nb = sampler.num_beams
        candidates = [(self.running_scores[i] + v, i, t)
                      for i in range(nb) for v, t in zip(values[i], ids[i])]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        candidates = candidates[:keep]
        generated = index - self.prompt_length  # tokens before this step's
        last_position = index + 1 >= self.row_end
        matcher = options.stop_strings
        hits, tails = [], []
        for _, i, t in candidates:
            hit = last_position or options.is_stop_token(t)
            tail = b""
            if matcher is not None and options.token_bytes is not None:
                data = self.tails[i] + options.token_bytes(t)
                if matcher.find_end(data, len(self.tails[i])) is not None:
                    hit = True
                tail = data[max(0, len(data) - matcher.longest + 1):]
            hits.append(hit)
            tails.append(tail)

        full = len(self.finished) == nb and sampler.early_stopping is True
        if not full and self.improvable:
            penalty = (generated + 1) ** sampler.length_penalty
            new = [(candidates[j][0] / penalty, self.running[candidates[j][1]]
                    + [candidates[j][2]]) for j in range(min(nb, len(candidates))) if hits[j]]
            if new:
                # Stable: an earlier finished hypothesis wins a tie, as in transformers.
                self.finished = sorted(self.finished + new, key=lambda f: -f[0])[:nb]

        scores = [c[0] - (_NEVER if hit else 0.0) for c, hit in zip(candidates, hits)]
        order = sorted(range(len(candidates)), key=lambda j: (-scores[j], j))[:nb]
        self.running = [self.running[candidates[j][1]] + [candidates[j][2]] for j in order]
        self.running_scores = [scores[j] for j in order]
        self.parents = [candidates[j][1] for j in order]
        self.tails = [tails[j] for j in order]

        if sampler.early_stopping == "never" and sampler.length_penalty > 0:
            best_length = self.row_end - self.prompt_length
        else:
            best_length = generated + 1
        best_possible = self.running_scores[0] / best_length ** sampler.length_penalty
        missing = nb - len(self.finished)
        worst = min([s for s, _ in self.finished] + [-_NEVER] * missing)
        slots = [worst] * len(self.finished) + [-_NEVER] * missing
        self.improvable = self.improvable and any(best_possible > s for s in slots)
        self.done = (not self.improvable
                     or (len(self.finished) == nb and sampler.early_stopping is True)
                     or all(hits))

    def results(self) -> list[tuple[list[int], float]]:
        """(generated tokens, score) of the num_beams best hypotheses, best first."""
        out = [(tokens, score) for score, tokens in self.finished]
        for tokens, score in zip(self.running, self.running_scores):
            if len(out) >= self.sampler.num_beams:
                break
            # Only when generation could not start (no room for a token): the prompt.
            out.append((tokens, score))
        return out


class BeamSampler(SearchSampler):
    """Beam search: keep the `num_beams` most likely continuations, return the best one
    (or all of them, best first, with `return_all_beams=True`).

    Identical to transformers' `generate(num_beams=..., length_penalty=...,
    early_stopping=..., do_sample=False)`: finished hypotheses are scored
    sum_log_probs / generated_length ** length_penalty; early_stopping is True (stop when
    num_beams hypotheses finished), False (stop when a heuristic says none can improve) or
    "never" (the canonical, exhaustive criterion). Logits processors act on the
    log-probabilities. The cache is reordered by beam on the backend.

    With return_all_beams, `generate` returns, per prompt, a list of num_beams texts (or,
    for dict inputs, token rows, masks and "scores"), best first.

    Example:
        >>> from webgpt2 import GPT2Backbone, GPT2CausalLM
        >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=16,
        ...                         max_sequence_length=16, backend="cpu")
        >>> backbone.initialize_weights(seed=0)
        >>> lm = GPT2CausalLM(backbone)   # no tokenizer: token ids in and out
        >>> prompt = {"token_ids": [[1, 2, 3, 0, 0]],
        ...           "padding_mask": [[True, True, True, False, False]]}
        >>> out = lm.generate(prompt, sampler=BeamSampler(num_beams=3, return_all_beams=True),
        ...                   stop_token_ids=None)
        >>> len(out["token_ids"][0]), out["padding_mask"][0][0]
        (3, [True, True, True, True, True])
        >>> out["scores"][0] == sorted(out["scores"][0], reverse=True)
        True
    """

    name = "beam"
    streams = False
    config_options = {"num_beams": "num_beams", "length_penalty": "length_penalty",
                      "early_stopping": "early_stopping"}

    def __init__(self, num_beams: int = 5, return_all_beams: bool = False,
                 length_penalty: float = 1.0, early_stopping: bool | str = False,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams is {num_beams!r}; expected an integer >= 1")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
            raise ValueError(f"length_penalty is {length_penalty!r}; expected a number")
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping is {early_stopping!r}; expected True, False or "
                             "'never'")
        self.num_beams = num_beams
        self.return_all_beams = bool(return_all_beams)
        self.length_penalty = float(length_penalty)
        self.early_stopping = early_stopping

    def get_config(self) -> dict:
        return {"num_beams": self.num_beams, "return_all_beams": self.return_all_beams,
                "length_penalty": self.length_penalty, "early_stopping": self.early_stopping}

    def run(self, model: Any, state: GenerationState, options: DecodeOptions
            ) -> Iterator[tuple[list[int], list[bool]]]:
        backend = model.backend
        nb = self.num_beams
        batch = len(state.token_ids)
        groups = [_Hypotheses(r, state, self, options) for r in range(batch)]
        keep = max(2, 1 + len(set(options.stop_token_ids))) * nb
        index = min(state.prompt_lengths)
        if not all(g.done for g in groups):
            self._search(model, backend, state, options, groups, index, keep)
        self._write(state, options, groups)
        return
        yield  # a generator that yields nothing: beam search knows its tokens at the end

    def _search(self, model: Any, backend: Any, state: GenerationState, options: DecodeOptions,
                groups: list[_Hypotheses], index: int, keep: int) -> None:
        nb = self.num_beams
        prefill = index  # positions before it are the same in every beam of a prompt
        logits, last, cache = start_decode(model, state)
        backend.release(last)
        rows = [g.row for g in groups for _ in range(nb)]
        identity = list(range(len(rows)))
        beam_cache = backend.gather_batch(cache, rows)
        backend.release(cache)
        beam_logits = backend.gather_batch(logits, rows)
        backend.release(logits)
        try:
            while True:
                active = [g for g in groups if not g.done and index >= g.prompt_length]
                if active:
                    self._step(backend, options, groups, active, beam_logits, index, keep)
                if all(g.done for g in groups):
                    return
                tokens, parents = [], []
                for g in groups:
                    base = g.row * nb
                    if index < g.prompt_length or g.done:
                        # Inside its prompt, or finished (fed its padding, never read).
                        tokens += [state.token_ids[g.row][index]] * nb
                        parents += range(base, base + nb)
                    else:
                        tokens += [beam[-1] for beam in g.running]
                        parents += [base + p for p in g.parents]
                if parents != identity:
                    beam_cache = backend.reorder_cache(beam_cache, parents, prefill, index)
                step = backend.tensor([[t] for t in tokens], "int32")
                backend.release(beam_logits)
                beam_logits, hidden, beam_cache = model.call_with_cache(step, beam_cache, index)
                backend.release(step)
                backend.release(hidden)
                index += 1
        finally:
            backend.release(beam_cache)
            backend.release(beam_logits)

    def _step(self, backend: Any, options: DecodeOptions, groups: list[_Hypotheses],
              active: list[_Hypotheses], beam_logits: Any, index: int, keep: int) -> None:
        nb = self.num_beams
        sequences: list[list[int]] = []
        prompt_lengths: list[int] = []
        is_active = {g.row for g in active}
        for g in groups:
            for beam in g.running:
                if g.row in is_active:
                    sequences.append(g.prompt + beam)
                    prompt_lengths.append(g.prompt_length)
                else:
                    sequences.append([])
                    prompt_lengths.append(0)
        log_probs = backend.log_softmax(beam_logits)
        processed = process_logits(backend, options, log_probs, sequences, prompt_lengths)
        vocabulary_size = backend.shape(processed)[-1]
        values, ids = backend.top_k(processed, min(keep, vocabulary_size))
        if processed is not log_probs:
            backend.release(processed)
        backend.release(log_probs)
        for g in active:
            rows = slice(g.row * nb, (g.row + 1) * nb)
            g.step(values[rows], ids[rows], index, keep)

    def _write(self, state: GenerationState, options: DecodeOptions,
               groups: list[_Hypotheses]) -> None:
        if self.return_all_beams:
            # Every beam is returned; the rows keep their prompt and padding for them.
            state.beams = [g.results() for g in groups]
            return
        for g in groups:
            tokens = g.results()[0][0]
            start = g.prompt_length
            row, mask = state.token_ids[g.row], state.padding_mask[g.row]
            for j, t in enumerate(tokens):
                row[start + j] = t
                mask[start + j] = True
            if state.generated is not None and options.token_bytes is not None:
                for t in tokens:
                    state.generated[g.row].add(options.token_bytes(t))

register_sampler("beam", BeamSampler)
