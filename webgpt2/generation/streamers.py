"""Streaming: generated token ids in, text pieces out.

A streamer is any object with `put(token_ids)` and `end()` (transformers' `BaseStreamer`):
`generate(..., streamer=...)` puts each step's new ids of its one prompt, the stop token
included, then calls `end()`. `TextStreamer` is the streamer that turns them into text;
`stream` and `stream_tokens` use it.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Any

from webgpt2.generation.stopping import GeneratedText, StopStringMatcher

__all__ = ["TextStreamer"]


class TextStreamer:
    """Turns generated ids into text pieces: a piece never ends inside a UTF-8 character
    (GPT-2 spells many characters over several tokens), special tokens are no text, and
    what may begin a stop string is held back until the next tokens show whether it does.

    With stop_strings, the text ends where the first stop string ends, as generate's
    returned text does; ids put after that add nothing. Every `put` and the final `end`
    join to exactly the text `generate` returns after the prompt.

    Example:
        >>> class Bytes:   # a toy tokenizer: token i is the i-th byte string
        ...     special_token_ids = [3]
        ...     pieces = [b"Hi", b" there!", b"! more", b"<|end|>", "\\u20ac".encode()]
        ...     def ids_to_bytes(self, ids):
        ...         return b"".join(self.pieces[i] for i in ids)
        >>> streamer = TextStreamer(Bytes(), stop_strings=["!!"])
        >>> [streamer.put([0]), streamer.put([1]), streamer.put([2]), streamer.end()]
        ['Hi', ' there', '!!', '']
        >>> streamer = TextStreamer(Bytes())
        >>> [streamer.put([4, 3]), streamer.end()]
        ['€', '']
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str] | str | None = None
                 ) -> None:
        self.token_bytes = token_bytes_of(tokenizer)
        matcher = None if stop_strings is None else StopStringMatcher(stop_strings)
        self.row = GeneratedText(matcher)
        self.sent = 0  # bytes of row.data already given out as text
        self._decoder: Any = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def stopped(self) -> bool:
        """Whether a stop string has ended the text."""
        return self.row.text_end is not None

    def put(self, token_ids: int | Sequence[int]) -> str:
        """Add generated ids; returns the text that became safe to show (maybe "")."""
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        for token in ids:
            if self.stopped:
                break
            self.row.add(self.token_bytes(token))
        return self._pull(final=False)

    def end(self) -> str:
        """The text held back until now (incomplete characters become U+FFFD)."""
        return self._pull(final=True)

    def _pull(self, final: bool) -> str:
        row = self.row
        if row.text_end is not None:
            end = row.text_end
        elif final or row.matcher is None:
            end = len(row.data)
        else:
            end = len(row.data) - row.matcher.holdback(row.data)
        text = ""
        if end > self.sent:
            text = self._decoder.decode(bytes(row.data[self.sent:end]))
            self.sent = end
        if final or row.text_end is not None:
            text += self._decoder.decode(b"", final=True)
            self._decoder.reset()
        return text


def token_bytes_of(tokenizer: Any) -> Callable[[int], bytes]:
    """A token's bytes in generated text: special tokens count as no text."""
    special = set(tokenizer.special_token_ids)
    table: dict[int, bytes] = {}

    def token_bytes(token: int) -> bytes:
        data = table.get(token)
        if data is None:
            data = b"" if token in special else tokenizer.ids_to_bytes([token])
            table[token] = data
        return data

    return token_bytes
