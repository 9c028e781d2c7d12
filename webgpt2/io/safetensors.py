"""Reading and writing the safetensors format with the standard library only.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then
the tensors' little-endian bytes, offsets relative to the end of the header. The reader
checks the layout as strictly as the `safetensors` package does (offsets contiguous, covering
the data exactly, sizes matching shapes), and never copies tensor data: a file is memory-mapped
where the platform allows (Pyodide falls back to one read), and each tensor is a memoryview
slice of it. No numpy: this module runs in a Pyodide that has none.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from webgpt2.backends.base import HostTensor
from webgpt2.io.jsonsafe import excerpt, loads

try:
    import mmap
except ImportError:  # pragma: no cover - a platform without mmap (some WebAssembly builds)
    mmap = None  # type: ignore[assignment]

__all__ = ["SafetensorsError", "read_safetensors", "write_safetensors"]

Source = str | os.PathLike | bytes | bytearray | memoryview
Progress = Callable[[int, int], None]

# safetensors dtype -> HostTensor dtype, for the dtypes the runtime computes with.
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I32": "int32"}
_SAFETENSORS_DTYPE = {v: k for k, v in _DTYPES.items()}
# Item sizes of every dtype the format defines, so that tensors we skip are still checked.
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8,
}
# The safetensors package refuses headers above 100 MB; so do we (a guard against garbage).
_MAX_HEADER = 100_000_000
_READ_CHUNK = 16 << 20


class SafetensorsError(ValueError):
    """A file or buffer is not a valid safetensors file, or holds a dtype the runtime lacks."""


def read_safetensors(
    source: Source,
    *,
    skip: Callable[[str], bool] | None = None,
    progress: Progress | None = None,
) -> dict[str, HostTensor]:
    """Read a safetensors file or buffer into HostTensors that share its memory.

    source: a path (memory-mapped read-only where possible, else read once) or the file's
    bytes. skip: a predicate on tensor names; those tensors are checked for layout but never
    decoded and left out of the result (for example GPT-2's `attn.bias` masks). progress:
    called with (bytes done, total bytes) while the file is read.

    Returns {name: HostTensor} in file order, each `data` a memoryview slice (no copy).
    Raises SafetensorsError for a malformed file or a dtype other than F32, F16, BF16, I32.

    Example:
        >>> from webgpt2.backends.base import HostTensor
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> write_safetensors(path, {"w": HostTensor.from_floats([1.0, 2.0], (2,))})
        >>> t = read_safetensors(path)["w"]
        >>> t.dtype, t.shape, bytes(t.data) == HostTensor.from_floats([1.0, 2.0], (2,)).data
        ('float32', (2,), True)
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buffer = memoryview(source).cast("B")
        label = f"<{len(buffer)}-byte buffer>"
        if progress is not None:
            progress(len(buffer), len(buffer))
    else:
        label = os.fspath(source)
        buffer = _map_file(label, progress)
    header, data_start = _parse_header(buffer, label)
    data = buffer[data_start:]
    tensors: dict[str, HostTensor] = {}
    for name, info in header.items():
        if skip is not None and skip(name):
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(
                f"{label}: tensor {excerpt(name)} has dtype {excerpt(info['dtype'])}; the "
                "runtime reads "
                f"{', '.join(_DTYPES)} only"
            )
        begin, end = info["data_offsets"]
        tensors[name] = HostTensor(dtype, tuple(info["shape"]), data[begin:end])
    return tensors


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, HostTensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write tensors to a safetensors file atomically (a temporary file, then a rename).

    Tensors are stored in the order given; the header is padded to 8 bytes like the
    `safetensors` package pads it. metadata: optional string-to-string `__metadata__`.

    Example:
        >>> from webgpt2.backends.base import HostTensor
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> write_safetensors(path, {"b": HostTensor.from_floats([0.5], (1,))}, {"format": "pt"})
        >>> list(read_safetensors(path))
        ['b']
    """
    header: dict[str, Any] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise SafetensorsError(f"metadata must map str to str; bad entries for keys {bad}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in tensors.items():
        if name == "__metadata__":
            raise SafetensorsError("a tensor may not be named '__metadata__'")
        header[name] = {
            "dtype": _SAFETENSORS_DTYPE[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for tensor in tensors.values():
                f.write(memoryview(tensor.data).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _map_file(path: str, progress: Progress | None) -> memoryview:
    """The whole file as a read-only memoryview: an mmap, or the bytes read once."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise SafetensorsError(
                f"{path}: truncated: {size} bytes; a safetensors file starts with an 8-byte "
                "header length"
            )
        view: memoryview | None = None
        if mmap is not None:
            try:
                view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError):
                view = None  # e.g. Emscripten's file systems: read instead
        if view is None:
            data = bytearray(size)
            view = memoryview(data)
            done = 0
            while done < size:
                n = f.readinto(view[done:done + _READ_CHUNK])
                if not n:
                    raise SafetensorsError(f"{path}: file shrank to {done} bytes while reading")
                done += n
                if progress is not None:
                    progress(done, size)
        elif progress is not None:
            progress(size, size)
        return view


