"""The engine as a separate process: its command lines, its JSON-line events, and a non-blocking process handle.

The Slicer module never runs the model in its own process: it starts ``python -m FateSAMLib.cli ... --json-progress``
with Slicer's Python (``PythonSlicer``), polls this handle from a timer and ends the process on cancel.
Standard library only, so that it imports before the engine's dependencies are installed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
"""The folder that contains the FateSAMLib package: the engine process needs it on PYTHONPATH."""


@dataclass(frozen=True)
class RunOptions:
    """The engine options the Slicer module exposes (see ``fatesam segment --help``)."""

    model: str = "sam2.1-tiny"
    checkpoint: str | None = None
    random_weights: bool = False
    image_size: int | None = None
    device: str = "auto"
    top_k: int = 3
    slice_axis: str = "auto"
    normalization: str = "percentile"
    window: tuple[float, float] | None = None

    def arguments(self) -> list[str]:
        """These options as ``fatesam segment`` arguments."""
        arguments = ["--model", self.model, "--device", self.device, "--top-k", str(self.top_k)]
        arguments += ["--slice-axis", self.slice_axis, "--normalization", self.normalization]
        if self.checkpoint:
            arguments += ["--checkpoint", str(self.checkpoint)]
        if self.random_weights:
            arguments.append("--random-weights")
        if self.image_size:
            arguments += ["--image-size", str(self.image_size)]
        if self.normalization == "window" and self.window:
            arguments += ["--window", *(repr(float(value)) for value in self.window)]
        return arguments


def python_executable() -> str:
    """Slicer's own Python (``PythonSlicer``) when there is one, else the running interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    sibling = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    return str(sibling) if sibling.is_file() else sys.executable


def engine_command(arguments: Sequence[str], python: str | None = None) -> list[str]:
    """The command line that runs ``fatesam ARGUMENTS`` with ``python``."""
    return [python or python_executable(), "-m", "FateSAMLib.cli", *arguments]


def segment_arguments(
    supports: Sequence[tuple[Path, Path]],
    query: Path,
    output: Path,
    options: RunOptions,
    stats_json: Path | None = None,
    segments: Sequence[str] | None = None,
) -> list[str]:
    """``fatesam segment`` arguments with JSON-line progress for these files."""
    arguments = ["segment"]
    for image, labels in supports:
        arguments += ["--support", str(image), str(labels)]
    arguments += ["--query", str(query), "--output", str(output)]
    if segments:
        arguments += ["--segments", *segments]
    if stats_json is not None:
        arguments += ["--stats-json", str(stats_json)]
    return [*arguments, *options.arguments(), "--json-progress"]


def download_arguments(model: str) -> list[str]:
    """``fatesam models download`` arguments with JSON-line progress."""
    return ["models", "download", model, "--json-progress"]


def engine_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with FateSAMLib's folder first on PYTHONPATH."""
    environment = dict(os.environ if base is None else base)
    paths = [str(PACKAGE_PARENT)] + [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@dataclass(frozen=True)
class EngineEvent:
    """One thing the engine reported: progress, warning, done, error, or a plain log line (kind "log")."""

    kind: str
    message: str = ""
    fraction: float | None = None
    output: str | None = None
    error_kind: str | None = None


def parse_event(line: str) -> EngineEvent:
    """The event a stdout line of ``--json-progress`` carries; any other line is a "log" event with its text."""
    text = line.rstrip("\r\n")
    try:
        data = json.loads(text)
    except ValueError:
        return EngineEvent("log", text)
    if not isinstance(data, dict) or data.get("event") not in ("progress", "warning", "done", "error"):
        return EngineEvent("log", text)
    kind = data["event"]
    fraction = data.get("fraction")
    return EngineEvent(
        kind=kind,
        message=str(data.get("message", "")),
        fraction=float(fraction) if isinstance(fraction, int | float) else None,
        output=str(data["output"]) if data.get("output") is not None else None,
        error_kind=str(data["kind"]) if data.get("kind") is not None else None,
    )


class EngineProcess:
    """A running engine command, read without blocking: stdout lines become events, stderr lines "log" events.

    :meth:`cancel` sends SIGTERM to the process group (the engine stops within one slice); if the process is still
    there ``kill_after_s`` seconds later, the next :meth:`poll` kills the group.
    """

    def __init__(
        self, command: Sequence[str], environment: Mapping[str, str] | None = None, kill_after_s: float = 5.0
    ) -> None:
        self.command = list(command)
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._kill_after_s = kill_after_s
        self._kill_at: float | None = None
        self.cancel_requested = False
        options: dict = {"start_new_session": True} if os.name != "nt" else {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=dict(environment) if environment is not None else engine_environment(),
                **options,
            )
        except OSError as error:
            raise RuntimeError(
                f"Could not start the engine ({self.command[0]}): {error}. Check that Slicer's Python is installed."
            ) from error
        self._readers = [
            threading.Thread(target=self._read, args=(self._process.stdout, parse_event), daemon=True),
            threading.Thread(target=self._read, args=(self._process.stderr, _log_event), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], to_event) -> None:
        for line in stream:
            self._events.put(to_event(line))
        stream.close()

    def poll(self) -> list[EngineEvent]:
        """The events reported since the last call (never blocks); ends a cancelled process that lingers."""
        if self._kill_at is not None and time.monotonic() > self._kill_at and not self.finished:
            self._kill_at = None
            self._signal_group(kill=True)
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    @property
    def finished(self) -> bool:
        """True once the process has exited and every line it wrote has been read."""
        return self._process.poll() is not None and not any(reader.is_alive() for reader in self._readers)

    @property
    def returncode(self) -> int | None:
        """The exit code (None while running); negative when ended by a signal."""
        return self._process.poll()

    def cancel(self) -> None:
        """Ask the engine to stop (SIGTERM; it stops within one slice), and kill it if it lingers."""
        if self._process.poll() is not None or self.cancel_requested:
            return
        self.cancel_requested = True
        self._kill_at = time.monotonic() + self._kill_after_s
        self._signal_group(kill=False)

    def _signal_group(self, kill: bool) -> None:
        """Signal the whole process group: PythonSlicer is a launcher whose child runs the engine."""
        try:
            if os.name == "nt":
                if kill:
                    self._process.kill()
                else:
                    self._process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                os.killpg(self._process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # it ended in the meantime


def _log_event(line: str) -> EngineEvent:
    return EngineEvent("log", line.rstrip("\r\n"))
