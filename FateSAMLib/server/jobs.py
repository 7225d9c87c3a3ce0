"""Jobs and their bounded queue: each job runs ``fatesam segment`` in a worker thread, on the server's files."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..cli.main import _run
from ..cli.reporting import Reporter
from ..errors import INTERRUPTED, FateSAMError
from ..progress import CancelToken
from ..remote import FINISHED_STATES
from .store import SupportSet, SupportSetStore

LOG = logging.getLogger("fatesam.server")


class QueueFull(Exception):
    """The queue holds as many jobs as it may; :attr:`retry_after_s` estimates when a place frees up."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    """One segmentation: the parsed ``fatesam segment`` arguments, its folder, and what it reported."""

    id: str
    folder: Path
    args: argparse.Namespace
    support_set: SupportSet
    state: str = "queued"
    fraction: float = 0.0
    message: str = "Waiting in the queue"
    warnings: list[str] = field(default_factory=list)
    error: dict | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    created: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    last_seen: float = field(default_factory=time.monotonic)
    seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def public(self) -> dict:
        """What the API shows of the job."""
        return {
            "id": self.id,
            "state": self.state,
            "fraction": round(self.fraction, 4),
            "message": self.message,
            "warnings": list(self.warnings),
            "error": self.error,
            "seconds": self.seconds,
        }


class JobReporter(Reporter):
    """The command line's reporter, writing into the job instead of a terminal."""

    def __init__(self, job: Job) -> None:
        super().__init__(json_lines=True, stdout=io.StringIO(), stderr=io.StringIO())
        self.job = job

    def progress(self, fraction: float, message: str) -> None:
        self.job.fraction, self.job.message = float(fraction), message

    def warning(self, message: str) -> None:
        self.job.warnings.append(message)

    def done(self, output: str) -> None:
        self.job.message = "Done"

    def error(self, error: FateSAMError) -> None:
        self.job.error = {"message": str(error), "kind": type(error).__name__}


def new_job_id() -> str:
    """A job id nobody can guess."""
    return uuid.uuid4().hex


class JobQueue:
    """At most ``size`` jobs waiting and ``workers`` running; finished jobs kept until they expire."""

    def __init__(self, store: SupportSetStore, workers: int = 1, size: int = 8) -> None:
        self.store = store
        self.workers = workers
        self._waiting: queue.Queue[Job | None] = queue.Queue(maxsize=size)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._mean_seconds = 30.0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"fatesam-worker-{i}") for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` when the queue is full (the caller then removes the job's files)."""
        with self._lock:
            try:
                self._waiting.put_nowait(job)
            except queue.Full:
                waiting = self._waiting.qsize() + self.workers
                raise QueueFull(max(1, round(self._mean_seconds * waiting / self.workers))) from None
            self._jobs[job.id] = job
            self.store.acquire(job.support_set)

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id`` (marked as seen by its client now), or None."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.last_seen = time.monotonic()
        return job

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        counts: dict[str, int] = {}
        for job in list(self._jobs.values()):
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def cancel(self, job: Job) -> None:
        """Cancel a waiting job now, a running one at its next slice."""
        job.cancel.cancel()
        with self._lock:
            if job.state == "queued":
                self._end(job, "cancelled", "Cancelled before it started")

    def remove(self, job: Job) -> None:
        """Forget a finished job and delete its files."""
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def expire(self, keep_s: float, abandon_s: float) -> None:
        """Remove jobs finished ``keep_s`` ago; cancel those whose client has not asked for ``abandon_s``."""
        now = time.monotonic()
        for job in list(self._jobs.values()):
            if job.finished and now - (job.finished_at or now) > keep_s:
                self.remove(job)
            elif not job.finished and now - job.last_seen > abandon_s:
                LOG.warning("Job %s: no client asked for it in %.0f s; cancelling it.", job.id, abandon_s)
                self.cancel(job)

    def close(self, timeout_s: float = 30.0) -> None:
        """Cancel every job, wait for the workers (at most ``timeout_s``) and delete every job's files."""
        self._closed = True
        for job in list(self._jobs.values()):
            self.cancel(job)
        while not self._waiting.empty():  # the waiting jobs are cancelled already: make room for the stop markers
            self._waiting.get_nowait()
        deadline = time.monotonic() + timeout_s
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._waiting.put(None, timeout=max(0.1, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in list(self._jobs.values()):
            self.remove(job)

    def _end(self, job: Job, state: str, message: str) -> None:
        if job.finished:
            return
        job.state, job.message, job.finished_at = state, message, time.monotonic()
        self.store.release(job.support_set)

    def _work(self) -> None:
        while True:
            job = self._waiting.get()
            if job is None:
                return
            with self._lock:
                if job.finished or self._closed:
                    self._end(job, "cancelled", "Cancelled before it started")
                    continue
                job.state, job.message = "running", "Starting"
            started = time.perf_counter()
            try:
                code = _run(job.args, JobReporter(job), job.cancel)
            except Exception:  # a bug must end this job only, never the worker
                LOG.exception("Job %s failed", job.id)
                code = 1
                job.error = {"message": "The server failed on this job (see its log); run again.", "kind": "Error"}
            job.seconds = time.perf_counter() - started
            with self._lock:
                if code == 0:
                    self._mean_seconds = 0.7 * self._mean_seconds + 0.3 * job.seconds
                    job.fraction = 1.0
                    self._end(job, "succeeded", "Done")
                elif code == INTERRUPTED:
                    self._end(job, "cancelled", "Cancelled")
                else:
                    self._end(job, "failed", job.error["message"] if job.error else "Failed")
