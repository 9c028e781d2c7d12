"""Train the embedded default model: a small GPT-2 on Shakespeare (issue 6).

Seeded and reproducible: the model is initialised after ``torch.manual_seed(seed)``, the
batch offsets for every step are drawn up front from ``numpy.random.default_rng(seed)``,
dropout is off (no random numbers are drawn while training), deterministic algorithms are
enforced and one thread is used. The same command on the same machine and software gives
bitwise-identical weights (also across a --resume from a checkpoint).

Trains ``transformers.GPT2LMHeadModel(GPT2Config(...))`` (GPT-2 architecture: gelu_new,
layer_norm_epsilon 1e-5, tied embeddings) on contiguous token blocks of the training split,
with AdamW and a linear-warmup + cosine learning-rate schedule, matmuls under bfloat16
autocast (weights and optimizer state in float32). At the end it measures the loss and
perplexity with transformers, saves the model in float16 with ``save_pretrained`` next to
the tokenizer files, loads that folder back and checks the held-out loss again.

Usage (from the repository root, after tools/prepare_corpus.py and tools/train_tokenizer.py):

    python tools/train_shakespeare.py                       # the shipped model
    python tools/train_shakespeare.py --steps 20 --no-save  # a smoke run: time the steps

Working files (token caches, checkpoint, log, metrics) go to tools/.work/train/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSET = ROOT / "webgpt2" / "assets" / "gpt2_shakespeare"
EOT = "<|endoftext|>"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", type=Path, default=HERE / ".work" / "corpus")
    ap.add_argument("--tokenizer", type=Path, default=ASSET, help="folder with tokenizer.json")
    ap.add_argument("--out", type=Path, default=ASSET, help="where the float16 model is saved")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "train")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=16, help="blocks per step")
    ap.add_argument("--block", type=int, default=256, help="tokens per block (= n_positions)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr = lr * this")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--amp", choices=("bf16", "none"), default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument(
        "--eval-windows", type=int, default=48, help="held-out windows for the periodic eval"
    )
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true", help="continue from WORK/ckpt.pt")
    ap.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="testing: save WORK/ckpt.pt after this step, print the state hash and exit",
    )
    ap.add_argument("--no-save", action="store_true", help="do not write OUT (smoke runs)")
    ap.add_argument("--skip-untrained-eval", action="store_true")
    return ap.parse_args(argv)


def log(msg, fh=None):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def encode_split(tokenizer_json: Path, text_path: Path, cache_dir: Path) -> np.ndarray:
    from tokenizers import Tokenizer

    key = hashlib.sha256(tokenizer_json.read_bytes() + text_path.read_bytes()).hexdigest()[:16]
    cache = cache_dir / f"{text_path.stem}-{key}.npy"
    if cache.exists():
        return np.load(cache)
    tok = Tokenizer.from_file(str(tokenizer_json))
    text = text_path.read_text(encoding="utf-8")
    eot = tok.token_to_id(EOT)
    ids = []
    for doc in text.split(EOT)[1:]:  # every document is preceded by <|endoftext|>
        ids.append(eot)
        ids.extend(tok.encode(doc).ids)
    arr = np.asarray(ids, dtype=np.uint16)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def windows(tokens: np.ndarray, block: int) -> list[np.ndarray]:
    """Non-overlapping windows of `block` tokens covering the whole stream (last one shorter)."""
    return [
        tokens[i : i + block]
        for i in range(0, len(tokens), block)
        if len(tokens[i : i + block]) >= 2
    ]


def hf_loss(model, wins: list[np.ndarray], batch: int = 16) -> tuple[float, int]:
    """Token-weighted mean negative log-likelihood (nats) over windows, computed by
    transformers itself (`model(input_ids, labels=input_ids).loss`). Each window's first
    token is context only."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        by_len: dict[int, list] = {}
        for w in wins:
            by_len.setdefault(len(w), []).append(w)
        for n, ws in sorted(by_len.items()):
            for i in range(0, len(ws), batch):
                x = torch.from_numpy(np.stack(ws[i : i + batch]).astype(np.int64))
                loss = model(input_ids=x, labels=x).loss.double().item()
                k = x.shape[0] * (n - 1)
                total += loss * k
                count += k
    return total / count, count


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    lo = args.lr * args.min_lr_ratio
    return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * min(1.0, t)))


