"""A generation's inputs, checked before anything runs: prompts or packed ids into a
`GenerationState`, and the work they make bounded by what the backend and the host can hold."""

from __future__ import annotations

import os
from typing import Any

from webgpt2.generation.decoding import GenerationState
from webgpt2.generation.samplers import Sampler


def state_from_text(model: Any, inputs: Any, max_length: int | None,
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
    preprocessor = model._require_preprocessor()
    limit = model.max_sequence_length
    if max_length is not None:
        check_max_length(model, max_length)
    try:
        packed = preprocessor.generate_preprocess(inputs, sequence_length=limit)
    except ValueError as e:
        if not str(e).startswith("prompt is") or "sequence_length" not in str(e):
            raise
        # Say it in the model's terms, not the preprocessor's.
        raise ValueError(str(e).replace("generate_preprocess's sequence_length",
                                        "this model's max_sequence_length")) from None
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
    return new_state(token_ids, mask, max_new_tokens)


def state_from_packed(model: Any, inputs: dict, max_new_tokens: int | None) -> GenerationState:
    try:
        token_ids = [list(row) for row in inputs["token_ids"]]
        raw_mask = [list(row) for row in inputs["padding_mask"]]
    except (KeyError, TypeError) as e:
        raise ValueError("inputs must be a dict with 'token_ids' and 'padding_mask' "
                         f"lists of rows ({e})") from None
    for row in token_ids:
        for t in row:
            if isinstance(t, bool) or not isinstance(t, int) \
                    or not 0 <= t < model.vocabulary_size:
                raise ValueError(f"token_ids holds {t!r}; expected integer token ids in "
                                 f"[0, {model.vocabulary_size})")
    mask = check_padding_mask(raw_mask)
    lengths = {len(row) for row in token_ids} | {len(row) for row in mask}
    if not token_ids or len(lengths) != 1 or len(mask) != len(token_ids):
        raise ValueError("token_ids and padding_mask must be non-empty rows of one length")
    check_max_length(model, lengths.pop())
    return new_state(token_ids, mask, max_new_tokens)


def check_work(model: Any, sampler: Sampler, batch: int, length: int, stops: int) -> None:
    """Refuse, before anything is allocated, a generation whose rows (batch times beams
    or contrastive candidates) would not fit: the KV cache and four copies of the logits
    on the backend, and the search's candidate lists on the host."""
    nb = getattr(sampler, "num_beams", None)
    k = getattr(sampler, "k", None) if sampler.name == "contrastive" else None
    per_row = nb or k or 1
    rows = batch * per_row
    candidates = max(2, 1 + stops) * nb if nb else (k or 0)
    device = model.cache_bytes(rows, length) + 4 * rows * model.vocabulary_size * 4
    host = rows * candidates * 64  # Python floats and ints of the top-k lists
    limits = [(device, model.backend.memory_limit_bytes(), f"the {model.backend.name} "
               "backend"), (host, _host_memory_bytes(), "this machine's memory (half)")]
    for need, limit, where in limits:
        if limit is not None and need > limit:
            what = (f"num_beams={nb}" if nb else f"contrastive k={k}" if k
                    else "greedy/sampling")
            raise ValueError(
                f"{what} on a batch of {batch} with {length} positions makes {rows} rows "
                f"needing about {need / 2**30:.1f} GiB, over the {limit / 2**30:.1f} GiB "
                f"of {where}: lower the batch, the length or the search width")


def check_max_length(model: Any, max_length: int) -> None:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length is {max_length!r}; expected a positive integer")
    if max_length > model.max_sequence_length:
        raise ValueError(f"max_length {max_length} exceeds this model's "
                         f"max_sequence_length {model.max_sequence_length}")


def new_state( token_ids: list[list[int]], mask: list[list[bool]],
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


def _host_memory_bytes() -> int | None:
    """Half the machine's physical memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return None


def check_padding_mask(rows: Any) -> list[list[bool]]:
    """A padding mask's rows as bools, each value checked to be a bool (or 0 or 1)."""
    for row in rows:
        for m in row:
            if m not in (True, False):
                raise ValueError(f"padding_mask holds {m!r}; expected True or False")
    return [[bool(m) for m in row] for row in rows]
