"""A greedy decode step replayed from what the module saw, without the model's Python.

A decode step on this backend is a handful of crossings into the module: the host writes the
step's token ids, writes the recorded command list (~90 kernel calls) and runs it, and reads
the sampled ids back. Producing that command list is the model's and the layers' Python
(checks, allocation, recording): ~0.5 ms natively and about three times that in Pyodide,
against a ~20 ms step whose kernels stream the weights. From one step to the next only two
things change: the token ids and the position, and the position enters the command words as
an affine function of it (attention's cache index, the embedding's first position).

`StepReplayer` therefore watches the driver while the generation loop runs a step as usual,
and once three consecutive steps have crossed into the module alike (the same crossings at
the same offsets, each command word constant or moving by the same amount per position),
replays later steps from that trace: the new ids into the ids block, the words with their
moving parts advanced, the run, the read. It learns again whenever the backend's memory
allocator has been used in between (the scratch blocks of the learned step could have been
handed to someone else) or a step does not look like the learned ones.

What makes the trace affine is that no allocation on the decode path depends on the
position (attention's scratch is sized for the cache's full length for that reason).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from webgpt2.backends.wasm.driver import DriverError

# How many consecutive steps must agree before replaying: two give each word's change per
# position, the third confirms it.
LEARNING_STEPS = 3


class _Tracer:
    """The driver, recording each crossing: ("write", offset, bytes), ("call", name, args),
    ("read", offset, bytes read)."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self.events: list[tuple] = []

    def write(self, offset: int, data: Any) -> None:
        self.events.append(("write", offset, bytes(data)))
        self._driver.write(offset, data)

    def read(self, offset: int, nbytes: int) -> bytes:
        data = self._driver.read(offset, nbytes)
        self.events.append(("read", offset, data))
        return data

    def call(self, name: str, *args: Any) -> Any:
        self.events.append(("call", name, args))
        return self._driver.call(name, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


def _ids_bytes(tokens: Sequence[int]) -> bytes:
    return array("i", tokens).tobytes()


class StepReplayer:
    """Runs greedy decode steps, replaying them once it has learned one (module docstring).

    Example (the generation loop makes one per greedy generation, on wasm):
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

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.replayed = 0  # steps run from the trace (for tests and benchmarks)
        self._seen: list[tuple[int, list[tuple]]] = []  # (cache index, events) of past steps
        self._program: list[tuple] | None = None
        self._index = 0  # the cache index of the step the program was learned from
        self._allocations = -1  # the allocator's count when the program may run

    def run(self, step: Callable[[], list[int]], index: int, tokens: Sequence[int]
            ) -> list[int]:
        """The sampled ids of the step that feeds `tokens` at cache index `index`: `step()`
        runs it through the model (its first crossing must write the ids, its last read the
        sampled ids back); a replay does the same crossings without it."""
        memory = self.backend.memory
        if self._program is not None and memory.allocations == self._allocations:
            self.replayed += 1
            return self._replay(index, tokens)
        self._program = None
        if len(self.backend.commands):  # something recorded before the step: not a step
            self._seen.clear()
            return step()
        backend = self.backend
        tracer = _Tracer(backend.driver)
        backend.driver = backend.commands.driver = tracer
        try:
            sampled = step()
        except BaseException:
            self._seen.clear()
            raise
        finally:
            backend.driver = backend.commands.driver = tracer._driver
        events = tracer.events
        if not self._is_step(events, tokens, sampled) or (
                self._seen and self._seen[-1][0] != index - 1):
            self._seen.clear()
        self._seen.append((index, events))
        if len(self._seen) >= LEARNING_STEPS:
            self._seen = self._seen[-LEARNING_STEPS:]
            self._program = self._learn([events for _, events in self._seen])
            self._index = index
            self._allocations = memory.allocations
        return sampled

    @staticmethod
    def _is_step(events: list[tuple], tokens: Sequence[int], sampled: list[int]) -> bool:
        return (len(events) >= 3 and events[0][0] == "write"
                and events[0][2] == _ids_bytes(tokens) and events[-1][0] == "read"
                and events[-1][2] == array("i", sampled).tobytes()
                and all(e[0] != "write" or len(e[2]) % 4 == 0 for e in events))

    @staticmethod
    def _learn(traces: list[list[tuple]]) -> list[tuple] | None:
        """The program: each crossing of the last trace, writes with their moving words (the
        change per position, the same between every two traces), or None if they differ."""
        first, *_, last = traces
        if any(len(t) != len(last) for t in traces):
            return None
        program: list[tuple] = []
        for n, events in enumerate(zip(*traces)):
            kind, target = last[n][0], last[n][1]
            if any(e[0] != kind or e[1] != target for e in events):
                return None
            if kind == "call":
                if any(e[2] != last[n][2] for e in events):
                    return None
                program.append(last[n])
            elif kind == "read":
                program.append(("read", target, len(last[n][2])))
            elif n == 0:  # the ids
                program.append(("ids", target, len(last[n][2])))
            else:
                words = [array("I", e[2]) for e in events]
                if any(len(w) != len(words[0]) for w in words):
                    return None
                moving = []
                for i in range(len(words[0])):
                    steps = {(b[i] - a[i]) & 0xFFFFFFFF for a, b in zip(words, words[1:])}
                    if len(steps) != 1:
                        return None
                    step = steps.pop()
                    if step:
                        moving.append((i, step))
                program.append(("write", target, words[-1], tuple(moving)))
        return program

    def _replay(self, index: int, tokens: Sequence[int]) -> list[int]:
        driver, ahead = self.backend.driver, index - self._index
        data = b""
        for n, event in enumerate(self._program):
            kind = event[0]
            if kind == "ids":
                if len(tokens) * 4 != event[2]:
                    raise ValueError(f"{len(tokens)} token ids for a replayed step of "
                                     f"{event[2] // 4}")
                driver.write(event[1], _ids_bytes(tokens))
            elif kind == "write":
                words = event[2]
                if event[3]:
                    words = array("I", words)
                    for i, step in event[3]:
                        words[i] = (words[i] + ahead * step) & 0xFFFFFFFF
                driver.write(event[1], words)
            elif kind == "call":
                try:
                    driver.call(event[1], *event[2])
                except DriverError as e:
                    count, self._program = len(self._program), None
                    raise DriverError(f"a replayed decode step failed in {event[1]!r} "
                                      f"(crossing {n + 1} of {count}): {e}") from e
            else:
                data = driver.read(event[1], event[2])
        return array("i", data).tolist()
