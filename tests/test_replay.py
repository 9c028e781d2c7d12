"""Replayed greedy decode steps (webgpt2/backends/replay.py), on the wasm and webgpu backends.

The reference for every replayed generation is the cpu backend's generation of the same
checkpoint (itself checked against transformers in test_gpt2_parity.py), so a replayed step
that patched a word wrongly, or wrote where it must not, shows as a different token.
"""

from __future__ import annotations

from array import array

import pytest

import webgpt2
from webgpt2.backends.replay import StepReplayer
from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

PROMPTS = [[464, 2068, 7586, 21831, 18045, 625, 262], [15496, 11, 616, 1438, 318]]


def _packed(prompts, new_tokens):
    width = max(len(p) for p in prompts) + new_tokens
    return {"token_ids": [p + [0] * (width - len(p)) for p in prompts],
            "padding_mask": [[True] * len(p) + [False] * (width - len(p)) for p in prompts]}


def _watched(backend):
    """backend, with each StepReplayer it makes kept in a list."""
    made = []

    make = backend.step_replayer

    def step_replayer():
        made.append(make())
        return made[-1]

    backend.step_replayer = step_replayer
    return made


def _backend(name, **options):
    """A fresh backend of this name; skips where its package or (webgpu) an adapter is
    missing, as the backends' own tests do."""
    status = webgpt2.backend_status().get(name, "not registered")
    if status != "available":
        missing = ("is not installed", "no WebGPU adapter was found")
        if any(m in status for m in missing):
            pytest.skip(f"{name} backend unavailable: {status}")
        pytest.fail(f"{name} backend failed to start: {status}")
    if name == "wasm":
        from webgpt2.backends.wasm.backend import WasmBackend

        return WasmBackend(**options)
    from webgpt2.backends.webgpu.backend import WebGPUBackend

    return WebGPUBackend(**options)


@pytest.fixture(scope="module", params=["wasm", "webgpu"])
def models(request, small_checkpoint):
    cpu = GPT2CausalLM.from_pretrained(small_checkpoint, backend="cpu", progress=False)
    ours = GPT2CausalLM.from_pretrained(small_checkpoint, backend=_backend(request.param),
                                        progress=False)
    return cpu, ours


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["one row", "two rows"])
def test_replayed_greedy_tokens_equal_the_cpu_backends(models, prompts):
    cpu, ours = models
    made = _watched(ours.backend)
    inputs = _packed(prompts, 40)
    assert ours.generate_step(inputs) == cpu.generate_step(inputs)
    # A step runs from every position after the shortest prompt's to the row's end, less
    # the last; all but the three the replayer learns from are replayed (webgpu's first
    # step may build its decode pipelines, which makes that step one not to learn from).
    width = len(inputs["token_ids"][0])
    steps = width - min(len(p) for p in prompts) - 1
    assert steps - 3 - 1 <= made[-1].replayed <= steps - 3


@pytest.mark.parametrize("name", ["wasm", "webgpu"])
def test_float16_replay_equals_float16_without_it(small_checkpoint, name):
    options = {"dtype": "float16"} if name == "wasm" else {"kv_dtype": "float16"}
    lm = GPT2CausalLM.from_pretrained(small_checkpoint, backend=_backend(name, **options),
                                      dtype="float16", progress=False)
    inputs = _packed(PROMPTS[:1], 30)
    made = _watched(lm.backend)
    replayed = lm.generate_step(inputs)
    assert made[-1].replayed > 20
    lm.backend.step_replayer = lambda: None
    assert lm.generate_step(inputs) == replayed


def test_allocating_between_steps_stops_the_replay_and_clobbers_nothing(models):
    """A streamer that takes memory from the backend every step gets blocks the learned step
    used as scratch; a replay would then overwrite them. It must relearn instead."""
    cpu, ours = models
    backend = ours.backend
    made = _watched(backend)
    kept = []

    class Allocating:
        def put(self, ids):
            value = float(len(kept) + 1)
            kept.append((value, backend.tensor([[value] * 700], "float32")))

        def end(self):
            pass

    text = cpu.generate("The quick brown fox", max_new_tokens=24, sampler="greedy")
    assert ours.generate("The quick brown fox", max_new_tokens=24, sampler="greedy",
                         streamer=Allocating()) == text
    assert made[-1].replayed == 0
    assert len(kept) >= 24
    for value, tensor in kept:
        assert backend.to_list(tensor) == [[value] * 700]


