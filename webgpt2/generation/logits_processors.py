"""Logits processors: change the next-token scores before a sampler or a search sees them.

Each follows the transformers processor of the same name exactly (the tests compare them on
the same logits), but works per row on host token lists, so that a row of a ragged,
right-padded batch is processed as it would be alone: `sequences[b]` is row b's tokens so
far (its prompt, start token included, and what it generated), `prompt_lengths[b]` how many
of them are its prompt. The scores themselves stay on the backend; a processor returns a
new tensor (or its input unchanged when it has nothing to do) through backend operations.

transformers applies them in this order, before the sampler's temperature/top-k/top-p:
repetition penalty, no-repeat-n-gram, bad words, min new tokens. `build_logits_processors`
makes that list from `generate`'s options.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from webgpt2.backends import Backend


class LogitsProcessor:
    """Base class: `processor(backend, logits, sequences, prompt_lengths) -> logits`.

    logits is [B, V] or [B, 1, V] on the backend (raw logits for greedy and sampling,
    log-probabilities in beam search, as in transformers). The result is a new tensor of
    the same shape, or `logits` itself when nothing changes; the caller releases the input.

    Example:
        >>> import webgpt2
        >>> class NoZero(LogitsProcessor):
        ...     def __call__(self, backend, logits, sequences, prompt_lengths):
        ...         return backend.mask_tokens(logits, [[0]] * len(sequences))
        >>> b = webgpt2.get_backend("cpu")
        >>> b.to_list(NoZero()(b, b.tensor([[5.0, 1.0]], "float32"), [[1]], [1]))
        [[-inf, 1.0]]
    """

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Discourage tokens the row already holds (prompt included): a seen token's score s
    becomes s * penalty if s < 0 else s / penalty (CTRL's penalty; transformers'
    `RepetitionPenaltyLogitsProcessor`). penalty > 1 discourages, < 1 encourages.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> p = RepetitionPenaltyLogitsProcessor(2.0)
        >>> b.to_list(p(b, b.tensor([[4.0, -1.0, 3.0]], "float32"), [[0, 1]], [1]))
        [[2.0, -2.0, 3.0]]
    """

    def __init__(self, penalty: float) -> None:
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ValueError(f"repetition_penalty is {penalty!r}; expected a number > 0 "
                             "(1.0 means no penalty)")
        self.penalty = float(penalty)

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        if self.penalty == 1.0:
            return logits
        return backend.apply_repetition_penalty(logits, sequences, self.penalty)

    def get_config(self) -> dict:
        return {"penalty": self.penalty}


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Forbid any n-gram of `ngram_size` tokens from occurring twice in a row's tokens
    (prompt included): a token that would complete an n-gram already present gets -inf
    (transformers' `NoRepeatNGramLogitsProcessor`).

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> p = NoRepeatNGramLogitsProcessor(2)
        >>> b.to_list(p(b, b.tensor([[1.0, 2.0, 3.0]], "float32"), [[2, 1, 2]], [1]))
        [[1.0, -inf, 3.0]]
    """

    def __init__(self, ngram_size: int) -> None:
        if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size is {ngram_size!r}; expected an integer "
                             ">= 1")
        self.ngram_size = ngram_size

    def banned_tokens(self, sequence: Sequence[int]) -> list[int]:
        """The tokens that would repeat an n-gram after `sequence`.

        Example:
            >>> NoRepeatNGramLogitsProcessor(3).banned_tokens([5, 6, 7, 5, 6])
            [7]
        """
        n = self.ngram_size
        length = len(sequence)
        if length < n:
            return []
        prefix = list(sequence[length - n + 1:])
        # A window whose first n-1 tokens equal the current suffix bans its last token.
        return sorted({sequence[i + n - 1] for i in range(length - n + 1)
                       if list(sequence[i:i + n - 1]) == prefix})

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        banned = [self.banned_tokens(seq) for seq in sequences]
        if not any(banned):
            return logits
        return backend.mask_tokens(logits, banned)

    def get_config(self) -> dict:
        return {"ngram_size": self.ngram_size}


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Never generate the given token sequences (transformers' `NoBadWordsLogitsProcessor`).

    A one-token bad word is always forbidden; for a longer one, its last token is forbidden
    whenever the row ends with the rest of it. As in transformers, a bad word that is
    exactly one of `eos_token_ids` is dropped (the end token stays possible).

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> p = NoBadWordsLogitsProcessor([[1], [0, 2]])
        >>> b.to_list(p(b, b.tensor([[1.0, 2.0, 3.0]], "float32"), [[5, 0]], [1]))
        [[1.0, -inf, -inf]]
    """

    def __init__(self, bad_words_ids: Sequence[Sequence[int]],
                 eos_token_ids: Iterable[int] | None = None) -> None:
        if (not isinstance(bad_words_ids, (list, tuple)) or not bad_words_ids
                or any(not isinstance(w, (list, tuple)) or not w for w in bad_words_ids)
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0
                       for w in bad_words_ids for t in w)):
            raise ValueError(f"bad_words_ids is {bad_words_ids!r}; expected a non-empty list "
                             "of non-empty lists of token ids (integers >= 0)")
        eos = set(eos_token_ids or ())
        words = [tuple(w) for w in bad_words_ids if not (len(w) == 1 and w[0] in eos)]
        self.bad_words_ids = [list(w) for w in words]
        self._single = sorted({w[0] for w in words if len(w) == 1})
        self._multi = [(list(w[:-1]), w[-1]) for w in words if len(w) > 1]

    def banned_tokens(self, sequence: Sequence[int]) -> list[int]:
        """The tokens forbidden after `sequence`.

        Example:
            >>> NoBadWordsLogitsProcessor([[9], [3, 4, 5]]).banned_tokens([1, 3, 4])
            [5, 9]
        """
        banned = set(self._single)
        for prefix, last in self._multi:
            n = len(prefix)
            if n <= len(sequence) and list(sequence[len(sequence) - n:]) == prefix:
                banned.add(last)
        return sorted(banned)

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        vocabulary_size = backend.shape(logits)[-1]
        for word in self.bad_words_ids:
            for t in word:
                if t >= vocabulary_size:
                    raise ValueError(f"bad_words_ids holds token id {t}; expected ids < the "
                                     f"vocabulary size {vocabulary_size}")
        banned = [self.banned_tokens(seq) for seq in sequences]
        if not any(banned):
            return logits
        return backend.mask_tokens(logits, banned)

    def get_config(self) -> dict:
        return {"bad_words_ids": self.bad_words_ids}


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Forbid the end tokens until a row has generated `min_new_tokens` tokens
    (transformers' `MinNewTokensLengthLogitsProcessor`, with each row's own prompt length).

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> p = MinNewTokensLengthLogitsProcessor(2, eos_token_ids=[2])
        >>> b.to_list(p(b, b.tensor([[1.0, 2.0, 3.0]], "float32"), [[7, 8, 9]], [2]))
        [[1.0, 2.0, -inf]]
    """

    def __init__(self, min_new_tokens: int, eos_token_ids: Iterable[int]) -> None:
        if (isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int)
                or min_new_tokens < 0):
            raise ValueError(f"min_new_tokens is {min_new_tokens!r}; expected an integer >= 0")
        self.min_new_tokens = min_new_tokens
        self.eos_token_ids = sorted(set(eos_token_ids))

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        banned = [self.eos_token_ids if len(seq) - n < self.min_new_tokens else []
                  for seq, n in zip(sequences, prompt_lengths)]
        if not self.eos_token_ids or not any(banned):
            return logits
        return backend.mask_tokens(logits, banned)

    def get_config(self) -> dict:
        return {"min_new_tokens": self.min_new_tokens, "eos_token_ids": self.eos_token_ids}


class LogitsProcessorList(list):
    """Processors applied in order; intermediate tensors are released, the input is not.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> ps = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(2.0),
        ...                           NoRepeatNGramLogitsProcessor(1)])
        >>> b.to_list(ps(b, b.tensor([[4.0, 2.0]], "float32"), [[1]], [1]))
        [[4.0, -inf]]
    """

    def __call__(self, backend: Backend, logits: Any, sequences: Sequence[Sequence[int]],
                 prompt_lengths: Sequence[int]) -> Any:
        current = logits
        for processor in self:
            processed = processor(backend, current, sequences, prompt_lengths)
            if processed is not current and current is not logits:
                backend.release(current)
            current = processed
        return current


def build_logits_processors(*, repetition_penalty: float | None = None,
                            no_repeat_ngram_size: int | None = None,
                            bad_words_ids: Sequence[Sequence[int]] | None = None,
                            min_new_tokens: int | None = None,
                            eos_token_ids: Iterable[int] = (),
                            logits_processors: Sequence[LogitsProcessor] | None = None
                            ) -> LogitsProcessorList:
    """The processors `generate`'s options ask for, in transformers' order; custom
    `logits_processors` come last. None, 1.0 (penalty) and 0 (sizes) mean "off".

    Example:
        >>> build_logits_processors(repetition_penalty=1.2, min_new_tokens=3,
        ...                         eos_token_ids=[50256])
        [RepetitionPenaltyLogitsProcessor(penalty=1.2), \
MinNewTokensLengthLogitsProcessor(min_new_tokens=3, eos_token_ids=[50256])]
    """
    processors = LogitsProcessorList()
    if repetition_penalty is not None:
        processor = RepetitionPenaltyLogitsProcessor(repetition_penalty)
        if processor.penalty != 1.0:
            processors.append(processor)
    if no_repeat_ngram_size is not None and no_repeat_ngram_size != 0:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(bad_words_ids, eos_token_ids))
    if min_new_tokens is not None:
        processor = MinNewTokensLengthLogitsProcessor(min_new_tokens, eos_token_ids)
        if processor.min_new_tokens and processor.eos_token_ids:
            processors.append(processor)
    for processor in logits_processors or ():
        if not callable(processor):
            raise TypeError(f"logits_processors holds {processor!r}; expected LogitsProcessor "
                            "objects")
        processors.append(processor)
    return processors
