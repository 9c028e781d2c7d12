"""Greedy decode steps replayed from a backend's driver calls, without the model's Python.

A greedy decode step reaches the device through a few driver calls: the host writes the
step's token ids, writes the recorded work (wasm: the command list of ~90 kernel calls;
webgpu: the dispatches' packed parameters) and runs it, and reads the sampled ids back.
Producing that work is the model's and the layers' Python (checks, allocation, recording):
~0.5 ms natively and about three times that in Pyodide, against a wasm step of ~20 ms, and
more than a whole step on a fast GPU. From one step to the next only two things change: the
token ids and the position, and the position enters the written words as an affine function
of it (attention's cache index, the embedding's first position, offsets into the cache).

`StepReplayer` watches the driver while the generation loop runs a step as usual. Once three
consecutive steps have made the same calls with the same arguments (the same objects, up to
pooled buffers that take turns; every written buffer the same size, each of its 32-bit words
constant or moving by the same amount per position), it
replays later steps from the last one: the new ids, the words with their moving parts
advanced, the same runs, the read. It learns again whenever the backend's allocator was used
in between (the learned step's scratch memory could belong to someone else now) or a step
does not look like the learned ones, and it never learns a step whose calls return anything
but bytes read back (a call that creates something would create it again on each replay).

What keeps a step's words affine is that nothing a decode step allocates depends on its
position (the wasm attention's scratch is sized for the cache's whole length for that).
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable, Sequence
from typing import Any

# How many consecutive steps must agree before replaying: two give each word's change per
# position, the third confirms it.
LEARNING_STEPS = 3
_BUFFERS = (bytes, bytearray, memoryview, array)


class _Tracer:
    """A driver that records each method call as (name, args with buffers copied to bytes,
    result) before returning the real driver's result."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self.events: list[tuple[str, tuple, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)
        if not callable(attribute):
            return attribute

        def traced(*args: Any, **keywords: Any) -> Any:
            copied = tuple(bytes(a) if isinstance(a, _BUFFERS) else a for a in args)
            result = attribute(*args, **keywords)
            # A call with keywords is recorded under a name no replayable step allows.
            self.events.append((f"{name}(**)" if keywords else name, copied, result))
            return result

        return traced


def _ids_bytes(tokens: Sequence[int]) -> bytes:
    return array("i", tokens).tobytes()


