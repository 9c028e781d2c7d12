"""Beam search, contrastive search, logits processors, stop strings, ragged batches and
scoring, against Hugging Face transformers on checkpoints transformers wrote itself.

Every reference is computed by transformers/torch on the same files (or, for contrastive
search, which transformers 5 moved to a Hub repository, by a brute-force implementation of
its formula over the transformers model), never by webgpt2.
"""

from __future__ import annotations

import doctest
import importlib
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.generation import logits_process as hf_processors  # noqa: E402

from webgpt2 import GPT2CausalLM  # noqa: E402
from webgpt2.backends.base import Backend  # noqa: E402
from webgpt2.backends.cpu import CPUBackend  # noqa: E402
from webgpt2.generation import (  # noqa: E402
    BeamSampler,
    ContrastiveSampler,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TopKSampler,
    score_sequences,
)
from webgpt2.generation.streamers import TextStreamer  # noqa: E402

START = 50256  # <|endoftext|>: GPT-2's start, end and pad token
PROMPTS = ["Hi", "The quick brown fox jumps over",
           "A much longer prompt, with commas, and more words than the others have"]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    """(webgpt2 model, transformers model, checkpoint folder): 2 layers."""
    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)
    ref = transformers.GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    return lm, ref, tiny_checkpoint


@pytest.fixture(scope="module")
def small(small_checkpoint):
    """(webgpt2 model, transformers model, checkpoint folder): 6 layers."""
    lm = GPT2CausalLM.from_pretrained(small_checkpoint, backend="cpu", progress=False)
    ref = transformers.GPT2LMHeadModel.from_pretrained(small_checkpoint).eval()
    return lm, ref, small_checkpoint


def _prompt_ids(lm, text):
    return [START] + lm.preprocessor.tokenizer.tokenize(text)


def _ours(lm, ids, new, **options):
    """The tokens (prompt included) webgpt2 generates for one prompt of ids."""
    out = lm.generate({"token_ids": [ids + [0] * new],
                       "padding_mask": [[True] * len(ids) + [False] * new]}, **options)
    return [t for t, m in zip(out["token_ids"][0], out["padding_mask"][0]) if m]


def _theirs(ref, ids, new, eos=None, **options):
    """transformers' generate on the same ids; its padding after an end token dropped."""
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                          dtype=torch.long),
                           max_new_tokens=new, do_sample=False, pad_token_id=START,
                           eos_token_id=eos, **options)
    return _unpad(out[0].tolist(), len(ids), eos)


def _unpad(row, prompt_length, eos):
    if eos is not None and eos in row[prompt_length:]:
        return row[:row.index(eos, prompt_length) + 1]
    return row


# ---- backend operations ------------------------------------------------------------------
class _HostDefaults(CPUBackend):
    """The cpu backend with the generation operations' base-class defaults, the code a
    backend without its own versions (webgpu today) runs."""

    log_softmax = Backend.log_softmax
    top_k = Backend.top_k
    apply_repetition_penalty = Backend.apply_repetition_penalty
    mask_tokens = Backend.mask_tokens
    gather_batch = Backend.gather_batch
    reorder_cache = Backend.reorder_cache
    concatenate = Backend.concatenate
    max_cosine_similarity = Backend.max_cosine_similarity


