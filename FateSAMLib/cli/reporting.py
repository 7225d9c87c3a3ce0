"""How the command line reports: a progress line for people, or JSON lines for the Slicer module.

The library warns through the ``FateSAMLib`` logger (standard ``logging``), and only there; while a command runs,
its :class:`Reporter` is that logger's handler for the command's thread, so each warning is shown once, in the
reporter's form (a line on stderr, or a JSON ``warning`` event).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..atomic import write_file_atomically
from ..errors import FateSAMError

if TYPE_CHECKING:
    from ..method.pipeline import SegmentationResult

LIBRARY_LOGGER = logging.getLogger(__package__.partition(".")[0])
"""The logger every library module warns through (module loggers are its children)."""


class Reporter:
    """Progress, warnings, the result and errors, either human-readable on stderr or as JSON lines on stdout.

    JSON events: ``{"event": "progress", "fraction": f, "message": m}``, ``{"event": "warning", "message": m}``,
    ``{"event": "done", "output": path}`` and ``{"event": "error", "message": m, "kind": "InputError"}``.
    """

    def __init__(self, json_lines: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._last_message = ""

    def _emit(self, event: dict) -> None:
        self.stdout.write(json.dumps(event) + "\n")
        self.stdout.flush()

    def progress(self, fraction: float, message: str) -> None:
        """Report progress; the human form rewrites one status line."""
        if self.json_lines:
            self._emit({"event": "progress", "fraction": round(float(fraction), 4), "message": message})
        elif message != self._last_message:
            self.stderr.write(f"\r[{fraction * 100:5.1f}%] {message[:100]:<100}")
            self.stderr.flush()
        self._last_message = message

    def _end_line(self) -> None:
        if not self.json_lines and self._last_message:
            self.stderr.write("\n")
            self._last_message = ""

    def warning(self, message: str) -> None:
        """A warning the user must see."""
        if self.json_lines:
            self._emit({"event": "warning", "message": message})
        else:
            self._end_line()
            self.stderr.write(f"WARNING: {message}\n")

    @contextmanager
    def library_warnings(self) -> Iterator[None]:
        """While inside, show the library logger's warnings from this thread as this reporter's warnings.

        Commands run side by side in threads (the server's jobs) each see their own warnings only.
        """
        handler = _ReporterHandler(self, threading.get_ident())
        LIBRARY_LOGGER.addHandler(handler)
        try:
            yield
        finally:
            LIBRARY_LOGGER.removeHandler(handler)

    def done(self, output: str) -> None:
        """The run finished and wrote ``output``."""
        if self.json_lines:
            self._emit({"event": "done", "output": output})
        else:
            self._end_line()
            self.stdout.write(f"{output}\n")

    def error(self, error: FateSAMError) -> None:
        """The run failed (or was cancelled) with ``error``."""
        if self.json_lines:
            self._emit({"event": "error", "message": str(error), "kind": type(error).__name__})
        else:
            self._end_line()
            self.stderr.write(f"fatesam: error: {error}\n")


class _ReporterHandler(logging.Handler):
    """A logging handler that hands the warnings (and worse) logged by one thread to a :class:`Reporter`."""

    def __init__(self, reporter: Reporter, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.reporter = reporter
        self.addFilter(lambda record: record.thread == thread)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.warning(self.format(record))
        except Exception:  # logging's convention: a failing handler reports itself and never stops the program
            self.handleError(record)


def strict_json(data: object) -> object:
    """``data`` with every NaN or infinite float replaced by None, so that it is valid JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data


def json_writer(data: object) -> Callable[[Path], None]:
    """What writes ``data`` as strict JSON (non-finite numbers as null, see :func:`strict_json`) to a given file."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)

    def write(target: Path) -> None:
        with open(target, "x") as stream:
            stream.write(text)

    return write


def segment_stats(result: SegmentationResult, seconds: dict[str, float], run: dict[str, object]) -> dict:
    """The ``--stats-json`` of a segmentation: the engine's counts, ``seconds`` (every step of the command), the slice
    axis and segments, ``run`` (the model and settings it ran with), each segment's volume, the doubtful slices,
    per-slice certainty and each slice's provenance (the support slices it was predicted from)."""
    return {
        **asdict(result.stats),
        "seconds": seconds,
        "slice_axis": result.slice_axis,
        "segments": [{"value": s.value, "name": s.name, "color": list(s.color)} for s in result.segments],
        **run,
        "volumes": [asdict(volume) for volume in result.volumes],
        "doubtful_slices": [asdict(doubtful) for doubtful in result.doubtful_slices],
        "confidence": [asdict(entry) for entry in result.confidence],
        "provenance": [asdict(entry) for entry in result.provenance],
    }


def write_json_atomic(path: Path, data: object, overwrite: bool = False) -> None:
    """Write ``data`` as strict JSON to ``path``, all or nothing; an existing file is replaced only with overwrite."""
    write_file_atomically(path, json_writer(data), overwrite)
