"""The engine as a separate process: its command lines, its JSON-line events, and a non-blocking process handle.

The Slicer module never runs the model in its own process: it starts ``python -m FateSAMLib.cli ... --json-progress``
with Slicer's Python (``PythonSlicer``), polls this handle from a timer and ends the process on cancel. Every
background command of the module (a run, a checkpoint download, pip installing the requirements) is a
:class:`BackgroundJob` over an :class:`EngineProcess`. Standard library only, so that it imports before the engine's
dependencies are installed.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import errors
from ..errors import Cancelled, FateSAMError, InputError
from ..json_input import parse_json
from ..options import SETTINGS, RunSettings, option_arguments
from ..progress import TaskState
from .process_tree import ProcessTree

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # this file is FateSAMLib/slicer/process.py
"""The folder that contains the FateSAMLib package: the engine process needs it on PYTHONPATH."""


def settings_arguments(settings: RunSettings) -> list[str]:
    """``settings`` as ``fatesam segment`` options: every setting that has a value, a flag only when it is set.

    Parsed by the command line, they give back the same settings (a preset is resolved into its values).
    """
    return [argument for name in SETTINGS for argument in option_arguments(name, getattr(settings, name))]


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
    settings: RunSettings,
    stats_json: Path | None = None,
    segments: Sequence[str] | None = None,
    corrections: tuple[Path, Path] | None = None,
) -> list[str]:
    """``fatesam segment`` arguments with JSON-line progress for these files.

    ``corrections``: (the edited labels, the result they were edited from): a refine run, on the slices where they
    differ (``--corrected-slices auto``).
    """
    arguments = ["segment"]
    for image, labels in supports:
        arguments += ["--support", str(image), str(labels)]
    arguments += ["--query", str(query), "--output", str(output)]
    if segments:
        arguments += ["--segments", *segments]
    if corrections is not None:
        edited, previous = corrections
        arguments += ["--corrections", str(edited), "--corrected-slices", "auto", "--previous", str(previous)]
    if stats_json is not None:
        arguments += ["--stats-json", str(stats_json)]
    return [*arguments, *settings_arguments(settings), "--json-progress"]


def download_arguments(model: str) -> list[str]:
    """``fatesam models download`` arguments with JSON-line progress."""
    return ["models", "download", model, "--json-progress"]


def start_download(model: str, python: str | None = None) -> BackgroundJob:
    """Start downloading ``model``'s checkpoint in a separate process; poll the job until it has finished."""
    return BackgroundJob(engine_command(download_arguments(model), python), description="The download")


ESTIMATE_ARGUMENTS = ("models", "estimate", "--json-progress")
"""``fatesam models estimate``: measure this computer's speed with every model (a few minutes on a CPU)."""


