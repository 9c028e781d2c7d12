"""The `webgpt2` command line: generate text, describe the backends, serve the demo page.

    webgpt2 generate "ROMEO:"                       # the shipped Shakespeare model, cpu
    webgpt2 generate "Hello" --model openai-community/gpt2 --backend webgpu --sampler top_p
    webgpt2 generate "ROMEO:" --sampler beam --num-beams 4 --no-repeat-ngram-size 3
    webgpt2 generate "ROMEO:" --sampler contrastive --top-k 4 --penalty-alpha 0.6 --stop "\n\n"
    webgpt2 info
    webgpt2 serve
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

DEFAULT_MODEL = "gpt2_shakespeare_en"


def _load(model: str, backend: str | None, dtype: str | None, progress: bool):
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM
    from webgpt2.models.gpt2.gpt2_presets import GPT2_PRESETS

    if model in GPT2_PRESETS:
        return GPT2CausalLM.from_preset(model, backend=backend, dtype=dtype, progress=progress)
    return GPT2CausalLM.from_pretrained(model, backend=backend, dtype=dtype, progress=progress)


# How each GenerationConfig option is given on the command line: the flags are built from
# the config's fields (their help is the field's doc), and a test checks that every field
# is here or in _NOT_FLAGS. "flag" defaults to --the-field-name.
_FLAGS: dict[str, dict] = {
    "max_length": {"type": int},
    "max_new_tokens": {"type": int},
    "min_new_tokens": {"type": int},
    "stop_token_ids": {"type": int, "nargs": "*", "metavar": "ID",
                       "help": "stop tokens instead of the end token (none: never stop early)"},
    "stop_strings": {"flag": "--stop", "action": "append", "metavar": "TEXT",
                     "help": "stop once the generated text contains TEXT (repeatable); the "
                             "output ends where it ends"},
    "sampler": {"choices": ["greedy", "random", "top_k", "top_p", "beam", "contrastive"]},
    "temperature": {"type": float},
    "top_k": {"type": int},
    "top_p": {"type": float},
    "num_beams": {"type": int},
    "length_penalty": {"type": float},
    "early_stopping": {"metavar": "{true,false,never}"},
    "penalty_alpha": {"type": float},
    "seed": {"type": int},
    "repetition_penalty": {"type": float},
    "no_repeat_ngram_size": {"type": int},
    "bad_words_ids": {"flag": "--bad-words", "action": "append", "metavar": "TEXT",
                      "help": "never generate this text's tokens in a row (repeatable; mind "
                              "the leading space: ' word')"},
}
# Options only the Python API has: objects, and the prompt that the command always prints.
_NOT_FLAGS = {"logits_processors", "strip_prompt"}
# The command line's own defaults where they differ from the config's (or its sampler's).
_DEFAULTS = {"max_new_tokens": 64, "top_p": 0.9, "num_beams": 4}


def _flag(option: str) -> str:
    return _FLAGS[option].get("flag", "--" + option.replace("_", "-"))


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    from webgpt2.generation.config import GenerationConfig

    for option in GenerationConfig.option_names():
        if option in _NOT_FLAGS:
            continue
        spec = {k: v for k, v in _FLAGS[option].items() if k != "flag"}
        spec.setdefault("help", GenerationConfig.option_doc(option))
        if option in _DEFAULTS:
            spec["help"] += f"; here {_DEFAULTS[option]} by default"
        parser.add_argument(_flag(option), dest=option, default=None, **spec)


def generation_config(args: argparse.Namespace, tokenize=None):
    """The checked GenerationConfig of the command line's flags; an error names the flag.

    tokenize turns --bad-words texts into ids (the model's tokenizer); without it they are
    only checked for being given."""
    from webgpt2.generation.config import (
        GenerationConfig,
        GenerationOptionError,
        UnexpectedOptionError,
        sampler_class,
    )

    options = {o: getattr(args, o) for o in _FLAGS if getattr(args, o) is not None}
    if "early_stopping" in options:
        choices = {"true": True, "false": False, "never": "never"}
        value = options["early_stopping"]
        if value.lower() not in choices:
            raise CommandLineError(f"--early-stopping is {value!r}; expected true, false or "
                                   "never")
        options["early_stopping"] = choices[value.lower()]
    if "stop_token_ids" in options:
        options["stop_token_ids"] = options["stop_token_ids"] or None
    if "bad_words_ids" in options:
        words = options["bad_words_ids"]
        options["bad_words_ids"] = [tokenize(w) for w in words] if tokenize else [[0]]
    try:
        used = sampler_class(options.get("sampler") or "greedy").config_options
    except ValueError as e:
        raise CommandLineError(f"--sampler: {e}") from None
    for option, value in _DEFAULTS.items():
        if option not in options and (option in used or option == "max_new_tokens"):
            options[option] = value
    try:
        return GenerationConfig(**options).validate()
    except UnexpectedOptionError as e:
        sampler = options.get("sampler") or "greedy"
        raise CommandLineError(f"{_flag(e.option)} is not used by --sampler {sampler}") from None
    except GenerationOptionError as e:
        raise CommandLineError(e.renamed(_flag(e.option))) from None


class CommandLineError(ValueError):
    """A bad flag: printed as one line, exit status 2."""


def cmd_generate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    generation_config(args)  # a bad flag fails before the model loads
    lm = _load(args.model, args.backend, args.dtype, progress=not args.quiet)
    loaded = time.perf_counter()
    config = generation_config(args, lm.preprocessor.tokenizer.tokenize)
    out = sys.stdout
    count = 0
    first = None
    out.write(args.prompt)
    out.flush()
    # stream_tokens: a search that knows its text only at the end (beam) gives it then.
    for piece, _ in lm.stream_tokens(args.prompt, generation_config=config):
        if first is None:
            first = time.perf_counter()
        if piece:
            count += 1
            out.write(piece)
            out.flush()
    end = time.perf_counter()
    out.write("\n")
    out.flush()
    if not args.quiet:
        rate = (count - 1) / (end - first) if first and count > 1 else 0.0
        sys.stderr.write(
            f"[{lm.backend.name}] load {loaded - start:.2f} s, first token "
            f"{((first or end) - loaded) * 1000:.0f} ms, {rate:.1f} pieces/s\n"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import webgpt2
    from webgpt2.backends import backend_status, get_backend

    info: dict = {"webgpt2": webgpt2.__version__, "python": sys.version.split()[0],
                  "backends": {}}
    for name, status in backend_status().items():
        entry: dict = {"available": status == "available"}
        if status == "available":
            entry.update(get_backend(name).describe())
        else:
            entry["why_not"] = status
        info["backends"][name] = entry
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"webgpt2 {info['webgpt2']} (Python {info['python']})")
    for name, entry in info["backends"].items():
        if entry["available"]:
            details = ", ".join(f"{k}: {v}" for k, v in entry.items()
                                if k not in ("available", "name"))
            print(f"  {name:7s} available  {details}")
        else:
            print(f"  {name:7s} unavailable: {entry['why_not']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from webgpt2.web import serve

    serve(host=args.host, port=args.port, open_browser=args.open)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like the command's others."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"webgpt2: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="webgpt2", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate text from a prompt, streamed")
    gen.add_argument("prompt")
    gen.add_argument("--model", default=DEFAULT_MODEL,
                     help="preset name, local folder, hub id or folder URL "
                          f"(default: {DEFAULT_MODEL}, shipped in the package)")
    gen.add_argument("--backend", default=None,
                     help="cpu, wasm, webgpu (default: the first available)")
    gen.add_argument("--dtype", default=None, choices=["float32", "float16"],
                     help="weight storage on wasm and webgpu (float16 halves the weight memory)")
    _add_generation_flags(gen.add_argument_group("generation (GenerationConfig's options)"))
    gen.add_argument("--quiet", action="store_true", help="no progress bars or timing line")
    gen.set_defaults(func=cmd_generate)

    info = sub.add_parser("info", help="version and backends (and why one is unavailable)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    serve = sub.add_parser("serve", help="serve the demo page on localhost")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--open", action="store_true", help="open it in a web browser")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        sys.stderr.write(f"webgpt2: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nwebgpt2: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
