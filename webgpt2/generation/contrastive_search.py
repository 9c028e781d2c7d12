"""Contrastive search (Su et al., 2022, "A Contrastive Framework for Neural Text
Generation"), as transformers implemented it (`penalty_alpha`, `top_k`).

At each step, for each row: the k most probable next tokens v (after the logits
processors) are candidates; all rows' candidates run through the model together, as one
[batch * k, 1] `call_with_cache`, which gives each candidate's last hidden state h_v. The
chosen token maximises

    (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j)

over the candidates, where h_j are the hidden states (after the final layer norm) of the
row's tokens so far: a candidate whose representation repeats the context is penalised
(the degeneration penalty). The candidate run's logits and cache entries are the chosen
token's, so each step costs one forward pass of batch * k rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from webgpt2.generation.decoding import (
    DecodeOptions,
    GenerationState,
    accept_token,
    process_logits,
    start_decode,
)
from webgpt2.generation.samplers import SearchSampler, register_sampler


class ContrastiveSampler(SearchSampler):
    """Contrastive search with `k` candidates and degeneration penalty weight `alpha`
    (transformers' `top_k` and `penalty_alpha`; KerasHub's `ContrastiveSampler`).
    alpha = 0 is greedy search.

    Example:
        >>> from webgpt2 import GPT2Backbone, GPT2CausalLM
        >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=16,
        ...                         max_sequence_length=16, backend="cpu")
        >>> backbone.initialize_weights(seed=0)
        >>> lm = GPT2CausalLM(backbone)   # no tokenizer: token ids in and out
        >>> prompt = {"token_ids": [[1, 2, 3, 0, 0]],
        ...           "padding_mask": [[True, True, True, False, False]]}
        >>> out = lm.generate(prompt, sampler=ContrastiveSampler(k=4, alpha=0.6),
        ...                   stop_token_ids=None)
        >>> out["token_ids"][0][:3], out["padding_mask"][0]
        ([1, 2, 3], [True, True, True, True, True])
    """

    name = "contrastive"
    config_options = {"top_k": "k", "penalty_alpha": "alpha"}

    def __init__(self, k: int = 5, alpha: float = 0.6, seed: int | None = None) -> None:
        super().__init__(seed)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k is {k!r}; expected an integer >= 1")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha is {alpha!r}; expected a number in [0, 1]")
        self.k = k
        self.alpha = float(alpha)

    def get_config(self) -> dict:
        return {"k": self.k, "alpha": self.alpha}

    def run(self, model: Any, state: GenerationState, options: DecodeOptions
            ) -> Iterator[tuple[list[int], list[bool]]]:
        backend = model.backend
        batch = len(state.token_ids)
        max_length = len(state.token_ids[0])
        index = min(state.prompt_lengths)
        done = [state.prompt_lengths[r] >= state.row_ends[r] for r in range(batch)]
        if all(done):
            return
        logits, context, cache = start_decode(model, state, all_positions=True)  # [B, index, H]
        vocabulary_size = backend.shape(logits)[-1]
        k = min(self.k, vocabulary_size)
        # Every row gets k cache rows: candidate j of row r is row r * k + j.
        expanded = backend.gather_batch(cache, [r for r in range(batch) for _ in range(k)])
        backend.release(cache)
        cache = expanded
        try:
            while True:
                forced = [index < state.prompt_lengths[r] for r in range(batch)]
                searching = [not (forced[r] or done[r]) for r in range(batch)]
                values, top_ids = self._top_candidates(backend, state, options, logits, index,
                                                       searching, k)
                backend.release(logits)
                candidates = [top_ids[r] if searching[r] else [state.token_ids[r][index]] * k
                              for r in range(batch)]
                step = backend.tensor([[t] for row in candidates for t in row], "int32")
                candidate_logits, hidden, cache = model.call_with_cache(step, cache, index)
                backend.release(step)
                penalties = backend.max_cosine_similarity(context, hidden)  # [B * k]
                chosen = []
                for r in range(batch):
                    best = 0
                    if searching[r]:
                        scores = [(1.0 - self.alpha) * math.exp(values[r][j])
                                  - self.alpha * penalties[r * k + j] for j in range(k)]
                        best = max(range(k), key=lambda j: (scores[j], -j))
                    chosen.append(best)
                tokens = []
                for r in range(batch):
                    token = candidates[r][chosen[r]]
                    if searching[r] and accept_token(state, options, r, index, token):
                        done[r] = True
                    tokens.append(state.token_ids[r][index])
                yield tokens, forced
                index += 1
                rows = [r * k + chosen[r] for r in range(batch)]
                if all(done) or index >= max_length:
                    backend.release(candidate_logits)
                    backend.release(hidden)
                    return
                logits = backend.gather_batch(candidate_logits, rows)
                picked = backend.gather_batch(hidden, rows)  # [B, 1, H]
                backend.release(candidate_logits)
                backend.release(hidden)
                grown = backend.concatenate([context, picked], axis=1)
                backend.release(context)
                backend.release(picked)
                context = grown
                # The chosen candidate's keys and values at `index` become its row's.
                cache = backend.reorder_cache(cache, [row for row in rows for _ in range(k)],
                                              index - 1, index)
        finally:
            backend.release(cache)
            backend.release(context)

    def _top_candidates(self, backend: Any, state: GenerationState, options: DecodeOptions,
                        logits: Any, index: int, searching: list[bool], k: int
                        ) -> tuple[list[list[float]], list[list[int]]]:
        """Each row's k most probable tokens after the processors: (log-probs, ids)."""
        sequences = [state.sequence(r, index) if searching[r] else []
                     for r in range(len(searching))]
        processed = process_logits(backend, options, logits, sequences, state.prompt_lengths)
        log_probs = backend.log_softmax(processed)
        if processed is not logits:
            backend.release(processed)
        values, ids = backend.top_k(log_probs, k)
        backend.release(log_probs)
        return values, ids


register_sampler("contrastive", ContrastiveSampler)
