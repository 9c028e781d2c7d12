"""Host-side tensor data and the backends' shared names: what crosses from the loader to a
backend, with no numpy needed (the core runs in a Pyodide that has none)."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "int32")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}


class BackendError(RuntimeError):
    """A backend could not be created or an operation failed on the device."""


@dataclass(frozen=True)
class HostTensor:
    """Host-side tensor data: little-endian bytes, a dtype name and a shape.

    This is how weights cross from the loader to a backend. It needs no numpy, so the
    core runs in a Pyodide that has none.

    Example:
        >>> t = HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2))
        >>> t.shape, t.dtype, t.nbytes
        ((2, 2), 'float32', 16)
    """

    dtype: str
    shape: tuple[int, ...]
    data: Any  # bytes, bytearray or memoryview

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported; expected one of {DTYPES}")
        expected = self.size * ITEMSIZE[self.dtype]
        if len(memoryview(self.data).cast("B")) != expected:
            raise ValueError(
                f"tensor of shape {self.shape} and dtype {self.dtype} needs {expected} bytes; "
                f"got {len(memoryview(self.data).cast('B'))}"
            )

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]

    @classmethod
    def from_floats(cls, values: Sequence[float], shape: tuple[int, ...]) -> HostTensor:
        return cls("float32", tuple(shape), struct.pack(f"<{len(values)}f", *values))


def flatten(values: Any) -> tuple[list, tuple[int, ...]]:
    """Nested lists -> (flat list, shape), checking that the nesting is rectangular."""
    if not isinstance(values, (list, tuple)):
        return [values], ()
    if not values:
        return [], (0,)
    parts = [flatten(v) for v in values]
    inner = parts[0][1]
    if any(shape != inner for _, shape in parts):
        raise ValueError(f"ragged nested list: rows have shapes {[s for _, s in parts]}")
    flat: list = []
    for part, _ in parts:
        flat.extend(part)
    return flat, (len(values),) + inner


def packed(values: Any, dtype: str) -> tuple[array, tuple[int, ...], str]:
    """Nested lists as (a packed int32 or float32 array, shape, dtype): how a device backend
    takes a `tensor()` call's values (float16 values are held as float32)."""
    flat, shape = flatten(values)
    if dtype == "int32":
        return array("i", [int(v) for v in flat]), shape, dtype
    return array("f", [float(v) for v in flat]), shape, "float32"


def nest(flat: list, shape: Sequence[int]) -> Any:
    """The flat list's values as nested lists of this shape (the inverse of `flatten`)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
