"""Argument checks shared by every backend: the `Backend` interface runs them before it calls
a backend's `_operation`, so every backend answers the same bad call with the same error.

Wrong types (a float or a bool where a count is expected) are `TypeError`; values out of
range are `ValueError`. Messages name the argument, the bad value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any


def integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """value as an int, checked to be an integer (not a bool) with low <= value <= high."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} is {value!r}; expected an integer")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            expected = f"an integer in [{low}, {high}]"
        else:
            expected = f"an integer >= {low}" if high is None else f"an integer <= {high}"
        raise ValueError(f"{name} is {value}; expected {expected}")
    return value


def real(name: str, value: Any) -> float:
    """value as a float, checked to be a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} is {value!r}; expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}; expected a finite number")
    return value


def positive(name: str, value: Any) -> float:
    value = real(name, value)
    if not value > 0:
        raise ValueError(f"{name} is {value}; expected a positive number")
    return value


def rank(name: str, shape: tuple[int, ...], expected: int, names: str) -> None:
    if len(shape) != expected:
        raise ValueError(f"{name} has shape {shape}; expected {names}")


def logit_rows(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, width) of logits shaped [B, V] or [B, 1, V]."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[1] != 1):
        raise ValueError(f"{name} has shape {shape}; expected [B, V] or [B, 1, V]")
    return shape[0], shape[-1]


def head_input(x_shape: tuple[int, ...], table_shape: tuple[int, ...],
               rows: bool = False) -> None:
    """x [..., H] (with rows, [B, H] or [B, 1, H]) against a token table [V, H]."""
    rank("token_table", table_shape, 2, "[V, H]")
    if not x_shape or x_shape[-1] != table_shape[1]:
        raise ValueError(f"x has shape {x_shape}; the token table {table_shape} expects "
                         f"{table_shape[1]} features")
    if rows and (len(x_shape) not in (2, 3) or (len(x_shape) == 3 and x_shape[1] != 1)):
        raise ValueError(f"x has shape {x_shape}; expected [B, H] or [B, 1, H]")


def contrastive_candidates(c_shape: tuple[int, ...], n_shape: tuple[int, ...]) -> None:
    """max_cosine_similarity's context [B, S, H] and candidates [N, 1, H] or [N, H]."""
    rank("context", c_shape, 3, "[B, S, H]")
    if len(n_shape) not in (2, 3) or (len(n_shape) == 3 and n_shape[1] != 1) \
            or n_shape[-1] != c_shape[-1]:
        raise ValueError(f"candidates have shape {n_shape}; expected [N, 1, "
                         f"{c_shape[-1]}] or [N, {c_shape[-1]}]")
    if not c_shape[0] or not c_shape[1] or n_shape[0] % c_shape[0]:
        raise ValueError(f"{n_shape[0]} candidates for a context of shape {c_shape}; "
                         "expected a non-empty context and a multiple of its batch")


def ids_in_range(name: str, values: Sequence[Any], size: int) -> None:
    """Every id an integer in [0, size)."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"{name} {v!r} is not an integer")
        if not 0 <= v < size:
            raise ValueError(f"{name} {int(v)} is outside the vocabulary; expected "
                             f"0 <= id < {size}")


def row_indices(indices: Sequence[Any], batch: int) -> list[int]:
    """Batch row indices, each an integer in [0, batch)."""
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, Integral):
            raise TypeError(f"row index {i!r} is not an integer")
        if not 0 <= i < batch:
            raise ValueError(f"row index {int(i)} is outside a batch of {batch}; expected "
                             f"0 <= index < {batch}")
        out.append(int(i))
    return out


def token_lists(token_ids: Sequence[Sequence[Any]], rows: int) -> None:
    """One list of integer token ids per row of logits (ids outside the vocabulary are
    allowed: the operations ignore them)."""
    if len(token_ids) != rows:
        raise ValueError(f"{len(token_ids)} lists of token ids for {rows} rows of logits; "
                         "expected one per row")
    for ids in token_ids:
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, Integral):
                raise TypeError(f"token id {t!r} is not an integer")
