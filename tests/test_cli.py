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
