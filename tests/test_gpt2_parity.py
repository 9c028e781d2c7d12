"""webgpt2's GPT-2 against Hugging Face transformers on checkpoints transformers wrote.

Every reference value here is computed by transformers/torch on the same files.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from webgpt2 import GPT2CausalLM  # noqa: E402

PROMPT_IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 40, 716]


def _reference(folder):
    return transformers.GPT2LMHeadModel.from_pretrained(folder).eval()


def _bare_names_copy(folder, tmp_path):
    """The hub's layout: bare names (no `transformer.` prefix) plus F32 attn.bias masks."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    n = config["n_positions"]
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(config["n_layer"]):
        renamed[f"h.{i}.attn.bias"] = np.tril(np.ones((n, n), np.float32))[None, None]
    out = tmp_path / "bare"
    out.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(folder / name, out / name)
    save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("layout", ["transformers", "hub"])
def test_logits_and_hidden_states_match_transformers(checkpoint, layout, tmp_path):
    folder = checkpoint if layout == "transformers" else _bare_names_copy(checkpoint, tmp_path)
    lm = GPT2CausalLM.from_pretrained(folder, backend="cpu", progress=False)
    ref = _reference(checkpoint)
    ids = [PROMPT_IDS, PROMPT_IDS[::-1]]
    with torch.no_grad():
        out = ref(torch.tensor(ids), output_hidden_states=True)
    logits, hidden, _ = lm.call_with_cache(ids, lm.backbone.new_cache(2, len(ids[0])), 0)
    np.testing.assert_allclose(lm.backend.to_list(logits), out.logits.numpy(), rtol=0, atol=1e-4)
    # transformers' last hidden state is after ln_f, as call_with_cache's is.
    np.testing.assert_allclose(lm.backend.to_list(hidden), out.hidden_states[-1].numpy(),
                               rtol=0, atol=1e-4)


def test_cache_contents_match_transformers_past_key_values(small_checkpoint):
    lm = GPT2CausalLM.from_pretrained(small_checkpoint, backend="cpu", progress=False)
    ref = _reference(small_checkpoint)
    with torch.no_grad():
        out = ref(torch.tensor([PROMPT_IDS]), use_cache=True)
    _, cache = lm.build_cache([PROMPT_IDS], cache_length=len(PROMPT_IDS) + 3)
    cache = np.asarray(lm.backend.to_list(cache))
    past = out.past_key_values
    for layer in range(lm.backbone.num_layers):
        keys, values = past.layers[layer].keys, past.layers[layer].values  # [B, nh, S, hd]
        n = len(PROMPT_IDS)
        np.testing.assert_allclose(cache[0, layer, 0, :n], keys[0].permute(1, 0, 2).numpy(),
                                   atol=1e-4)
        np.testing.assert_allclose(cache[0, layer, 1, :n], values[0].permute(1, 0, 2).numpy(),
                                   atol=1e-4)
        assert not cache[0, layer, :, n:].any(), "positions past the prompt must stay empty"


def test_cached_loop_equals_full_forward(checkpoint):
    lm = GPT2CausalLM.from_pretrained(checkpoint, backend="cpu", progress=False)
    b = lm.backend
    full_logits, _, full_cache = lm.call_with_cache(
        [PROMPT_IDS], lm.backbone.new_cache(1, len(PROMPT_IDS)), 0)
    _, cache = lm.build_cache([PROMPT_IDS[:1]], cache_length=len(PROMPT_IDS))
    step_logits = []
    for i in range(1, len(PROMPT_IDS)):
        logits, _, cache = lm.call_with_cache([[PROMPT_IDS[i]]], cache, i)
        step_logits.append(b.to_list(logits)[0][0])
    np.testing.assert_allclose(step_logits, b.to_list(full_logits)[0][1:], atol=1e-5)
    np.testing.assert_allclose(b.to_list(cache), b.to_list(full_cache), atol=1e-5)