def start_estimate(python: str | None = None) -> BackgroundJob:
    """Start measuring this computer's speed with every model in a separate process (torch is needed there, not
    here); poll the job until it has finished. The estimates are then read from the cache by ``slicer.estimate``."""
    return BackgroundJob(engine_command(list(ESTIMATE_ARGUMENTS), python), description="The speed measurement")


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
        data = parse_json(text, "An engine line", "it is shown as a log line.")
    except InputError:
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

    :meth:`cancel` asks the command's whole process tree to stop (:class:`~.process_tree.ProcessTree`: SIGTERM, the
    engine stops within one slice); if a process of it is still there ``kill_after_s`` seconds later, the next
    :meth:`poll` kills the tree. The command has :attr:`finished` only once every process of its tree has ended.
    """

    def __init__(
        self,
        command: Sequence[str],
        environment: Mapping[str, str] | None = None,
        kill_after_s: float = 5.0,
        description: str = "the engine",
    ) -> None:
        self.command = list(command)
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._kill_after_s = kill_after_s
        self._kill_at: float | None = None
        self.cancel_requested = False
        options: dict = {"start_new_session": True} if os.name != "nt" else {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NO_WINDOW
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
                f"Could not start {description} ({self.command[0]}): {error}. Check that Slicer's Python is installed."
            ) from error
        self._tree = ProcessTree(self._process)
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
        self._kill_if_lingering()
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    @property
    def finished(self) -> bool:
        """True once every process of the command's tree has exited and every line they wrote has been read."""
        return not self._tree.alive() and not any(reader.is_alive() for reader in self._readers)

    @property
    def pid(self) -> int:
        """The process ID (of the launcher, when the command is ``PythonSlicer``)."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (None while running); negative when ended by a signal."""
        return self._process.poll()

    def cancel(self) -> None:
        """Ask the command's process tree to stop (the engine stops within one slice), and kill it if it lingers."""
        if self.cancel_requested or not self._tree.alive():
            return
        self.cancel_requested = True
        self._kill_at = time.monotonic() + self._kill_after_s
        self._tree.signal(kill=False)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Cancel and wait until every process of the tree has ended (killed once ``kill_after_s`` has passed) and its
        output has been read; True if they all ended. Blocks at most about ``timeout_s`` seconds; the events are left
        for :meth:`poll`."""
        self.cancel()
        deadline = time.monotonic() + timeout_s
        while not self.finished and time.monotonic() < deadline:
            self._kill_if_lingering()
            time.sleep(0.02)
        if self._tree.alive():
            self._tree.signal(kill=True)
            deadline = time.monotonic() + 1.0
            while not self.finished and time.monotonic() < deadline:
                time.sleep(0.02)
        return not self._tree.alive()

    def _kill_if_lingering(self) -> None:
        """Kill the process tree once a cancelled command has had ``kill_after_s`` seconds to stop."""
        if self._kill_at is not None and time.monotonic() > self._kill_at and not self.finished:
            self._kill_at = None
            self._tree.signal(kill=True)


def _log_event(line: str) -> EngineEvent:
    return EngineEvent("log", line.rstrip("\r\n"))


_ERROR_CLASSES = {cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type)}


def poll_until_finished(task, on_poll: Callable | None = None, interval_s: float = 0.1) -> None:
    """Call ``task.poll()`` (then ``on_poll(task)``) until ``task.finished``; on any exception meanwhile (e.g. a
    KeyboardInterrupt in a console) ``task.stop()`` first, so that nothing is left running, then re-raise."""
    try:
        while not task.finished:
            task.poll()
            if on_poll is not None:
                on_poll(task)
            if not task.finished:
                time.sleep(interval_s)
    except BaseException:
        task.stop()
        raise


class BackgroundJob:
    """A command followed without blocking: :meth:`poll` it (e.g. from a timer) until :attr:`finished`.

    States: "running", "succeeded", "failed", "cancelled". It reads the engine's JSON events (progress, warnings,
    the error it reported) and keeps the last lines of any other output, for the error of a command that failed
    without saying why. ``description`` names the command in messages ("The download", "pip").
    """

    def __init__(
        self,
        command: Sequence[str],
        environment: Mapping[str, str] | None = None,
        description: str = "The engine",
        kill_after_s: float = 5.0,
    ) -> None:
        self.description = description
        self.state = TaskState.RUNNING
        self.fraction = 0.0
        self.message = f"Starting {description[:1].lower()}{description[1:]}"
        self.warnings: list[str] = []
        self.error: FateSAMError | None = None
        self.done_output: str | None = None
        self.log_tail: list[str] = []
        self.process = EngineProcess(command, environment, kill_after_s, description[:1].lower() + description[1:])

    @property
    def finished(self) -> bool:
        return self.state != TaskState.RUNNING

    def poll(self) -> list[EngineEvent]:
        """Handle what the command reported since the last call; once it has ended, set the final state."""
        if self.finished:
            return []
        events = self.process.poll()
        ended = self.process.finished
        if ended:
            events += self.process.poll()
        for event in events:
            self._handle(event)
        if ended:
            self._conclude()
        return events

    def _handle(self, event: EngineEvent) -> None:
        if event.kind == "progress":
            self.fraction = event.fraction if event.fraction is not None else self.fraction
            self.message = event.message
        elif event.kind == "warning":
            self.warnings.append(event.message)
        elif event.kind == "done":
            self.done_output = event.output
        elif event.kind == "error":
            self.error = _ERROR_CLASSES.get(event.error_kind or "", FateSAMError)(event.message)
        elif event.message.strip():
            self.log_tail = [*self.log_tail[-19:], event.message]
            self.message = event.message.strip()

    def _conclude(self) -> None:
        if self.process.cancel_requested:
            self.state, self.error = TaskState.CANCELLED, Cancelled(f"{self.description} was cancelled.")
        elif self.process.returncode == 0:
            self.state, self.fraction, self.message = TaskState.SUCCEEDED, 1.0, "Done"
        else:
            self.state = TaskState.FAILED
            if self.error is None:
                details = "\n".join(self.log_tail[-10:])
                self.error = FateSAMError(
                    f"{self.description} stopped with exit code {self.process.returncode}. Its last output:\n{details}"
                )

    def cancel(self) -> None:
        """Ask the command to stop; the job ends as "cancelled" at a later :meth:`poll`."""
        if not self.finished:
            self.process.cancel()
            self.message = "Cancelling"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel and wait (at most about ``timeout_s`` seconds) until the process has ended; the job is then over."""
        if self.finished:
            return
        self.process.stop(timeout_s)
        self.poll()
        if not self.finished:  # the output pipes are still open (a grandchild holds them): end the job anyway
            self.state, self.error = TaskState.CANCELLED, Cancelled(f"{self.description} was cancelled.")

    def wait(self, on_poll: Callable[[BackgroundJob], None] | None = None, interval_s: float = 0.1) -> None:
        """Poll until the end (for scripts); an exception meanwhile (e.g. KeyboardInterrupt) stops the command."""
        poll_until_finished(self, on_poll, interval_s)