@pytest.mark.parametrize("shape", [(3, 40), (3, 1, 40)])
def test_generation_ops_defaults_equal_cpu(shape):
    cpu, host = CPUBackend(), _HostDefaults()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=shape).astype(np.float32)
    logits.reshape(3, 40)[1, [4, 9, 30]] = 2.5  # ties, returned in index order
    ids = [[1, 1, 5, 39], [], [0, 7]]
    for b in (cpu, host):
        x = b.tensor(logits.tolist(), "float32")
        np.testing.assert_allclose(b.to_list(b.log_softmax(x)),
                                   torch.log_softmax(torch.tensor(logits), -1).numpy(),
                                   atol=1e-5)
        assert b.top_k(x, 5) == cpu.top_k(x, 5)
        assert b.top_k(x, 3)[1][1] == [4, 9, 30]
        np.testing.assert_allclose(b.to_list(b.apply_repetition_penalty(x, ids, 1.7)),
                                   cpu.to_list(cpu.apply_repetition_penalty(x, ids, 1.7)))
        np.testing.assert_array_equal(b.to_list(b.mask_tokens(x, ids)),
                                      cpu.to_list(cpu.mask_tokens(x, ids)))
        assert b.shape(b.mask_tokens(x, ids)) == shape
    cache = rng.normal(size=(3, 2, 2, 5, 2, 3)).astype(np.float32)
    expected = cache.copy()
    expected[:, :, :, 1:4] = cache[[2, 0, 0], :, :, 1:4]
    for b in (cpu, host):
        got = b.reorder_cache(b.tensor(cache.tolist(), "float32"), [2, 0, 0], 1, 4)
        np.testing.assert_array_equal(b.to_list(got), expected)
        gathered = b.gather_batch(b.tensor(cache.tolist(), "float32"), [1, 1, 0])
        np.testing.assert_array_equal(b.to_list(gathered), cache[[1, 1, 0]])
        joined = b.concatenate([b.tensor(cache[:, 0, 0].tolist(), "float32"),
                                b.tensor(cache[:, 1, 0].tolist(), "float32")], axis=1)
        np.testing.assert_array_equal(b.to_list(joined),
                                      np.concatenate([cache[:, 0, 0], cache[:, 1, 0]], 1))
    context = rng.normal(size=(2, 6, 8)).astype(np.float32)
    candidates = rng.normal(size=(6, 1, 8)).astype(np.float32)
    unit = torch.nn.functional.normalize
    ref = (unit(torch.tensor(candidates[:, 0]), dim=-1).view(2, 3, 8)
           @ unit(torch.tensor(context), dim=-1).transpose(1, 2)).amax(-1).reshape(-1)
    for b in (cpu, host):
        got = b.max_cosine_similarity(b.tensor(context.tolist(), "float32"),
                                      b.tensor(candidates.tolist(), "float32"))
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


def test_generation_ops_name_bad_arguments():
    for b in (CPUBackend(), _HostDefaults()):
        x = b.tensor([[1.0, 2.0]], "float32")
        with pytest.raises(ValueError, match="k is 3; expected an integer in"):
            b.top_k(x, 3)
        with pytest.raises(ValueError, match="row index 2 is outside a batch of 1"):
            b.gather_batch(x, [2])
        with pytest.raises(ValueError, match="2 lists of token ids for 1 rows"):
            b.mask_tokens(x, [[0], [1]])


# ---- logits processors against transformers' on the same logits -------------------------
def _hf_input_ids():
    rng = random.Random(0)
    rows = [[rng.randrange(12) for _ in range(14)] for _ in range(4)]
    rows[0][-2:] = [3, 4]  # ends like the multi-token bad words' prefixes
    rows[1][-1] = 7
    rows[2][-3:] = rows[2][2:5]  # a repeated trigram prefix
    return rows