def state_sha256(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    args.work.mkdir(parents=True, exist_ok=True)
    with open(args.work / "train.log", "a") as logf:
        return train(args, logf)


def train(args, logf) -> int:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    log(f"args: {json.dumps({k: str(v) for k, v in vars(args).items()})}", logf)

    tok_json = args.tokenizer / "tokenizer.json"
    vocab = json.loads((args.tokenizer / "vocab.json").read_text(encoding="utf-8"))
    vocab_size = len(vocab)
    eot_id = vocab[EOT]
    assert eot_id == vocab_size - 1, "<|endoftext|> must have the last id"
    train_tokens = encode_split(tok_json, args.corpus / "train.txt", args.work)
    held_tokens = encode_split(tok_json, args.corpus / "heldout.txt", args.work)
    log(
        f"tokens: train {len(train_tokens):,}, held-out {len(held_tokens):,}, vocab {vocab_size}",
        logf,
    )

    T, B = args.block, args.batch
    held_wins = windows(held_tokens, T)
    pick = (
        np.linspace(0, len(held_wins) - 2, args.eval_windows).round().astype(int)
    )  # full-length ones
    quick_wins = [held_wins[i] for i in pick]
    # A train sample the size of the held-out set, evenly spaced, for the final train loss.
    train_wins_all = windows(train_tokens, T)
    pick = np.linspace(0, len(train_wins_all) - 2, len(held_wins)).round().astype(int)
    train_wins = [train_wins_all[i] for i in pick]

    # Deterministic data order: every step's block offsets, drawn up front.
    rng = np.random.default_rng(args.seed)
    offsets = rng.integers(0, len(train_tokens) - T, size=(args.steps, B))  # high is exclusive
    train_t = torch.from_numpy(train_tokens.astype(np.int64))
    ar = torch.arange(T + 1)

    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=T,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=None,  # 4 * n_embd
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.02,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {args.layers} layers, width {args.width}, {args.heads} heads, n_positions {T}, "
        f"{n_params:,} parameters (tied embeddings)",
        logf,
    )

    metrics = {
        "n_params": n_params,
        "vocab_size": vocab_size,
        "train_tokens": len(train_tokens),
        "heldout_tokens": len(held_tokens),
    }
    if args.resume and (args.work / "metrics.json").exists():
        metrics.update(json.loads((args.work / "metrics.json").read_text()))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, args.beta2),
        eps=1e-8,
    )

    start = 0
    history = []
    ckpt_path = args.work / "ckpt.pt"
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, history = ck["step"], ck["history"]
        log(f"resumed at step {start}", logf)
    elif not args.skip_untrained_eval:
        t0 = time.time()
        loss0, n0 = hf_loss(model, held_wins)
        metrics["untrained_heldout_loss"] = loss0
        metrics["untrained_heldout_ppl"] = math.exp(loss0)
        log(
            f"untrained: held-out loss {loss0:.4f}, ppl {math.exp(loss0):.1f} over {n0:,} tokens "
            f"({time.time() - t0:.0f}s)",
            logf,
        )

    amp = args.amp == "bf16"
    t_train = time.time()
    elapsed_before = history[-1]["elapsed"] if history else 0.0
    recent = []
    for step in range(start, args.steps):
        model.train()
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(offsets[step]).unsqueeze(1) + ar  # [B, T+1]
        blk = train_t[idx]
        x, y = blk[:, :-1], blk[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        recent.append(loss.item())

        done = step + 1
        elapsed = elapsed_before + time.time() - t_train
        if done % 10 == 0 or done == args.steps:
            avg = sum(recent) / len(recent)
            log(
                f"step {done}/{args.steps} loss {avg:.4f} lr {lr:.2e} gnorm {gnorm:.2f} "
                f"{elapsed:.0f}s ({(time.time() - t_train) / (done - start):.2f}s/step)",
                logf,
            )
            history.append({"step": done, "train_loss": avg, "lr": lr, "elapsed": elapsed})
            recent = []
        if args.eval_every and (done % args.eval_every == 0 or done == args.steps):
            ql, _ = hf_loss(model, quick_wins)
            history[-1]["heldout_loss_quick"] = ql
            log(f"step {done}: held-out loss (quick, {len(quick_wins)} windows) {ql:.4f}", logf)
        stop = done == args.stop_after
        if stop or (args.ckpt_every and done % args.ckpt_every == 0 and done < args.steps):
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "step": done,
                    "history": history,
                },
                tmp,
            )
            tmp.replace(ckpt_path)
            (args.work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if stop:
            log(f"stopped after step {done}; float32 state sha256 {state_sha256(model)}", logf)
            return 0

    train_time = history[-1]["elapsed"] if history else 0.0
    sha = state_sha256(model)
    log(f"trained {args.steps} steps in {train_time:.0f}s; float32 state sha256 {sha}", logf)

    t0 = time.time()
    held_loss, held_n = hf_loss(model, held_wins)
    train_loss, train_n = hf_loss(model, train_wins)
    log(
        f"float32: held-out loss {held_loss:.4f} ppl {math.exp(held_loss):.2f} "
        f"({held_n:,} tokens); "
        f"train-sample loss {train_loss:.4f} ppl {math.exp(train_loss):.2f} ({train_n:,} tokens) "
        f"({time.time() - t0:.0f}s)",
        logf,
    )
    last = history[-5:]
    metrics.update(
        {
            "steps": args.steps,
            "batch_blocks": B,
            "block_tokens": T,
            "tokens_seen": args.steps * B * T,
            "epochs": args.steps * B * T / len(train_tokens),
            "train_time_s": train_time,
            "float32_state_sha256": sha,
            "final_train_loss_last50_steps": sum(h["train_loss"] for h in last) / max(1, len(last)),
            "f32_heldout_loss": held_loss,
            "f32_heldout_ppl": math.exp(held_loss),
            "heldout_predicted_tokens": held_n,
            "f32_train_sample_loss": train_loss,
            "f32_train_sample_ppl": math.exp(train_loss),
            "train_sample_predicted_tokens": train_n,
            "history": history,
            "software": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
            },
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "threads": torch.get_num_threads(),
            },
            "args": {k: str(v) for k, v in vars(args).items()},
        }
    )

    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        model.half().save_pretrained(str(args.out))
        # Load the shipped folder back with transformers (f16 weights computed in f32).
        back = GPT2LMHeadModel.from_pretrained(str(args.out), dtype=torch.float32)
        back_loss, _ = hf_loss(back, held_wins)
        back_train, _ = hf_loss(back, train_wins)
        metrics.update(
            {
                "f16_heldout_loss": back_loss,
                "f16_heldout_ppl": math.exp(back_loss),
                "f16_train_sample_loss": back_train,
                "f16_train_sample_ppl": math.exp(back_train),
            }
        )
        log(
            f"float16 folder: held-out loss {back_loss:.4f} ppl {math.exp(back_loss):.2f} "
            f"(diff vs float32 {back_loss - held_loss:+.2e}); train-sample loss {back_train:.4f}",
            logf,
        )
        assert abs(back_loss - held_loss) < 1e-3, "float16 weights changed the held-out loss"
        st = args.out / "model.safetensors"
        metrics["model_safetensors_sha256"] = hashlib.sha256(st.read_bytes()).hexdigest()
        log(f"model.safetensors sha256 {metrics['model_safetensors_sha256']}", logf)

    (args.work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"metrics in {args.work / 'metrics.json'}", logf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
