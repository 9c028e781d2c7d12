"""Add start/end tokens and pad to a fixed length (KerasHub's ``StartEndPacker``)."""

from __future__ import annotations

from collections.abc import Sequence

Ids = Sequence[int]
PackedIds = list[int] | list[list[int]]
PackedMask = list[bool] | list[list[bool]]


def _as_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


class StartEndPacker:
    """Packs token ids into fixed-length rows: start tokens, the ids, end tokens, padding.

    Rows longer than ``sequence_length`` lose ids from their right end, never the start or
    end tokens. Padding goes on the right. The padding mask is True on every position that
    holds a start token, an id or an end token, even where that id equals ``pad_value``
    (GPT-2 uses ``<|endoftext|>`` as start, end and pad). Plain Python lists in and out:
    one id list gives one row, a list of id lists gives a batch.

    Args:
        sequence_length: row length; ``None`` pads a batch to its longest row.
        start_value: id (or ids) put before each row, or ``None``.
        end_value: id (or ids) put after each row, or ``None``.
        pad_value: id that fills the rest of the row (0 when ``None``).
        return_padding_mask: also return the padding mask.

    Example:

    >>> from webgpt2.tokenizers import StartEndPacker
    >>> packer = StartEndPacker(6, start_value=1, end_value=2, pad_value=0,
    ...                         return_padding_mask=True)
    >>> packer([[5, 6], [5, 6, 7, 8, 9]])
    ([[1, 5, 6, 2, 0, 0], [1, 5, 6, 7, 8, 2]], [[True, True, True, True, False, False], \
[True, True, True, True, True, True]])
    >>> packer([5, 6], add_end_value=False)
    ([1, 5, 6, 0, 0, 0], [True, True, True, False, False, False])
    """

    def __init__(
        self,
        sequence_length: int | None,
        start_value: int | Sequence[int] | None = None,
        end_value: int | Sequence[int] | None = None,
        pad_value: int | None = None,
        return_padding_mask: bool = False,
    ) -> None:
        self.sequence_length = sequence_length
        self.start_value = start_value
        self.end_value = end_value
        self.pad_value = pad_value
        self.return_padding_mask = return_padding_mask

    def __call__(
        self,
        inputs: Ids | Sequence[Ids],
        sequence_length: int | None = None,
        add_start_value: bool = True,
        add_end_value: bool = True,
    ) -> PackedIds | tuple[PackedIds, PackedMask]:
        """Pack one id list or a batch; ``sequence_length`` overrides the packer's."""
        if hasattr(inputs, "tolist"):
            inputs = inputs.tolist()
        batched = bool(inputs) and not isinstance(inputs[0], int)
        rows = [list(row) for row in inputs] if batched else [list(inputs)]
        sequence_length = sequence_length or self.sequence_length
        start = _as_list(self.start_value) if add_start_value else []
        end = _as_list(self.end_value) if add_end_value else []
        pad = 0 if self.pad_value is None else self.pad_value

        packed = []
        for row in rows:
            row = start + row
            if sequence_length is not None:
                row = row[: max(sequence_length - len(end), 0)]
            packed.append(row + end)
        length = sequence_length
        if length is None:
            length = max((len(row) for row in packed), default=0)
        token_ids = [(row + [pad] * length)[:length] for row in packed]
        padding_mask = [
            [True] * min(len(row), length) + [False] * max(length - len(row), 0) for row in packed
        ]
        if not batched:
            token_ids, padding_mask = token_ids[0], padding_mask[0]
        if self.return_padding_mask:
            return token_ids, padding_mask
        return token_ids