@pytest.mark.parametrize("ours,theirs", [
    (RepetitionPenaltyLogitsProcessor(1.3),
     hf_processors.RepetitionPenaltyLogitsProcessor(1.3)),
    (RepetitionPenaltyLogitsProcessor(0.6),
     hf_processors.RepetitionPenaltyLogitsProcessor(0.6)),
    (NoRepeatNGramLogitsProcessor(1), hf_processors.NoRepeatNGramLogitsProcessor(1)),
    (NoRepeatNGramLogitsProcessor(2), hf_processors.NoRepeatNGramLogitsProcessor(2)),
    (NoRepeatNGramLogitsProcessor(4), hf_processors.NoRepeatNGramLogitsProcessor(4)),
    (NoBadWordsLogitsProcessor([[5], [3, 4, 9], [4, 8], [7, 2], [11]], eos_token_ids=[11]),
     hf_processors.NoBadWordsLogitsProcessor([[5], [3, 4, 9], [4, 8], [7, 2], [11]],
                                             eos_token_id=11)),
    (MinNewTokensLengthLogitsProcessor(6, eos_token_ids=[0, 9]),
     hf_processors.MinNewTokensLengthLogitsProcessor(10, 6, eos_token_id=[0, 9])),
    # 14 tokens, 10 of them prompt: 4 new tokens are enough, nothing changes.
    (MinNewTokensLengthLogitsProcessor(4, eos_token_ids=[9]),
     hf_processors.MinNewTokensLengthLogitsProcessor(10, 4, eos_token_id=9)),
])
def test_processors_equal_transformers_on_the_same_logits(ours, theirs):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(4, 50257)) * 3).astype(np.float32)
    input_ids = _hf_input_ids()
    expected = theirs(torch.tensor(input_ids), torch.tensor(logits)).numpy()
    b = CPUBackend()
    got = np.asarray(b.to_list(ours(b, b.tensor(logits.tolist(), "float32"), input_ids,
                                    [10] * 4)))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    changes = not isinstance(ours, MinNewTokensLengthLogitsProcessor) or ours.min_new_tokens > 4
    assert (got != logits).any() == changes


# ---- greedy with processors: generate equals transformers' generate ----------------------
@pytest.mark.parametrize("options", [
    {"repetition_penalty": 1.5},
    {"repetition_penalty": 0.8, "no_repeat_ngram_size": 3},
    {"no_repeat_ngram_size": 2},
    {"no_repeat_ngram_size": 1, "bad_words_ids": "from-output"},
    {"repetition_penalty": 1.5, "min_new_tokens": 6, "eos": "from-output"},
])
def test_greedy_with_processors_equals_transformers(tiny, options):
    lm, ref, _ = tiny
    ids = _prompt_ids(lm, "The quick brown fox")
    options = dict(options)
    plain = _theirs(ref, ids, 24, **{k: v for k, v in options.items()
                                      if k in ("repetition_penalty", "no_repeat_ngram_size")})
    new = plain[len(ids):]
    eos = None
    if options.pop("eos", None):
        eos = new[2]  # a token the model does produce: stops early without min_new_tokens
    if options.get("bad_words_ids"):
        options["bad_words_ids"] = [[new[0]], new[3:5], [new[7], new[8], new[9]]]
    expected = _theirs(ref, ids, 24, eos=eos, **options)
    got = _ours(lm, ids, 24, stop_token_ids=[eos] if eos is not None else None, **options)
    assert got == expected
    if "bad_words_ids" in options:
        generated = got[len(ids):]
        for word in options["bad_words_ids"]:
            n = len(word)
            assert all(generated[i:i + n] != word for i in range(len(generated)))
    if eos is not None:
        assert got[-1] == eos and len(got) - len(ids) >= 6


# ---- beam search -------------------------------------------------------------------------
BEAM_CASES = [(4, 1.0, False), (3, 0.5, True), (4, 2.0, "never"), (2, -1.0, False)]


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", BEAM_CASES)
@pytest.mark.parametrize("with_eos", [False, True])
def test_beam_search_equals_transformers_tiny(tiny, num_beams, length_penalty, early_stopping,
                                              with_eos):
    lm, ref, _ = tiny
    options = {"num_beams": num_beams, "length_penalty": length_penalty,
               "early_stopping": early_stopping}
    for text in ("The quick brown fox", "Hello"):
        ids = _prompt_ids(lm, text)
        eos = None
        if with_eos:
            # A token the best beam produces: beams end on it along the way.
            eos = _theirs(ref, ids, 12, **options)[len(ids) + 2]
        expected = _theirs(ref, ids, 12, eos=eos, **options)
        got = _ours(lm, ids, 12, sampler=BeamSampler(**options),
                    stop_token_ids=None if eos is None else [eos])
        assert got == expected


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", BEAM_CASES[:2])
def test_beam_search_equals_transformers_small(small, num_beams, length_penalty,
                                               early_stopping):
    lm, ref, _ = small
    options = {"num_beams": num_beams, "length_penalty": length_penalty,
               "early_stopping": early_stopping}
    ids = _prompt_ids(lm, "In a hole in the ground there lived")
    eos = _theirs(ref, ids, 10, **options)[len(ids) + 3]
    for stop in (None, eos):
        expected = _theirs(ref, ids, 10, eos=stop, **options)
        got = _ours(lm, ids, 10, sampler=BeamSampler(**options),
                    stop_token_ids=None if stop is None else [stop])
        assert got == expected