@dataclass(frozen=True)
class JobStep:
    """One command of a :class:`JobSequence`: what it does (for messages) and its command line."""

    description: str
    command: tuple[str, ...]


class JobSequence:
    """Commands run one after another as :class:`BackgroundJob` s, followed like one job (poll, cancel, stop, wait).

    A step starts when the one before it succeeded; the first step that fails or is cancelled ends the sequence with
    its state and error, and no later step starts. ``message`` says which step runs ("Step 2/3: ...").
    """

    def __init__(
        self, steps: Sequence[JobStep], environment: Mapping[str, str] | None = None, kill_after_s: float = 5.0
    ) -> None:
        if not steps:
            raise ValueError("A job sequence needs at least one step.")
        self.steps = tuple(steps)
        self._environment = environment
        self._kill_after_s = kill_after_s
        self.step_index = 0
        self._stopped = False
        self.job = self._start(0)

    def _start(self, index: int) -> BackgroundJob:
        step = self.steps[index]
        return BackgroundJob(step.command, self._environment, step.description, self._kill_after_s)

    @property
    def _steps_left(self) -> bool:
        return self.step_index < len(self.steps) - 1

    @property
    def finished(self) -> bool:
        """True once a step failed or was cancelled, the last one succeeded, or :meth:`stop` ended the sequence."""
        return self.job.finished and (self.job.state != TaskState.SUCCEEDED or not self._steps_left or self._stopped)

    @property
    def state(self) -> str:
        if not self.finished:
            return TaskState.RUNNING
        return TaskState.CANCELLED if self.job.state == TaskState.SUCCEEDED and self._steps_left else self.job.state

    @property
    def error(self) -> FateSAMError | None:
        if self.state == TaskState.CANCELLED and self.job.state == TaskState.SUCCEEDED:
            return Cancelled(f"{self.steps[self.step_index + 1].description} was cancelled before it started.")
        return self.job.error

    @property
    def fraction(self) -> float:
        return (self.step_index + self.job.fraction) / len(self.steps)

    @property
    def message(self) -> str:
        return f"Step {self.step_index + 1}/{len(self.steps)}: {self.job.message}"

    @property
    def log_tail(self) -> list[str]:
        return self.job.log_tail

    @property
    def warnings(self) -> list[str]:
        return self.job.warnings

    def poll(self) -> list[EngineEvent]:
        """Handle what the running step reported; once it has succeeded, start the next one."""
        events = self.job.poll()
        if self.job.state == TaskState.SUCCEEDED and not self.finished:
            self.step_index += 1
            self.job = self._start(self.step_index)
        return events

    def cancel(self) -> None:
        """Ask the running step to stop; no later step starts."""
        self.job.cancel()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel and wait (at most about ``timeout_s`` seconds) until the running step has ended; no later step
        starts."""
        self._stopped = True
        self.job.stop(timeout_s)

    def wait(self, on_poll: Callable[[JobSequence], None] | None = None, interval_s: float = 0.1) -> None:
        """Poll until the end (for scripts); an exception meanwhile (e.g. KeyboardInterrupt) stops the running step."""
        poll_until_finished(self, on_poll, interval_s)
