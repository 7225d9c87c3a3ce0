"""How the command line reports: a progress line for people, or JSON lines for the Slicer module.

The library warns through the ``FateSAMLib`` logger (standard ``logging``), and only there; while a command runs,
its :class:`Reporter` is that logger's handler for the command's thread, so each warning is shown once, in the
reporter's form (a line on stderr, or a JSON ``warning`` event).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ..errors import FateSAMError
from ..progress import thread_warnings


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
        with thread_warnings(self.warning):
            yield

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