def test_all_beams_and_scores_equal_transformers(tiny):
    lm, ref, _ = tiny
    ids = _prompt_ids(lm, "The quick brown fox")
    eos = _theirs(ref, ids, 12, num_beams=4)[len(ids) + 3]
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                          dtype=torch.long),
                           max_new_tokens=12, num_beams=4, num_return_sequences=4,
                           do_sample=False, pad_token_id=START, eos_token_id=eos,
                           output_scores=True, return_dict_in_generate=True)
    ours = lm.generate({"token_ids": [ids + [0] * 12],
                        "padding_mask": [[True] * len(ids) + [False] * 12]},
                       sampler=BeamSampler(4, return_all_beams=True), stop_token_ids=[eos])
    rows = [[t for t, m in zip(row, mask) if m]
            for row, mask in zip(ours["token_ids"][0], ours["padding_mask"][0])]
    assert rows == [_unpad(row, len(ids), eos) for row in out.sequences.tolist()]
    assert any(row[-1] == eos for row in rows), "some beams must end on the stop token"
    np.testing.assert_allclose(ours["scores"][0], out.sequences_scores.numpy(), rtol=1e-5)


def test_beam_search_with_processors_equals_transformers(small):
    lm, ref, _ = small
    ids = _prompt_ids(lm, "The quick brown fox")
    options = {"repetition_penalty": 1.4, "no_repeat_ngram_size": 2}
    expected = _theirs(ref, ids, 10, num_beams=3, **options)
    got = _ours(lm, ids, 10, sampler=BeamSampler(3), stop_token_ids=None, **options)
    assert got == expected


def test_beam_by_name_and_text_outputs(tiny):
    lm, _, _ = tiny
    best = lm.generate("Hello", max_new_tokens=6, sampler="beam", stop_token_ids=None)
    every = lm.generate("Hello", max_new_tokens=6,
                        sampler=BeamSampler(5, return_all_beams=True), stop_token_ids=None)
    assert isinstance(every, list) and len(every) == 5 and every[0] == best
    batch = lm.generate(["Hello", "Hi there"], max_new_tokens=6,
                        sampler=BeamSampler(3, return_all_beams=True), stop_token_ids=None)
    assert [len(beams) for beams in batch] == [3, 3]


# ---- contrastive search ------------------------------------------------------------------
def _contrastive_reference(ref, ids, k, alpha, new, eos=None, processor=None):
    """Brute-force contrastive search over the transformers model: full forward passes,
    no cache; score = (1 - alpha) * p(v) - alpha * max cos(h_v, context hidden states)."""
    sequence = list(ids)
    unit = torch.nn.functional.normalize
    with torch.no_grad():
        for _ in range(new):
            out = ref(torch.tensor([sequence]), output_hidden_states=True)
            context = out.hidden_states[-1][0]  # [S, H], after ln_f
            logits = out.logits[:, -1]
            if processor is not None:
                logits = processor(torch.tensor([sequence]), logits)
            probs, top = torch.topk(torch.softmax(logits[0], -1), k)
            candidates = torch.tensor([sequence + [int(v)] for v in top])
            hidden = ref(candidates, output_hidden_states=True).hidden_states[-1][:, -1]
            penalty = (unit(hidden, dim=-1) @ unit(context, dim=-1).T).max(-1).values
            sequence.append(int(top[int(torch.argmax((1 - alpha) * probs - alpha * penalty))]))
            if sequence[-1] == eos:
                break
    return sequence


