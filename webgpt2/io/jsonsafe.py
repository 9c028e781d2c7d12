"""Bounded JSON reading and bounded quoting of bad values, for every file the loader reads.

`json.loads` recurses once per nesting level; 10,000 nested brackets overflow the C stack,
which kills Pyodide's whole page rather than raising. `loads` therefore measures the
nesting depth (outside strings) before parsing. `excerpt` quotes a bad value cut to a
sensible length, so that a 98 MB header does not become a 147 MB error message.

Example:
    >>> loads('{"a": [1, 2]}', "config.json")
    {'a': [1, 2]}
    >>> loads("[" * 10_000 + "]" * 10_000, "config.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: config.json: JSON nested deeper than 64 levels...
    >>> excerpt("x" * 1000)[:12], len(excerpt("x" * 1000)) < 120
    ("'xxxxxxxxxxx", True)
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

__all__ = ["MAX_DEPTH", "excerpt", "loads", "nesting_depth_exceeds"]

# The deepest of the files read (tokenizer.json) nests 4 levels; 64 leaves room and keeps
# json's recursion far from any stack limit, Pyodide's included.
MAX_DEPTH = 64
# Unrolled so that it never backtracks: a string is quotes around non-quote runs and escapes.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TO_PARENS = str.maketrans("[{]}", "(())")
_RUN = re.compile(r"\(+|\)+")

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 6
_repr.maxstring = 80
_repr.maxlong = 40
_repr.maxother = 80


def excerpt(value: Any, limit: int = 100) -> str:
    """repr(value), cut to about `limit` characters (long strings keep both ends) and at
    most three levels deep; used wherever an error message quotes a value from a file.

    Example:
        >>> excerpt({"shape": [1, 2, 3, 4, 5, 6, 7, 8]})
        "{'shape': [1, 2, 3, 4, 5, 6, ...]}"
    """
    text = _repr.repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def nesting_depth_exceeds(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether brackets outside JSON strings nest deeper than max_depth.

    Counts `[` and `{` alike and ignores whether they match: a parser recurses on every
    opening bracket before it notices a mismatch.

    Example:
        >>> nesting_depth_exceeds('[[["[[[[["]]]', 3), nesting_depth_exceeds("[[[[]]]]", 3)
        (False, True)
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_TO_PARENS)
    # Each pass removes the innermost pairs, which lowers the deepest nesting by at most one
    # level: wide, shallow input collapses in a pass or two. Once a pass removes little, what
    # is left is long runs, cheap to count one run at a time.
    passes = 0
    while passes < max_depth and "()" in brackets:
        shorter = brackets.replace("()", "")
        removed = len(brackets) - len(shorter)
        brackets, passes = shorter, passes + 1
        if removed * 8 < len(brackets) + removed:
            break
    level = 0
    for run in _RUN.finditer(brackets):
        size = run.end() - run.start()
        level = level + size if brackets[run.start()] == "(" else max(level - size, 0)
        if level + passes > max_depth:
            return True
    return False


def loads(data: str | bytes | bytearray | memoryview, label: str, *,
          error: type[ValueError] = ValueError, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, after checking that data is UTF-8 and nests at most max_depth levels.

    label names the file in messages; error is the ValueError subclass raised (the caller's
    own: SafetensorsError, CheckpointError, ...). NaN and Infinity are refused, as JSON
    itself refuses them.
    """
    if not isinstance(data, str):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as failure:
            raise error(f"{label} is not UTF-8 text: byte {failure.start} is "
                        f"{bytes(data[failure.start:failure.start + 1])!r}") from None
    if nesting_depth_exceeds(data, max_depth):
        raise error(f"{label}: JSON nested deeper than {max_depth} levels; refusing to parse")
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except json.JSONDecodeError as failure:
        start = max(failure.pos - 20, 0)
        near = excerpt(data[start:failure.pos + 20], 60)
        hint = (" (an HTML page, not JSON)" if data.lstrip()[:1] == "<" else "")
        raise error(f"{label} is not valid JSON{hint}: {failure.msg} at line {failure.lineno} "
                    f"column {failure.colno}, near {near}") from None
    except (ValueError, RecursionError) as failure:
        # Numbers with more digits than int() accepts (Python 3.11+) land here.
        raise error(f"{label} is not valid JSON: {excerpt(str(failure))}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