class StepReplayer:
    """Runs greedy decode steps, replaying them once it has learned one (module docstring).

    install(driver) puts `driver` where the backend's operations reach the device and
    returns the one it replaces; allocations() counts the allocator's hand-outs so far;
    idle() says whether the backend has no recorded work pending; calls names the driver
    methods a replayable step may make (writes, runs, reads: a step that frees or makes
    anything on the device is not replayed).

    Example (the generation loop makes one per greedy generation, where the backend has one):
        >>> from webgpt2 import GPT2Backbone, GPT2CausalLM
        >>> def model(backend):
        ...     bb = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        ...                       intermediate_dim=16, max_sequence_length=32, backend=backend)
        ...     bb.initialize_weights(seed=0)
        ...     return GPT2CausalLM(bb)
        >>> ids = {"token_ids": [[1, 2, 3] + [0] * 12], "padding_mask": [[1] * 3 + [0] * 12]}
        >>> model("wasm").generate_step(ids) == model("cpu").generate_step(ids)  # 8 replayed
        True
    """

    def __init__(self, install: Callable[[Any], Any], allocations: Callable[[], int],
                 idle: Callable[[], bool], calls: frozenset[str]) -> None:
        self._install = install
        self._calls = calls
        self._allocations = allocations
        self._idle = idle
        self.replayed = 0  # steps run from the program (for tests and benchmarks)
        self._seen: list[tuple[int, list[tuple]]] = []  # (cache index, events) of past steps
        self._program: list[tuple] | None = None
        self._index = 0  # the cache index of the step the program was learned from
        self._count = -1  # allocations() when the program may run
        self._driver: Any = None

    def run(self, step: Callable[[], list[int]], index: int, tokens: Sequence[int]
            ) -> list[int]:
        """The sampled ids of the step that feeds `tokens` at cache index `index`: `step()`
        runs it through the model (its first driver call must write the ids, its last read
        the sampled ids back); a replay makes the same calls without it."""
        if self._program is not None and self._allocations() == self._count:
            self.replayed += 1
            return self._replay(index, tokens)
        self._program = None
        if not self._idle():  # work recorded before the step: not a step alone
            self._seen.clear()
            return step()
        tracer = _Tracer(None)
        tracer._driver = self._install(tracer)
        try:
            sampled = step()
        except BaseException:
            self._seen.clear()
            raise
        finally:
            self._install(tracer._driver)
        self._driver = tracer._driver
        events = tracer.events
        if not self._is_step(events, tokens, sampled) or any(
                e[0] not in self._calls for e in events):
            self._seen.clear()
            return sampled
        if self._seen and self._seen[-1][0] != index - 1:
            self._seen.clear()
        self._seen.append((index, events))
        if len(self._seen) >= LEARNING_STEPS:
            self._seen = self._seen[-LEARNING_STEPS:]
            self._program = self._learn([events for _, events in self._seen])
            self._index = index
            self._count = self._allocations()
        return sampled

    @staticmethod
    def _is_step(events: list[tuple], tokens: Sequence[int], sampled: list[int]) -> bool:
        """Ids written by the first call, the sampled ids read by the last, nothing else
        returned, every written buffer whole 32-bit words."""
        if len(events) < 2 or events[0][2] is not None:
            return False
        result = events[-1][2]
        if not isinstance(result, bytes) or not result.startswith(_ids_bytes(sampled)):
            return False
        ids = _ids_bytes(tokens)
        return (sum(1 for a in events[0][1] if a == ids) == 1
                and all(e[2] is None for e in events[1:-1])
                and all(len(a) % 4 == 0 for e in events for a in e[1] if isinstance(a, bytes)))

    @staticmethod
    def _learn(traces: list[list[tuple]]) -> list[tuple] | None:
        """The program: each call of the last trace, its buffers with their moving words
        (the same change per position between every two traces), or None if they differ."""
        last = traces[-1]
        if any(len(t) != len(last) for t in traces):
            return None
        program: list[tuple] = []
        objects: list[dict[int, int]] = [{} for _ in traces]  # per trace: id -> first use
        for n, calls in enumerate(zip(*traces)):
            name, args = last[n][0], last[n][1]
            if any(c[0] != name or len(c[1]) != len(args) for c in calls):
                return None
            template: list[Any] = []
            for position, arg in enumerate(args):
                values = [c[1][position] for c in calls]
                if not isinstance(arg, bytes):
                    forms = [_form(v, names) for v, names in zip(values, objects)]
                    if any(f != forms[-1] for f in forms):
                        return None
                    template.append(arg)
                elif n == 0 and all(len(v) == len(arg) for v in values) and not any(
                        isinstance(a, bytes) for a in args[:position]):
                    template.append(_Ids(len(arg)))  # the first buffer of the first call
                else:
                    words = [array("I", v) for v in values]
                    if any(len(w) != len(words[0]) for w in words):
                        return None
                    moving = []
                    for i in range(len(words[0])):
                        steps = {(b[i] - a[i]) & 0xFFFFFFFF for a, b in zip(words, words[1:])}
                        if len(steps) != 1:
                            return None
                        change = steps.pop()
                        if change:
                            moving.append((i, change))
                    template.append(_Words(words[-1], tuple(moving)))
            program.append((name, tuple(template)))
        return program

    def _replay(self, index: int, tokens: Sequence[int]) -> list[int]:
        ahead, result = index - self._index, b""
        for name, template in self._program:
            args = [a.value(ahead, tokens) if isinstance(a, (_Ids, _Words)) else a
                    for a in template]
            result = getattr(self._driver, name)(*args)
        return array("i", result[:4 * len(tokens)]).tolist()


def _form(value: Any, names: dict[int, int]) -> Any:
    """value with each object (a buffer, a pipeline) replaced by the order of its first use
    in the trace: a pooled buffer may alternate between steps, and whichever the learned
    step used serves every replay, since the step writes it before it reads it. Containers
    and dataclasses (webgpu's Dispatch, Binding, Copy) are compared field by field."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_form(v, names) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,) + tuple(
            _form(getattr(value, f.name), names) for f in dataclasses.fields(value))
    return ("object", names.setdefault(id(value), len(names)))


class _Ids:
    """The step's token ids, written where the learned step wrote its own."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def value(self, ahead: int, tokens: Sequence[int]) -> bytes:
        if len(tokens) * 4 != self.nbytes:
            raise ValueError(f"{len(tokens)} token ids for a replayed step of "
                             f"{self.nbytes // 4}")
        return _ids_bytes(tokens)


class _Words:
    """A written buffer: the learned step's words, the moving ones advanced `ahead`
    positions."""

    def __init__(self, words: array, moving: tuple[tuple[int, int], ...]) -> None:
        self.words = words
        self.moving = moving

    def value(self, ahead: int, tokens: Sequence[int]) -> array:
        if not self.moving:
            return self.words
        words = array("I", self.words)
        for i, change in self.moving:
            words[i] = (words[i] + ahead * change) & 0xFFFFFFFF
        return words