@pytest.mark.parametrize("k,alpha", [(4, 0.6), (5, 0.3), (3, 1.0)])
def test_contrastive_search_equals_reference_tiny(tiny, k, alpha):
    lm, ref, _ = tiny
    ids = _prompt_ids(lm, "The quick brown fox")
    expected = _contrastive_reference(ref, ids, k, alpha, 14)
    got = _ours(lm, ids, 14, sampler=ContrastiveSampler(k=k, alpha=alpha),
                stop_token_ids=None)
    assert got == expected
    assert got != _ours(lm, ids, 14, stop_token_ids=None), "must differ from greedy"


def test_contrastive_search_equals_reference_small_with_eos_and_processor(small):
    lm, ref, _ = small
    ids = _prompt_ids(lm, "Hello there, my friend")
    eos = _contrastive_reference(ref, ids, 4, 0.6, 5)[len(ids) + 4]
    processor = hf_processors.RepetitionPenaltyLogitsProcessor(1.3)
    expected = _contrastive_reference(ref, ids, 4, 0.6, 10, eos=eos, processor=processor)
    got = _ours(lm, ids, 10, sampler=ContrastiveSampler(k=4, alpha=0.6), stop_token_ids=[eos],
                repetition_penalty=1.3)
    assert got == expected
    assert got[-1] == eos and len(got) < len(ids) + 10, "the stop token must end it"
    assert _ours(lm, ids, 10, sampler="contrastive", stop_token_ids=None)[:len(ids)] == ids


# ---- ragged batches equal one prompt at a time -------------------------------------------
@pytest.mark.parametrize("sampler", [
    "greedy", TopKSampler(k=7, temperature=0.9), "random", BeamSampler(3),
    ContrastiveSampler(k=3, alpha=0.5)])
def test_ragged_batch_with_processors_equals_one_by_one(tiny, sampler):
    lm, _, _ = tiny
    options = {"max_new_tokens": 9, "sampler": sampler, "seed": 11,
               "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 2,
               "bad_words_ids": [[8770], [6335, 6335]], "stop_strings": ["an"]}
    batched = lm.generate(PROMPTS, **options)
    alone = [lm.generate(p, **options) for p in PROMPTS]
    assert batched == alone
    packed = lm.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    rows = lm.generate(packed, **options)
    for r, prompt in enumerate(PROMPTS):
        one = lm.preprocessor.generate_preprocess(prompt, sequence_length=40)
        single = lm.generate({k: [v] for k, v in one.items()}, **options)
        assert rows["token_ids"][r] == single["token_ids"][0]
        assert rows["padding_mask"][r] == single["padding_mask"][0]


def test_search_and_processors_on_webgpu_equal_cpu(tiny):
    """The webgpu backend has no generation operations of its own yet: the base class's
    defaults (through the host) must give the cpu backend's tokens."""
    import webgpt2

    if "webgpu" not in webgpt2.available_backends():
        pytest.skip("no WebGPU adapter")
    lm, _, folder = tiny
    gpu = GPT2CausalLM.from_pretrained(folder, backend="webgpu", progress=False)
    for options in ({"sampler": BeamSampler(2), "repetition_penalty": 1.3,
                     "no_repeat_ngram_size": 2},
                    {"sampler": ContrastiveSampler(2, 0.5), "bad_words_ids": [[8770]],
                     "stop_strings": ["an"]}):
        # Short: the defaults move [rows, 50257] logits through Python lists.
        assert (gpu.generate("Hello there", max_new_tokens=2, **options)
                == lm.generate("Hello there", max_new_tokens=2, **options))


