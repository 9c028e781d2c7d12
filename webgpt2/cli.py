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


def _sampler(args: argparse.Namespace):
    from webgpt2.generation.samplers import get_sampler

    options: dict = {}
    if args.sampler in ("random", "top_k", "top_p"):
        options["temperature"] = args.temperature
    if args.sampler == "top_k":
        options["k"] = args.top_k
    if args.sampler == "top_p":
        options["p"] = args.top_p
        if args.top_k:
            options["k"] = args.top_k
    if args.sampler == "beam":
        options.update(num_beams=args.num_beams, length_penalty=args.length_penalty,
                       early_stopping=args.early_stopping)
    if args.sampler == "contrastive":
        options.update(k=args.top_k or 5, alpha=args.penalty_alpha)
    return get_sampler(args.sampler, **options)


def _generate_options(args: argparse.Namespace, lm) -> dict:
    """generate()'s keyword options from the command line's."""
    options: dict = {"max_new_tokens": args.max_new_tokens, "sampler": _sampler(args),
                     "seed": args.seed, "repetition_penalty": args.repetition_penalty,
                     "no_repeat_ngram_size": args.no_repeat_ngram_size,
                     "min_new_tokens": args.min_new_tokens, "stop_strings": args.stop}
    if args.bad_words:
        tokenizer = lm.preprocessor.tokenizer
        options["bad_words_ids"] = [tokenizer.tokenize(word) for word in args.bad_words]
    if args.stop_token_ids is not None:
        options["stop_token_ids"] = args.stop_token_ids or None
    return options


def cmd_generate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    lm = _load(args.model, args.backend, args.dtype, progress=not args.quiet)
    loaded = time.perf_counter()
    options = _generate_options(args, lm)
    out = sys.stdout
    count = 0
    first = None
    if not getattr(options["sampler"], "streams", True):
        # Beam search knows its text only at the end.
        text = lm.generate(args.prompt, **options)
        first = time.perf_counter()
        out.write(text)
    else:
        out.write(args.prompt)
        out.flush()
        for piece in lm.stream(args.prompt, **options):
            if first is None:
                first = time.perf_counter()
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


def _early_stopping(value: str) -> bool | str:
    choices = {"true": True, "false": False, "never": "never"}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"{value!r}; expected true, false or never")
    return choices[value.lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webgpt2", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate text from a prompt, streamed")
    gen.add_argument("prompt")
    gen.add_argument("--model", default=DEFAULT_MODEL,
                     help="preset name, local folder, hub id or folder URL "
                          f"(default: {DEFAULT_MODEL}, shipped in the package)")
    gen.add_argument("--backend", default=None, help="cpu, webgpu (default: the first available)")
    gen.add_argument("--dtype", default=None, choices=["float32", "float16"],
                     help="weight storage on webgpu (float16 halves the weight memory and traffic)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--sampler", default="greedy",
                     choices=["greedy", "random", "top_k", "top_p", "beam", "contrastive"])
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=None,
                     help="top_k/top_p: the k cut; contrastive: the candidates (default 5)")
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, default=None)
    search = gen.add_argument_group("beam and contrastive search")
    search.add_argument("--num-beams", type=int, default=4)
    search.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam: finished scores are divided by length ** this")
    search.add_argument("--early-stopping", type=_early_stopping, default=False,
                        metavar="{true,false,never}")
    search.add_argument("--penalty-alpha", type=float, default=0.6,
                        help="contrastive: the degeneration penalty's weight, in [0, 1]")
    proc = gen.add_argument_group("logits processors and stopping")
    proc.add_argument("--repetition-penalty", type=float, default=None)
    proc.add_argument("--no-repeat-ngram-size", type=int, default=None)
    proc.add_argument("--min-new-tokens", type=int, default=None)
    proc.add_argument("--bad-words", action="append", default=None, metavar="TEXT",
                      help="never generate this text's tokens in a row (repeatable; mind "
                           "the leading space: ' word')")
    proc.add_argument("--stop", action="append", default=None, metavar="TEXT",
                      help="stop once the generated text contains TEXT (repeatable); the "
                           "output ends where it ends")
    proc.add_argument("--stop-token-ids", type=int, nargs="*", default=None, metavar="ID",
                      help="stop tokens instead of the end token (none: never stop early)")
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
    if getattr(args, "sampler", None) == "top_k" and args.top_k is None:
        args.top_k = 5
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