def _parse_header(buffer: memoryview, label: str) -> tuple[dict[str, dict], int]:
    """Validate the header against the buffer; returns (tensor entries, data start)."""
    size = len(buffer)
    if size < 8:
        raise SafetensorsError(
            f"{label}: truncated: {size} bytes; a safetensors file starts with an 8-byte "
            "header length"
        )
    head = bytes(buffer[:8])
    if head.startswith(b"PK\x03\x04"):
        raise SafetensorsError(
            f"{label} is not a safetensors file: it is a zip archive (a PyTorch checkpoint?)"
        )
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        raise SafetensorsError(
            f"{label} is not a safetensors file: it is a Python pickle (a PyTorch checkpoint?)"
        )
    (header_len,) = struct.unpack("<Q", head)
    starts_like_json = size > 8 and buffer[8] == ord("{")
    if header_len > _MAX_HEADER or (header_len > size - 8 and not starts_like_json):
        raise SafetensorsError(
            f"{label} is not a safetensors file: header length {header_len} does not fit a "
            f"{size}-byte file"
        )
    if header_len > size - 8:
        raise SafetensorsError(
            f"{label}: truncated: the header needs {8 + header_len} bytes; the file has {size}"
        )
    if not starts_like_json:
        raise SafetensorsError(
            f"{label} is not a safetensors file: the header does not start with '{{'"
        )
    try:
        header = loads(buffer[8:8 + header_len], f"{label}: the {header_len}-byte header",
                       error=SafetensorsError)
    except SafetensorsError as error:
        raise SafetensorsError(f"{error}; wrong header length or truncated?") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{label}: the header is {excerpt(header)}; expected an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise SafetensorsError(
            f"{label}: __metadata__ is {excerpt(metadata)}; expected an object")
    data_size = size - 8 - header_len
    spans = []
    for name, info in header.items():
        _check_entry(name, info, label)
        begin, end = info["data_offsets"]
        itemsize = _ITEMSIZE.get(info["dtype"])
        count = 1
        for d in info["shape"]:
            count *= d
        if itemsize is not None and count * itemsize != end - begin:
            raise SafetensorsError(
                f"{label}: tensor {excerpt(name)} of shape {excerpt(info['shape'])} and dtype "
                f"{info['dtype']} "
                f"needs {count * itemsize} bytes; its data_offsets [{begin}, {end}] span "
                f"{end - begin}"
            )
        spans.append((begin, end, name))
    spans.sort()
    position, previous = 0, None
    for begin, end, name in spans:
        if begin != position:
            kind = "overlap" if begin < position else "leave a gap after"
            raise SafetensorsError(
                f"{label}: tensor {excerpt(name)} data_offsets [{begin}, {end}] {kind} "
                + (f"tensor {excerpt(previous)}, which ends at {position}" if previous
                   else "the start of the data")
            )
        position, previous = end, name
    if position > data_size:
        raise SafetensorsError(
            f"{label}: truncated: tensor data runs to byte {8 + header_len + position}; the "
            f"file has {size}"
        )
    if position < data_size:
        raise SafetensorsError(
            f"{label}: {data_size - position} bytes after the last tensor are not covered by "
            "any tensor's data_offsets"
        )
    return header, 8 + header_len


def _check_entry(name: str, info: Any, label: str) -> None:
    if not isinstance(info, dict):
        raise SafetensorsError(
            f"{label}: entry {excerpt(name)} is {excerpt(info)}; expected an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise SafetensorsError(
            f"{label}: tensor {excerpt(name)} has dtype {excerpt(dtype)}; expected a string")
    if not (isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SafetensorsError(
            f"{label}: tensor {excerpt(name)} has shape {excerpt(shape)}; expected a list of "
            "non-negative ints"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(
            f"{label}: tensor {excerpt(name)} has data_offsets {excerpt(offsets)}; expected "
            "[begin, end] "
            "with 0 <= begin <= end"
        )

