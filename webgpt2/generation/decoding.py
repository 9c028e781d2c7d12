"""What a decoding strategy works on: the rows being generated and the options that stop
and shape them. The generate loop (`generative_task`) and the search samplers (beam,
contrastive) share these, so every strategy stops rows and processes logits the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from webgpt2.generation.logits_processors import LogitsProcessorList
from webgpt2.generation.stopping import GeneratedText, StopStringMatcher


@dataclass
class GenerationState:
    """The rows being generated, as plain lists, filled in place by a decoding strategy.

    Rows are right padded (KerasHub's packing): row r's prompt is token_ids[r][:n] with
    n = prompt_lengths[r], and generation writes positions n.. up to row_ends[r] (exclusive)
    at most. padding_mask is True where a position holds a real token.
    """

    token_ids: list[list[int]]
    padding_mask: list[list[bool]]
    prompt_lengths: list[int]
    row_ends: list[int]  # each row stops before this position
    generated: list[GeneratedText] | None = None  # per row, when text is tracked
    # Beam search with return_all_beams: per row, (generated tokens, score) best first.
    beams: list[list[tuple[list[int], float]]] | None = None

    def sequence(self, row: int, index: int) -> list[int]:
        """Row `row`'s tokens before position `index` (what a processor sees)."""
        return self.token_ids[row][:index]


@dataclass
class DecodeOptions:
    """How rows stop and how logits are processed, shared by every decoding strategy."""

    stop_token_ids: tuple[int, ...] = ()
    processors: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    stop_strings: StopStringMatcher | None = None
    token_bytes: Callable[[int], bytes] | None = None  # a token's text bytes ("" if special)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._stops = frozenset(self.stop_token_ids)

    def is_stop_token(self, token: int) -> bool:
        return token in self._stops


def accept_token(state: GenerationState, options: DecodeOptions, row: int, index: int,
                 token: int) -> bool:
    """Write a generated token at position `index` of `row`; True when the row is done (a
    stop token, a completed stop string, or its last position)."""
    state.token_ids[row][index] = token
    state.padding_mask[row][index] = True
    stopped = False
    if state.generated is not None and options.token_bytes is not None:
        stopped = state.generated[row].add(options.token_bytes(token))
    return stopped or options.is_stop_token(token) or index + 1 >= state.row_ends[row]


def process_logits(backend: Any, options: DecodeOptions, logits: Any,
                   sequences: Sequence[Sequence[int]], prompt_lengths: Sequence[int]) -> Any:
    """`options.processors` applied to logits (the input itself when there are none)."""
    if not options.processors:
        return logits
    return options.processors(backend, logits, sequences, prompt_lengths)


def start_decode(model: Any, state: GenerationState, all_positions: bool = False,
                 logits: bool = True, top_k: int = 0) -> tuple[Any, Any, Any]:
    """The start every decoding strategy shares: the positions every row has (the shortest
    prompt) run from 0 into a new cache as long as the rows.

    Returns (logits [B, 1, V] of the last of those positions, hidden states, cache): the
    hidden states are [B, 1, H], or with all_positions [B, n, H] (contrastive search
    compares candidates with every position's), and the caller releases them. With
    logits=False the first is None (greedy steps take their tokens from the hidden states);
    with top_k the logits below each row's k-th largest may be -inf (`model.project`).
    """
    backend = model.backend
    index = min(state.prompt_lengths)
    ids = backend.tensor([row[:index] for row in state.token_ids], "int32")
    hidden, cache = model.build_cache(ids, cache_length=len(state.token_ids[0]),
                                      last_position_only=not all_positions)
    backend.release(ids)
    if not logits:
        return None, hidden, cache
    last = backend.select_position(hidden, index - 1) if all_positions else hidden
    projected = model.project(last, top_k)
    if last is not hidden:
        backend.release(last)
    return projected, hidden, cache
