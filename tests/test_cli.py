"""The `webgpt2` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from webgpt2 import GPT2CausalLM
from webgpt2.generation.samplers import TopKSampler


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webgpt2.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_generate_streams_the_same_text_as_the_api(tiny_checkpoint):
    done = run_cli("generate", "The quick brown fox", "--model", str(tiny_checkpoint),
                   "--backend", "cpu", "--max-new-tokens", "12", "--sampler", "top_k",
                   "--top-k", "20", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)
    expected = lm.generate("The quick brown fox", max_new_tokens=12,
                           sampler=TopKSampler(k=20, temperature=1.0), seed=3)
    assert done.stdout == expected + "\n"
    assert "[cpu]" in done.stderr  # the timing line


def test_info_lists_backends_and_why_not():
    done = run_cli("info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["backends"]["cpu"]["available"] is True
    for entry in info["backends"].values():
        assert entry["available"] or entry["why_not"]


def test_errors_are_one_clear_line_and_exit_2(tiny_checkpoint, tmp_path):
    done = run_cli("generate", "", "--model", str(tiny_checkpoint), "--backend", "cpu")
    assert done.returncode == 2
    assert "prompt is empty" in done.stderr
    done = run_cli("generate", "hi", "--model", str(tiny_checkpoint), "--backend", "tpu")
    assert done.returncode == 2
    assert "unknown backend 'tpu'" in done.stderr
    done = run_cli("generate", "hi", "--model", str(tmp_path))
    assert done.returncode == 2
    assert "config.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_beam_and_processors_print_what_generate_returns(tiny_checkpoint, capsys):
    from webgpt2.cli import main
    from webgpt2.generation import BeamSampler, ContrastiveSampler

    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend="cpu", progress=False)
    common = ["--model", str(tiny_checkpoint), "--backend", "cpu", "--max-new-tokens", "8",
              "--quiet"]
    assert main(["generate", "The quick", *common, "--sampler", "beam", "--num-beams", "3",
                 "--length-penalty", "0.5", "--early-stopping", "true",
                 "--no-repeat-ngram-size", "2"]) == 0
    expected = lm.generate("The quick", max_new_tokens=8, no_repeat_ngram_size=2,
                           sampler=BeamSampler(3, length_penalty=0.5, early_stopping=True))
    assert capsys.readouterr().out == expected + "\n"
    assert main(["generate", "The quick", *common, "--sampler", "contrastive", "--top-k", "3",
                 "--penalty-alpha", "0.4", "--repetition-penalty", "1.3", "--min-new-tokens",
                 "2", "--bad-words", " Port", "--stop", "an", "--stop-token-ids"]) == 0
    expected = lm.generate("The quick", max_new_tokens=8, repetition_penalty=1.3,
                           min_new_tokens=2, stop_strings=["an"], stop_token_ids=None,
                           bad_words_ids=[lm.preprocessor.tokenizer.tokenize(" Port")],
                           sampler=ContrastiveSampler(k=3, alpha=0.4))
    assert capsys.readouterr().out == expected + "\n"
    assert main(["generate", "hi", *common, "--sampler", "beam", "--num-beams", "0"]) == 2
    assert "--num-beams is 0" in capsys.readouterr().err


def test_generate_flags_are_the_generation_configs_options():
    from webgpt2.cli import _FLAGS, _NOT_FLAGS, build_parser
    from webgpt2.generation import GenerationConfig

    fields = set(GenerationConfig.option_names())
    assert set(_FLAGS) | _NOT_FLAGS == fields and not set(_FLAGS) & _NOT_FLAGS
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    dests = {a.dest for a in generate._actions}
    assert fields - _NOT_FLAGS <= dests


def test_bad_flags_fail_before_the_prompt_naming_the_flag():
    for args, message in [
        (["--sampler", "top_k", "--top-k", "0"], "--top-k is 0; expected an integer >= 1"),
        (["--sampler", "contrastive", "--top-k", "0"], "--top-k is 0"),
        (["--top-k", "3"], "--top-k is not used by --sampler greedy"),
        (["--max-new-tokens", "2.7"], "--max-new-tokens: invalid int value: '2.7'"),
        (["--sampler", "beam", "--early-stopping", "maybe"], "--early-stopping is 'maybe'"),
        (["--sampler", "top_p", "--top-p", "1.5"], "--top-p is 1.5"),
    ]:
        done = run_cli("generate", "ROMEO:", "--quiet", *args)
        assert done.returncode == 2, args
        assert done.stdout == ""  # the prompt is not printed
        assert done.stderr == f"webgpt2: error: {done.stderr.split(': error: ')[1]}"
        assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