# ---- stop strings ------------------------------------------------------------------------
def test_stop_string_ending_inside_a_token(small):
    lm, ref, folder = small
    prompt = "Hello there, my friend"
    ids = _prompt_ids(lm, prompt)
    tokenizer = lm.preprocessor.tokenizer
    generated = _theirs(ref, ids, 16, no_repeat_ngram_size=1)[len(ids):]
    pieces = [tokenizer.detokenize([t]) for t in generated]
    j = next(i for i in range(3, 16) if len(pieces[i]) >= 3 and len(pieces[i - 1]) >= 2)
    stop = pieces[j - 1][-2:] + pieces[j][:2]  # spans two tokens, ends inside the second
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    expected = _theirs(ref, ids, 16, no_repeat_ngram_size=1, stop_strings=[stop],
                       tokenizer=hf_tokenizer)
    options = {"no_repeat_ngram_size": 1, "stop_strings": [stop], "stop_token_ids": None}
    assert _ours(lm, ids, 16, **options) == expected == ids + generated[:j + 1]
    text = lm.generate(prompt, max_new_tokens=16, **options)
    assert text == prompt + "".join(pieces[:j]) + pieces[j][:2]
    assert text.endswith(stop) and text.count(stop) == 1
    assert "".join(lm.stream(prompt, max_new_tokens=16, **options)) == text[len(prompt):]
    stripped = lm.generate(prompt, max_new_tokens=16, strip_prompt=True, **options)
    assert prompt + stripped == text
    beams = {"num_beams": 3}
    assert (_ours(lm, ids, 16, sampler=BeamSampler(**beams), **options)
            == _theirs(ref, ids, 16, no_repeat_ngram_size=1, stop_strings=[stop],
                       tokenizer=hf_tokenizer, **beams))


def test_text_stream_holds_back_only_what_may_begin_a_stop_string():
    euro = "\u20ac".encode()  # three bytes, split across two tokens below
    tokens = [b"xa", b"b", b"d", euro[:2], euro[2:] + b"!tail"]

    class Bytes:  # token i is tokens[i]
        special_token_ids: list[int] = []

        def ids_to_bytes(self, ids):
            return b"".join(tokens[i] for i in ids)

    streamer = TextStreamer(Bytes(), stop_strings=["abc", "\u20ac!"])
    pieces = [streamer.put([i]) for i in range(len(tokens))]
    assert pieces == ["x", "", "abd", "", "\u20ac!"]
    assert streamer.stopped and streamer.end() == ""
    assert streamer.row.cut == len(b"tail")


def test_stop_strings_multi_token_and_not_in_the_prompt(tiny):
    lm, _, _ = tiny
    prompt = "The quick brown fox"
    options = {"no_repeat_ngram_size": 1, "stop_token_ids": None, "max_new_tokens": 12}
    full = lm.generate(prompt, **options)
    generated = full[len(prompt):]
    stop = generated[3:12]
    text = lm.generate(prompt, stop_strings=[stop, "never there \u2603"], **options)
    assert text == prompt + generated[:12]
    # The prompt itself holds the stop string: only generated text is searched.
    assert lm.generate(prompt, stop_strings=["quick"], **options) == full


