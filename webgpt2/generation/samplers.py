"""Samplers choose the next token from logits, on the backend, returning token ids.

Names and defaults follow KerasHub (`"greedy"`, `"random"`, `"top_k"` with k=5,
`"top_p"` with p=0.1); the filtering follows transformers' warpers exactly (temperature,
then top-k, then top-p). Random draws come from the host: each row has its own
`random.Random(seed)`, so the same seed gives the same tokens on every backend and a
prompt generated in a batch gets the tokens it would get alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from webgpt2.backends import Backend

if TYPE_CHECKING:
    from webgpt2.generation.decoding import DecodeOptions, GenerationState


class Sampler:
    """Base class: `next_tokens(backend, logits, rngs)` returns one token id per row.

    `rngs[row]` is that row's random source, or None for a row whose token is forced (a
    prompt token in a ragged batch), which must not consume a draw.
    """

    name = "sampler"
    uses_randomness = False
    # The GenerationConfig options this sampler takes, and its constructor's name for each.
    config_options: dict[str, str] = {}

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def next_tokens(self, backend: Backend, logits: Any,
                    rngs: Sequence[random.Random | None]) -> list[int]:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SearchSampler(Sampler):
    """Base class for strategies that need the model, not only the logits (beam search,
    contrastive search): the generate loop hands the whole decode to `run`.

    `run(model, state, options)` fills `state` in place (see `GenerationState`) and yields
    `(tokens, forced)` after each step that gives every row one token, as the token loop
    does (a strategy that only knows its tokens at the end, like beam search, yields
    nothing and sets `streams = False`). `model` has `backend`, `build_cache`,
    `call_with_cache` and `project`; `options` is a `DecodeOptions` (stop tokens, stop
    strings, logits processors).

    Example:
        >>> isinstance(get_sampler("beam"), SearchSampler)
        True
    """

    streams = True

    def next_tokens(self, backend: Backend, logits: Any,
                    rngs: Sequence[random.Random | None]) -> list[int]:
        raise TypeError(f"the {self.name!r} sampler chooses tokens with the model; use it "
                        "through generate(sampler=...)")

    def run(self, model: Any, state: GenerationState, options: DecodeOptions
            ) -> Iterator[tuple[list[int], list[bool]]]:
        raise NotImplementedError


class GreedySampler(Sampler):
    """The most likely token (the first on ties), computed on the backend.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> GreedySampler().next_tokens(b, b.tensor([[0.0, 2.0, 1.0]], "float32"), [None])
        [1]
    """

    name = "greedy"

    def next_tokens(self, backend: Backend, logits: Any,
                    rngs: Sequence[random.Random | None]) -> list[int]:
        return backend.argmax(logits)

    def get_config(self) -> dict:
        return {}


class RandomSampler(Sampler):
    """A draw from softmax(logits / temperature) over the whole vocabulary.

    Example:
        >>> import random, webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> s = RandomSampler(temperature=0.7)
        >>> s.next_tokens(b, b.tensor([[0.0, 50.0, 0.0]], "float32"), [random.Random(0)])
        [1]
    """

    name = "random"
    uses_randomness = True
    config_options = {"temperature": "temperature"}

    def __init__(self, temperature: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        if not temperature > 0:
            raise ValueError(f"temperature is {temperature!r}; expected a number > 0")
        self.temperature = float(temperature)

    def _filter(self) -> dict:
        return {}

    def next_tokens(self, backend: Backend, logits: Any,
                    rngs: Sequence[random.Random | None]) -> list[int]:
        # A forced row draws nothing; 0.5 is a placeholder whose result is discarded.
        uniforms = [rng.random() if rng is not None else 0.5 for rng in rngs]
        return backend.sample(logits, uniforms, temperature=self.temperature, **self._filter())

    def get_config(self) -> dict:
        return {"temperature": self.temperature, **self._filter(), "seed": self.seed}


class TopKSampler(RandomSampler):
    """A draw from the k most likely tokens (transformers' TopKLogitsWarper: ties at the
    k-th value are kept).

    Example:
        >>> import random, webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> TopKSampler(k=1).next_tokens(b, b.tensor([[0.0, 1.0, 3.0]], "float32"),
        ...                              [random.Random(0)])
        [2]
    """

    name = "top_k"
    config_options = {"top_k": "k", "temperature": "temperature"}

    def __init__(self, k: int = 5, temperature: float = 1.0, seed: int | None = None) -> None:
        super().__init__(temperature, seed)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k is {k!r}; expected an integer >= 1")
        self.k = k

    def _filter(self) -> dict:
        return {"top_k": self.k}

    def get_config(self) -> dict:
        return {"k": self.k, "temperature": self.temperature, "seed": self.seed}


class TopPSampler(RandomSampler):
    """Nucleus sampling: the smallest set of most likely tokens whose probability reaches
    p (transformers' TopPLogitsWarper), optionally after a top-k cut.

    Example:
        >>> import random, webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> TopPSampler(p=0.5).next_tokens(b, b.tensor([[0.0, 5.0, 1.0]], "float32"),
        ...                                [random.Random(0)])
        [1]
    """

    name = "top_p"
    config_options = {"top_p": "p", "top_k": "k", "temperature": "temperature"}

    def __init__(self, p: float = 0.1, k: int | None = None, temperature: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__(temperature, seed)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p is {p!r}; expected 0 < p <= 1")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"k is {k!r}; expected None or an integer >= 1")
        self.p, self.k = float(p), k

    def _filter(self) -> dict:
        return {"top_p": self.p, "top_k": self.k or 0}

    def get_config(self) -> dict:
        return {"p": self.p, "k": self.k, "temperature": self.temperature, "seed": self.seed}


_SAMPLERS: dict[str, type[Sampler]] = {
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
}


def register_sampler(name: str, cls: type[Sampler]) -> None:
    """Make a sampler class available by name to `get_sampler` and `generate`.

    Example:
        >>> class Argmax(GreedySampler):
        ...     name = "argmax"
        >>> register_sampler("argmax", Argmax)
        >>> get_sampler("argmax")
        Argmax()
    """
    _SAMPLERS[name] = cls


def get_sampler(identifier: str | Sampler | None, **kwargs: Any) -> Sampler:
    """A sampler from a name (with keyword options) or a sampler object.

    Names: "greedy", "random", "top_k", "top_p", "beam", "contrastive" and any added
    with `register_sampler`.

    Example:
        >>> get_sampler("top_k", k=10)
        TopKSampler(k=10, temperature=1.0, seed=None)
        >>> get_sampler("beam", num_beams=3)
        BeamSampler(num_beams=3, return_all_beams=False, length_penalty=1.0, early_stopping=False)
    """
    if identifier is None:
        identifier = "greedy"
    if isinstance(identifier, Sampler):
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} given with a sampler object; "
                             "set them on the object instead")
        return identifier
    return sampler_class(identifier)(**kwargs)


def sampler_class(name: str) -> type[Sampler]:
    """The sampler class registered under `name`.

    Example:
        >>> sampler_class("top_p").config_options
        {'top_p': 'p', 'top_k': 'k', 'temperature': 'temperature'}
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(_SAMPLERS)}")
    return _SAMPLERS[name]
