"""Progress reporting, warnings and cooperative cancellation shared by every long-running step.

The library warns through the ``FateSAMLib`` logger (standard ``logging``), and only there; whoever runs a step (a
command's reporter, a server job) takes the warnings its thread logs with :func:`thread_warnings`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum

from .errors import Cancelled

LIBRARY_LOGGER = logging.getLogger(__name__.partition(".")[0])
"""The logger every library module warns through (module loggers are its children)."""

ProgressCallback = Callable[[float, str], None]
"""Called with a fraction in [0, 1] and a short human-readable message."""


def ignore_progress(fraction: float, message: str) -> None:
    """A progress callback that does nothing."""


class TaskState(str, Enum):
    """The state of a task: a server job, or one this process runs or follows (an engine process, an installation
    step, a Slicer run). Equal to its lower-case name, which is its JSON value. A job waits QUEUED on a server; a
    local task is READY until started; a client's run is RUNNING the whole time before the job ends."""

    QUEUED = "queued"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the task has ended (succeeded, failed or cancelled)."""
        return self in FINISHED_STATES

    def __str__(self) -> str:
        return self.value


FINISHED_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class CancelToken:
    """A thread-safe flag that long work checks between units (one slice, one chunk)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("The run was cancelled; nothing was written.")


class StageProgress:
    """Maps the progress of one stage onto its share [start, end] of the whole run."""

    def __init__(self, callback: ProgressCallback, start: float, end: float) -> None:
        self._callback = callback
        self._start = start
        self._end = end

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self._callback(self._start + (self._end - self._start) * fraction, message)


@contextmanager
def thread_warnings(show: Callable[[str], None]) -> Iterator[None]:
    """While inside, hand each warning the library logger gets from this thread to ``show`` (one call per warning).

    Steps run side by side in threads (the server's jobs) each see their own warnings only.
    """
    handler = _ThreadHandler(show, threading.get_ident())
    LIBRARY_LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LIBRARY_LOGGER.removeHandler(handler)


class _ThreadHandler(logging.Handler):
    """A logging handler that hands the warnings (and worse) logged by one thread to ``show``."""

    def __init__(self, show: Callable[[str], None], thread: int) -> None:
        super().__init__(logging.WARNING)
        self.show = show
        self.addFilter(lambda record: record.thread == thread)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.show(self.format(record))
        except Exception:  # logging's convention: a failing handler reports itself and never stops the program
            self.handleError(record)


class Eta:
    """The time left for ``total`` units of similar work (slices, cases), from the rate of those done so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()

    def text(self, done: int) -> str:
        """``ETA 1m05s`` after ``done`` units, or ``ETA --`` before the first one."""
        if done <= 0:
            return "ETA --"
        left = (time.perf_counter() - self.started) / done * max(self.total - done, 0)
        return f"ETA {int(left // 60)}m{int(left % 60):02d}s"
