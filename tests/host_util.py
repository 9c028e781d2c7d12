"""HostTensors of NumPy arrays, for the tests that upload weights to a backend."""

from __future__ import annotations

import numpy as np

from webgpt2.backends import HostTensor

_NUMPY_DTYPES = {"float32": "<f4", "float16": "<f2", "int32": "<i4"}


def host(a: np.ndarray, dtype: str = "float32") -> HostTensor:
    """The array's values as a HostTensor of `dtype` (little-endian, contiguous)."""
    a = np.ascontiguousarray(a, dtype=_NUMPY_DTYPES[dtype])
    return HostTensor(dtype, a.shape, a.tobytes())