def test_sampling_and_processors_are_not_replayed(models):
    cpu, ours = models
    made = _watched(ours.backend)
    inputs = _packed(PROMPTS[:1], 12)
    for options in ({"sampler": "top_k", "top_k": 5, "seed": 3},
                    {"sampler": "greedy", "repetition_penalty": 1.3}):
        assert ours.generate_step(inputs, **options) == cpu.generate_step(inputs, **options)
    assert made == []


def _trace(ids, words, sampled):
    """A step's driver calls as the tracer records them: (name, arguments, result)."""
    return [("write", (64, array("i", ids).tobytes()), None),
            ("write", (128, array("I", words).tobytes()), None),
            ("call", ("run", 128, 3), None),
            ("read", (256, 4 * len(sampled)), array("i", sampled).tobytes())]


def test_learning_takes_words_that_move_alike_and_refuses_others():
    traces = [_trace([5], [7, 100 + i, 9, (40 - 3 * i) & 0xFFFFFFFF], [1]) for i in range(3)]
    program = StepReplayer._learn(traces)
    assert program is not None
    name, (offset, words) = program[1]
    assert (name, offset, list(words.words)) == ("write", 128, [7, 102, 9, 34])
    assert words.moving == ((1, 1), (3, 0xFFFFFFFD))  # +1 and -3 per position, mod 2^32
    assert list(words.value(2, [5])) == [7, 104, 9, 28]
    # A word that moves by 1, then by 2, is not affine in the position.
    uneven = [_trace([5], [7, w, 9, 40], [1]) for w in (100, 101, 103)]
    assert StepReplayer._learn(uneven) is None
    # A crossing at another offset, or another kernel run, is not the same step.
    moved = traces[:2] + [[traces[2][0], ("write", (192, traces[2][1][1][1]), None)]
                          + traces[2][2:]]
    assert StepReplayer._learn(moved) is None
    other_run = traces[:2] + [traces[2][:2] + [("call", ("run", 128, 4), None)]
                              + traces[2][3:]]
    assert StepReplayer._learn(other_run) is None


def test_a_step_is_ids_written_first_and_the_sampled_ids_read_last():
    trace = _trace([5, 6], [1, 2], [8, 9])
    assert StepReplayer._is_step(trace, [5, 6], [8, 9])
    assert not StepReplayer._is_step(trace, [5, 7], [8, 9])  # other ids written
    assert not StepReplayer._is_step(trace, [5, 6], [8, 1])  # another read
    assert not StepReplayer._is_step(trace[1:], [5, 6], [8, 9])
    # A call that returns something (it made an object, say) is never replayed.
    made = trace[:2] + [("call", ("run", 128, 3), 0)] + trace[3:]
    assert not StepReplayer._is_step(made, [5, 6], [8, 9])


def test_pooled_objects_may_take_turns_but_not_change_places():
    """webgpu's buffer pool hands a step's scratch buffers out in turns (A, B, A): the
    steps are alike up to that renaming, and replaying with the last step's buffers is
    right since a step writes its scratch before it reads it. Objects that change places
    (what was read is now written) are not the same step."""
    a, b, cache, pipeline = object(), object(), object(), object()

    def trace(ids_buffer, scratch, position):
        return [("write_buffer", (ids_buffer, 0, array("i", [5]).tobytes()), None),
                ("write_buffer", (cache, 0, array("I", [position]).tobytes()), None),
                ("submit", ([(pipeline, ids_buffer, scratch), (pipeline, scratch, cache)],),
                 None),
                ("read_buffer", (scratch, 0, 4), array("i", [1]).tobytes())]

    program = StepReplayer._learn([trace(a, b, 7), trace(b, a, 8), trace(a, b, 9)])
    assert program is not None
    assert program[2] == ("submit", ([(pipeline, a, b), (pipeline, b, cache)],))
    swapped = trace(a, b, 9)
    swapped[2] = ("submit", ([(pipeline, a, b), (pipeline, cache, b)],), None)
    assert StepReplayer._learn([trace(a, b, 7), trace(b, a, 8), swapped]) is None