def test_greedy_tokens_match_transformers_for_64_steps(checkpoint):
    lm = GPT2CausalLM.from_pretrained(checkpoint, backend="cpu", progress=False)
    ref = _reference(checkpoint)
    n = len(PROMPT_IDS)
    out = lm.generate_step({"token_ids": [PROMPT_IDS + [0] * 64],
                            "padding_mask": [[True] * n + [False] * 64]})
    with torch.no_grad():
        expected = ref.generate(torch.tensor([PROMPT_IDS]), max_new_tokens=64, do_sample=False,
                                pad_token_id=50256, eos_token_id=None)
    assert out["token_ids"][0] == expected[0].tolist()
    assert all(out["padding_mask"][0])


def test_score_matches_transformers_loss(small_checkpoint):
    lm = GPT2CausalLM.from_pretrained(small_checkpoint, backend="cpu", progress=False)
    ref = _reference(small_checkpoint)
    with torch.no_grad():
        loss = ref(torch.tensor([PROMPT_IDS]), labels=torch.tensor([PROMPT_IDS])).loss.item()
    per_token = lm.score([PROMPT_IDS])[0]
    ours = sum(per_token) / (len(PROMPT_IDS) - 1)
    assert ours == pytest.approx(loss, rel=1e-5)
    assert per_token[-1] == 0.0


@pytest.mark.parametrize("top_k,top_p,temperature", [(5, 1.0, 1.0), (0, 0.9, 1.0),
                                                     (20, 0.5, 0.7), (1, 1.0, 1.3),
                                                     (0, 0.05, 1.0)])
def test_top_k_top_p_filtering_matches_transformers_warpers(top_k, top_p, temperature):
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from webgpt2.backends.cpu.backend import filter_top_k_top_p

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50257)).astype(np.float32) * 3
    logits[1, 100:110] = 9.0  # ties at the cut
    scores = torch.tensor(logits)
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    expected = torch.isfinite(scores).numpy()
    for row in range(4):
        got = filter_top_k_top_p(logits[row] / np.float32(temperature), top_k, top_p)
        np.testing.assert_array_equal(got, expected[row])


def test_seeded_sampling_draws_from_the_filtered_distribution(tiny_checkpoint):
    """Inverse-CDF draws with the host's uniforms, checked against probabilities torch
    computes: the empirical frequencies of many draws match."""
    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)
    b = lm.backend
    logits = b.tensor([[0.0, 1.0, 2.0, 3.0, -1.0]], "float32")
    probs = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 3.0, -1.0]) / 0.8, dim=-1).numpy()
    uniforms = np.linspace(0, 1, 2001)[:-1] + 0.00025
    counts = np.zeros(5)
    for u in uniforms:
        counts[b.sample(logits, [float(u)], temperature=0.8)[0]] += 1
    np.testing.assert_allclose(counts / counts.sum(), probs, atol=1e-3)


def test_prefill_equals_build_cache_at_the_last_position(checkpoint):
    """prefill() skips the last block's work at the other positions; what it returns (the
    last position's hidden states and the whole cache) is build_cache's."""
    lm = GPT2CausalLM.from_pretrained(checkpoint, backend="cpu", progress=False)
    b = lm.backend
    ids = [PROMPT_IDS, PROMPT_IDS[::-1]]
    hidden, cache = lm.build_cache(ids, cache_length=20)
    last, prefill_cache = lm.build_cache(ids, cache_length=20, last_position_only=True)
    assert b.shape(last) == (2, 1, lm.backbone.hidden_dim)
    np.testing.assert_allclose(b.to_list(last), np.asarray(b.to_list(hidden))[:, -1:],
                               atol=1e-5)
    np.testing.assert_array_equal(b.to_list(prefill_cache), b.to_list(cache))


def test_count_params_equals_transformers(tiny_checkpoint):
    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)
    # transformers counts the tied LM head once, as the backbone holds it once.
    assert lm.backbone.count_params() == _reference(tiny_checkpoint).num_parameters()
