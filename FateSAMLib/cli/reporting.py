"""How the command line reports: a progress line for people, or JSON lines for the Slicer module.

The library warns through the ``FateSAMLib`` logger (standard ``logging``), and only there; while a command runs,
its :class:`Reporter` is that logger's handler for the command's thread, so each warning is shown once, in the
reporter's form (a line on stderr, or a JSON ``warning`` event).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ..errors import FateSAMError
from ..progress import thread_warnings

PLAIN_INTERVAL = 2.0
"""Seconds between two progress lines when stderr is not a terminal (a log file should not get one per slice)."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (stdout may go to a file meanwhile), else $COLUMNS or 80."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size().columns


class Reporter:
    """Progress, warnings, the result and errors, either human-readable on stderr or as JSON lines on stdout.

    JSON events: ``{"event": "progress", "fraction": f, "message": m}``, ``{"event": "warning", "message": m}``,
    ``{"event": "done", "output": path}`` and ``{"event": "error", "message": m, "kind": "InputError"}``.
    """

    def __init__(self, json_lines: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.terminal = _is_terminal(self.stderr)
        self._last_message = ""
        self._status_shown = False
        self._last_plain = -math.inf

    def _emit(self, event: dict) -> None:
        self.stdout.write(json.dumps(event) + "\n")
        self.stdout.flush()

    def progress(self, fraction: float, message: str) -> None:
        """Report progress: on a terminal, one status line rewritten in place and cut to the terminal's width; else
        (a log file, a pipe) plain lines, at most one per :data:`PLAIN_INTERVAL` seconds and the last one."""
        if self.json_lines:
            self._emit({"event": "progress", "fraction": round(float(fraction), 4), "message": message})
        elif message != self._last_message:
            line = f"[{fraction * 100:5.1f}%] {message}"
            if self.terminal:
                width = max(_terminal_columns(self.stderr) - 1, 10)  # the last column would wrap on some terminals
                self.stderr.write(f"\r{line[:width]:<{width}}")
                self._status_shown = True
            elif time.monotonic() - self._last_plain >= PLAIN_INTERVAL or fraction >= 1.0:
                self.stderr.write(f"{line}\n")
                self._last_plain = time.monotonic()
            self.stderr.flush()
        self._last_message = message

    def end_progress(self) -> None:
        """End the status line (if one is shown), before other output follows on stdout or stderr."""
        if self._status_shown:
            self.stderr.write("\n")
            self._status_shown = False
        self._last_message = ""

    def warning(self, message: str) -> None:
        """A warning the user must see."""
        if self.json_lines:
            self._emit({"event": "warning", "message": message})
        else:
            self.end_progress()
            self.stderr.write(f"WARNING: {message}\n")

    @contextmanager
    def library_warnings(self) -> Iterator[None]:
        """While inside, show the library logger's warnings from this thread as this reporter's warnings.

        Commands run side by side in threads (the server's jobs) each see their own warnings only.
        """
        with thread_warnings(self.warning):
            yield

    def done(self, output: str) -> None:
        """The run finished and wrote ``output``."""
        if self.json_lines:
            self._emit({"event": "done", "output": output})
        else:
            self.end_progress()
            self.stdout.write(f"{output}\n")

    def error(self, error: FateSAMError) -> None:
        """The run failed (or was cancelled) with ``error``."""
        if self.json_lines:
            self._emit({"event": "error", "message": str(error), "kind": type(error).__name__})
        else:
            self.end_progress()
            self.stderr.write(f"fatesam: error: {error}\n")
