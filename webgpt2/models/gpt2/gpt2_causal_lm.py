"""GPT-2 causal language model: the backbone, a tied LM head, cached decoding, generate."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webgpt2.backends import Backend
from webgpt2.generation.generative_task import GenerativeTask
from webgpt2.generation.inputs import check_padding_mask
from webgpt2.layers import ReverseEmbedding
from webgpt2.models.gpt2.gpt2_backbone import GPT2Backbone


class GPT2CausalLM(GenerativeTask):
    """An end-to-end GPT-2 model for causal language modelling (TF.js / KerasHub
    `GPT2CausalLM`).

    The language-modelling head is `ReverseEmbedding(backbone.token_embedding)`: logits are
    the final hidden states projected onto the token embedding (weight tying). Text in and
    out goes through `preprocessor` (a `GPT2CausalLMPreprocessor`) when one is attached.

    The cache is `[batch, num_layers, 2, max_length, num_heads, head_dim]` (keys at 0,
    values at 1). It lives on the backend and `call_with_cache` updates it in place (and
    returns it, so code written for KerasHub's functional style works unchanged).

    Example:
        >>> from webgpt2 import GPT2CausalLM
        >>> lm = GPT2CausalLM.from_preset("gpt2_shakespeare_en")   # shipped, no download
        >>> text = lm.generate("ROMEO:", max_new_tokens=8)
        >>> text.startswith("ROMEO:")
        True
    """

    def __init__(self, backbone: GPT2Backbone, preprocessor: Any = None) -> None:
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = ReverseEmbedding(backbone.token_embedding)

    @property
    def backend(self) -> Backend:
        return self.backbone.backend

    @property
    def max_sequence_length(self) -> int:
        return self.backbone.max_sequence_length

    @property
    def vocabulary_size(self) -> int:
        return self.backbone.vocabulary_size

    def cache_bytes(self, batch: int, cache_length: int) -> int:
        """Bytes of a float32 KV cache for `batch` rows of `cache_length` positions."""
        b = self.backbone
        return 4 * batch * b.num_layers * 2 * cache_length * b.hidden_dim

    # ---- loading ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, backend: Backend | str | None = None,
                        dtype: str | None = None, revision: str = "main",
                        cache_dir: str | os.PathLike | None = None,
                        progress: bool | Callable[[int, int], None] = True,
                        sequence_length: int | None = None) -> GPT2CausalLM:
        """Load a Hugging Face GPT-2 checkpoint: a local folder, a hub id
        (`openai-community/gpt2`) or the URL of a folder.

        The folder needs `config.json`, `model.safetensors` (pickled `pytorch_model.bin` is
        refused) and `vocab.json` + `merges.txt` or `tokenizer.json`. Downloads go to a local
        cache, atomically, with a progress bar on stderr (`progress=False` for none; a
        callable `progress(bytes_done, bytes_total)` receives the weight upload's progress
        instead, as the web page does). `dtype="float16"` stores weights in half
        precision where the backend supports it.
        """
        from webgpt2.io.checkpoint import read_checkpoint_weights, read_gpt2_config
        from webgpt2.io.hub import resolve_checkpoint
        from webgpt2.io.progress import ProgressBar
        from webgpt2.models.gpt2.gpt2_causal_lm_preprocessor import GPT2CausalLMPreprocessor
        from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer

        folder = Path(resolve_checkpoint(source, revision=revision, cache_dir=cache_dir,
                                         progress=progress is True))
        config = read_gpt2_config(folder)
        # Tokenizer first: it is cheap, and a broken one should fail before weights upload.
        tokenizer = GPT2Tokenizer.from_pretrained(folder)
        largest_id = tokenizer.token_to_id(tokenizer.get_vocabulary()[-1])
        if largest_id >= config["vocabulary_size"]:
            raise ValueError(
                f"the tokenizer's ids go up to {largest_id} but the model's vocabulary_size "
                f"is {config['vocabulary_size']} (config.json's vocab_size)"
            )
        backbone = GPT2Backbone(**config, backend=backend)  # its backend starts on first use
        # Checked against the backbone's own schema before anything is uploaded.
        weights = backbone.check_weights(read_checkpoint_weights(folder))
        total = sum(w.nbytes for w in weights.values())
        if callable(progress):
            done = 0

            def uploaded(nbytes: int) -> None:
                nonlocal done
                done += nbytes
                progress(done, total)

            backbone.load_weights(weights, dtype=dtype, uploaded=uploaded)
        else:
            with ProgressBar(f"loading weights ({backbone.backend.name})", total,
                             enabled=progress) as bar:
                backbone.load_weights(weights, dtype=dtype, uploaded=bar.update)
        del weights
        preprocessor = GPT2CausalLMPreprocessor(
            tokenizer, sequence_length=sequence_length or config["max_sequence_length"])
        return cls(backbone, preprocessor)

    @classmethod
    def from_preset(cls, preset: str, **kwargs: Any) -> GPT2CausalLM:
        """Load a named preset: `gpt2_shakespeare_en` (shipped in the package),
        `gpt2_base_en`, `gpt2_medium_en`, `gpt2_large_en`, `gpt2_extra_large_en` (from the
        Hugging Face hub). Takes the options of `from_pretrained`."""
        from webgpt2.models.gpt2.gpt2_presets import resolve_preset

        return cls.from_pretrained(resolve_preset(preset), **kwargs)

    # ---- the model --------------------------------------------------------------------
    def _token_tensor(self, token_ids: Any) -> tuple[Any, tuple[int, int]]:
        """A backend int32 tensor of ids [B, S], checked on the host when given as lists."""
        backend = self.backend
        if isinstance(token_ids, (list, tuple)):
            if not token_ids or not all(isinstance(r, (list, tuple)) for r in token_ids):
                raise ValueError("token_ids must be a non-empty list of rows of token ids")
            width = len(token_ids[0])
            if width == 0 or any(len(r) != width for r in token_ids):
                raise ValueError("token_ids rows must be non-empty and of one length")
            vocabulary_size = self.backbone.vocabulary_size
            for row in token_ids:
                for t in row:
                    if not isinstance(t, int) or not 0 <= t < vocabulary_size:
                        raise ValueError(f"token id {t!r} is outside the vocabulary; expected "
                                         f"0 <= id < {vocabulary_size}")
            return backend.tensor([list(r) for r in token_ids], "int32"), (len(token_ids),
                                                                           width)
        shape = backend.shape(token_ids)
        if len(shape) != 2:
            raise ValueError(f"token_ids has shape {shape}; expected [batch, sequence]")
        return token_ids, (shape[0], shape[1])

    def _check_cache(self, cache: Any, batch: int, seq_len: int, index: int) -> None:
        bb = self.backbone
        shape = tuple(self.backend.shape(cache))
        expected = (batch, bb.num_layers, 2, None, bb.num_heads, bb.head_dim)
        if len(shape) != 6 or any(e is not None and s != e for s, e in zip(shape, expected)):
            raise ValueError(
                f"cache has shape {shape}; expected [batch={batch}, num_layers={bb.num_layers}, "
                f"2, max_length, num_heads={bb.num_heads}, head_dim={bb.head_dim}]"
            )
        if not isinstance(index, int) or index < 0 or index + seq_len > shape[3]:
            raise ValueError(
                f"cache_update_index {index!r} with {seq_len} new token(s) does not fit a cache "
                f"of max_length {shape[3]}; expected 0 <= index <= {shape[3] - seq_len}"
            )

    def project(self, hidden_states: Any, top_k: int = 0) -> Any:
        """logits [B, S, V] from hidden states, through the tied embedding (with top_k > 0,
        those below each row's k-th largest may be -inf: `Backend.reverse_embedding`)."""
        return self.lm_head(hidden_states, top_k)

    def call_with_cache(self, token_ids: Any, cache: Any, cache_update_index: int, *,
                        top_k: int = 0) -> tuple[Any, Any, Any]:
        """Forward `token_ids` [B, S] at positions cache_update_index.. through the cache.

        Returns (logits [B, S, V], hidden_states [B, S, H], cache). The cache is updated in
        place and returned. With top_k > 0, logits below each row's k-th largest may come
        back as -inf (all that top-k sampling reads; the backend may skip computing them).
        """
        hidden_states = self._forward_with_cache(token_ids, cache, cache_update_index)
        return self.project(hidden_states, top_k), hidden_states, cache

    def _forward_with_cache(self, token_ids: Any, cache: Any, index: int) -> Any:
        ids, (batch, seq_len) = self._token_tensor(token_ids)
        self._check_cache(cache, batch, seq_len, index)
        hidden_states = self.backbone.forward(ids, cache, index)
        if ids is not token_ids:
            self.backend.release(ids)
        return hidden_states

    def greedy_next_tokens(self, token_ids: Any, cache: Any, cache_update_index: int
                           ) -> list[int]:
        """call_with_cache, then each row's greedy next token: the first largest logit at its
        last position, as `backend.argmax` of those logits gives it. Generation's greedy
        steps call it; the backend may skip the logits it can prove smaller
        (`Backend.reverse_embedding_argmax`), so none are returned.

        Example (the cache is written alike both times):
            >>> from webgpt2 import GPT2Backbone
            >>> bb = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
            ...                   intermediate_dim=16, max_sequence_length=16, backend="wasm")
            >>> bb.initialize_weights(seed=0)
            >>> lm = GPT2CausalLM(bb)
            >>> cache = lm.build_cache([[1, 2, 3]], cache_length=8)[1]
            >>> logits = lm.call_with_cache([[4]], cache, 3)[0]
            >>> lm.greedy_next_tokens([[4]], cache, 3) == lm.backend.argmax(logits)
            True
        """
        hidden_states = self._forward_with_cache(token_ids, cache, cache_update_index)
        seq_len = self.backend.shape(hidden_states)[1]
        last = hidden_states
        if seq_len > 1:
            last = self.backend.select_position(hidden_states, seq_len - 1)
            self.backend.release(hidden_states)
        try:
            return self.lm_head.argmax(last)
        finally:
            self.backend.release(last)

    def build_cache(self, token_ids: Any, cache_length: int | None = None,
                    last_position_only: bool = False) -> tuple[Any, Any]:
        """Prefill: run `token_ids` [B, S] from position 0 into a new cache.

        The cache has max_length `cache_length` (default S, as KerasHub). Returns
        (hidden_states [B, S, H], cache). With last_position_only, hidden_states is the
        last position's only, [B, 1, H]: what generation's next step needs, and it skips
        the work nothing reads then (the last block's projection and MLP at the other
        positions), which transformers' generate does not.

        Example:
            >>> from webgpt2 import GPT2Backbone
            >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
            ...                         hidden_dim=8, intermediate_dim=16,
            ...                         max_sequence_length=16, backend="cpu")
            >>> backbone.initialize_weights(seed=0)
            >>> lm = GPT2CausalLM(backbone)
            >>> hidden, cache = lm.build_cache([[1, 2, 3]], cache_length=8,
            ...                                last_position_only=True)
            >>> lm.backend.shape(hidden), lm.backend.shape(cache)
            ((1, 1, 8), (1, 1, 2, 8, 2, 4))
        """
        ids, (batch, seq_len) = self._token_tensor(token_ids)
        cache_length = seq_len if cache_length is None else cache_length
        if seq_len > self.max_sequence_length:
            raise ValueError(f"prompt is {seq_len} tokens; this model's max_sequence_length "
                             f"is {self.max_sequence_length}")
        if cache_length < seq_len:
            raise ValueError(f"cache_length {cache_length} is shorter than the {seq_len} "
                             "tokens to prefill")
        cache = self.backbone.new_cache(batch, cache_length)
        hidden_states = self.backbone.forward(ids, cache, 0,
                                              last_position_only=bool(last_position_only))
        if ids is not token_ids:
            self.backend.release(ids)
        return hidden_states, cache

    def __call__(self, token_ids: Any) -> Any:
        """logits [B, S, V] for a full sequence (no cache kept)."""
        hidden_states, cache = self.build_cache(token_ids)
        self.backend.release(cache)
        logits = self.project(hidden_states)
        self.backend.release(hidden_states)
        return logits

    # ---- scoring ----------------------------------------------------------------------
    def score(self, token_ids: Any, padding_mask: Any = None, target_ids: Any = None,
              scoring_mode: str = "loss") -> list[list[float]]:
        """Per-token scores of packed rows (KerasHub's `score`).

        scoring_mode "loss": the negative log-likelihood of target_ids[b, s] after
        token_ids[b, :s+1]; target_ids defaults to token_ids shifted left by one, and the
        last position (with no target) and positions whose padding_mask (of the target) is
        False score 0. "log_likelihood": the same, positive log-probabilities.
        Returns [batch][seq] floats.
        """
        if scoring_mode not in ("loss", "log_likelihood"):
            raise ValueError(f"scoring_mode {scoring_mode!r}; expected 'loss' or "
                             "'log_likelihood'")
        ids, (batch, seq_len) = self._token_tensor(token_ids)
        rows = token_ids if isinstance(token_ids, (list, tuple)) else self.backend.to_list(ids)
        for name, value in (("padding_mask", padding_mask), ("target_ids", target_ids)):
            if value is not None and (len(value) != batch
                                      or any(len(row) != seq_len for row in value)):
                raise ValueError(f"{name} must have token_ids' shape [{batch}, {seq_len}]; "
                                 f"got {len(value)} rows of lengths "
                                 f"{sorted({len(row) for row in value})}")
        if padding_mask is not None:
            check_padding_mask(padding_mask)
        shifted = target_ids is None
        if shifted:
            target_ids = [list(r[1:]) + [0] for r in rows]
        if padding_mask is None:
            padding_mask = [[True] * seq_len for _ in range(batch)]
        if shifted:
            valid = [[bool(m) for m in row[1:]] + [False] for row in padding_mask]
        else:
            valid = [[bool(m) for m in row] for row in padding_mask]
        logits = self(ids)
        targets = self.backend.tensor(target_ids, "int32")
        log_probs = self.backend.token_log_probs(logits, targets)
        for t in (logits, targets):
            self.backend.release(t)
        if ids is not token_ids:
            self.backend.release(ids)
        sign = -1.0 if scoring_mode == "loss" else 1.0
        return [[sign * lp if v else 0.0 for lp, v in zip(row, vrow)]
                for row, vrow in zip(log_probs, valid)]

    def perplexity(self, text: str | list[int], stride: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> float:
        """exp(mean negative log-likelihood) of a text, in windows of the model's context.

        The text's tokens are scored in consecutive, non-overlapping windows of
        `stride` (default max_sequence_length) tokens, each predicting its tokens after the
        first, the way a held-out loss is usually measured.
        """
        if isinstance(text, str):
            ids = self._require_preprocessor().tokenizer.tokenize(text)
        else:
            ids = list(text)
        window = stride or self.max_sequence_length
        if len(ids) < 2:
            raise ValueError("perplexity needs at least 2 tokens of text")
        total, count = 0.0, 0
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start:start + window]
            if len(chunk) < 2:
                break
            losses = self.score([chunk])[0]
            total += sum(losses[:-1])
            count += len(chunk) - 1
            if progress:
                progress(min(start + window, len(ids)), len(ids))
        return math.exp(total / count)
