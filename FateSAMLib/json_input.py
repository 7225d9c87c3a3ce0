"""JSON from outside (a file, a form field, a server's answer), parsed within bounds: the one way FateSAM reads it.

Python's parser recurses once per nesting level, so deeply nested text is a RecursionError, and its size is only
bounded by memory. :func:`parse_json` refuses text over ``max_bytes`` or nested deeper than ``max_depth`` before
parsing it, and text that is not JSON, with one message of the caller's error class (default :class:`InputError`).
Standard library only: the Slicer tier, support sets and the server's client use it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import FateSAMError, InputError

MAX_BYTES = 1024**2
"""The default bound on a JSON text's size (1 MiB): far above any manifest, form field or answer FateSAM writes."""
MAX_DEPTH = 32
"""The default bound on nesting (objects and arrays within each other); FateSAM's own JSON nests 4 levels at most."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, limit: int) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (brackets inside strings ignored), counting up to
    ``limit + 1`` at most."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def parse_json(
    source: str | bytes | Path,
    what: str,
    fix: str,
    *,
    error: type[FateSAMError] = InputError,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The value of the JSON text ``source`` (or of the file at the :class:`~pathlib.Path` ``source``, of which at most
    ``max_bytes + 1`` bytes are read), or ``error("{what} {problem}; {fix}")`` when the file cannot be read, or the
    text is over ``max_bytes`` (UTF-8), nests deeper than ``max_depth``, or is not JSON (UTF-8 text)."""
    if isinstance(source, Path):
        try:
            with open(source, "rb") as stream:
                source = stream.read(max_bytes + 1)
        except OSError as problem:
            raise error(f"{what} cannot be read ({problem.strerror or problem}); {fix}") from None
    size = len(source) if isinstance(source, bytes) else len(source.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error(f"{what} is too large (over {max_bytes} bytes, the most that is read); {fix}")
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} is not UTF-8 text; {fix}") from None
    if nesting_depth(source, max_depth) > max_depth:
        raise error(f"{what} nests arrays or objects more than {max_depth} levels deep; {fix}")
    try:
        return json.loads(source)
    except ValueError as problem:
        raise error(f"{what} is not valid JSON ({problem}); {fix}") from None