# ---- scoring -----------------------------------------------------------------------------
def test_score_of_a_ragged_batch_equals_transformers_loss(small):
    lm, ref, _ = small
    texts = ["Hello", "The quick brown fox jumps over the lazy dog.",
             "In a hole in the ground there lived a hobbit"]
    rows = [_prompt_ids(lm, t) for t in texts]
    width = max(len(r) for r in rows)
    token_ids = [r + [START] * (width - len(r)) for r in rows]
    mask = [[True] * len(r) + [False] * (width - len(r)) for r in rows]
    losses = lm.score(token_ids, mask)
    scores = score_sequences(lm, texts)
    with torch.no_grad():
        for r, row in enumerate(rows):
            loss = ref(torch.tensor([row]), labels=torch.tensor([row])).loss.item()
            assert sum(losses[r]) / (len(row) - 1) == pytest.approx(loss, rel=1e-5)
            assert scores[r].loss == pytest.approx(loss, rel=1e-5)
            assert scores[r].token_ids == row
            assert all(x == 0.0 for x in losses[r][len(row) - 1:])  # padding masked out
        labels = torch.tensor(token_ids).masked_fill(~torch.tensor(mask), -100)
        batched = ref(torch.tensor(token_ids), attention_mask=torch.tensor(mask).long(),
                      labels=labels).loss.item()
    total = sum(sum(row) for row in losses) / sum(len(r) - 1 for r in rows)
    assert total == pytest.approx(batched, rel=1e-5)


# ---- errors name the bad value -----------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: BeamSampler(num_beams=0), "num_beams is 0; expected an integer >= 1"),
    (lambda: BeamSampler(early_stopping="sometimes"), "early_stopping is 'sometimes'"),
    (lambda: ContrastiveSampler(alpha=1.5), r"alpha is 1.5; expected a number in \[0, 1\]"),
    (lambda: ContrastiveSampler(k=0), "k is 0; expected an integer >= 1"),
    (lambda: RepetitionPenaltyLogitsProcessor(0.0), "repetition_penalty is 0.0"),
    (lambda: NoRepeatNGramLogitsProcessor(-1), "no_repeat_ngram_size is -1"),
    (lambda: MinNewTokensLengthLogitsProcessor(-2, [1]), "min_new_tokens is -2"),
    (lambda: NoBadWordsLogitsProcessor([[1, "a"]]), "bad_words_ids is"),
    (lambda: NoBadWordsLogitsProcessor([[]]), "non-empty lists of token ids"),
    (lambda: NoBadWordsLogitsProcessor(5), "bad_words_ids is 5"),
])
def test_bad_options_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_generate_options_are_named(tiny):
    lm, _, _ = tiny
    with pytest.raises(ValueError, match="stop_strings is"):
        lm.generate("Hi", max_new_tokens=2, stop_strings=[""])
    with pytest.raises(ValueError, match="bad_words_ids holds token id 60000"):
        lm.generate("Hi", max_new_tokens=2, bad_words_ids=[[60000]])
    with pytest.raises(ValueError, match="cannot stream"):
        list(lm.stream("Hi", max_new_tokens=2, sampler="beam"))
    with pytest.raises(TypeError, match="unexpected generate options"):
        list(lm.stream("Hi", max_new_tokens=2, num_beams=3))
    with pytest.raises(ValueError, match="stop_token_ids is 5"):
        lm.generate("Hi", max_new_tokens=2, stop_token_ids=5)


# ---- docstring examples ------------------------------------------------------------------
@pytest.mark.parametrize("module", [
    "webgpt2.generation.logits_processors", "webgpt2.generation.stopping",
    "webgpt2.generation.samplers", "webgpt2.generation.beam_search",
    "webgpt2.generation.contrastive_search", "webgpt2.generation.scoring",
    "webgpt2.generation.config", "webgpt2.generation.streamers",
    "webgpt2.generation.generative_task", "webgpt2.backends.base",
    "webgpt2.backends.cpu.backend", "webgpt2.backends.cpu.buffers",
    "webgpt2.backends.cpu.parallel"])
def test_docstring_examples_run(module):
    from webgpt2.models.gpt2.gpt2_presets import resolve_preset

    try:
        shipped = (resolve_preset("gpt2_shakespeare_en") / "model.safetensors").exists()
    except Exception:
        shipped = False
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    for test in finder.find(importlib.import_module(module)):
        if not shipped and any("from_preset" in e.source for e in test.examples):
            continue  # needs the shipped Shakespeare model's weights
        runner.run(test)
    assert runner.failures == 0
