"""Jobs and their bounded queue: each job is a typed request that a worker thread runs on a warm predictor."""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled, FateSAMError
from ..method.jobs import SegmentJob, run_job
from ..models.devices import run_memory_error
from ..options import RunSettings
from ..progress import CancelToken, TaskState, thread_warnings
from .predictors import WarmPredictors
from .store import SupportSet, SupportSetStore

LOG = logging.getLogger("fatesam.server")


class QueueFull(Exception):
    """The queue holds as many jobs as it may (``per_user``: as many of this user's as it may);
    :attr:`retry_after_s` estimates when a place frees up."""

    def __init__(self, retry_after_s: int, per_user: bool = False) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s
        self.per_user = per_user


@dataclass
class Job:
    """One segmentation: its request (``fatesam segment``'s, typed), run settings and folder, the user who submitted
    it, and what it reported."""

    id: str
    owner: str
    folder: Path
    request: SegmentJob
    settings: RunSettings
    support_set: SupportSet
    state: TaskState = TaskState.QUEUED
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
        return self.state.finished

    def public(self) -> dict:
        """What the API shows of the job."""
        return {
            "id": self.id,
            "state": self.state.value,
            "fraction": round(self.fraction, 4),
            "message": self.message,
            "warnings": list(self.warnings),
            "error": self.error,
            "seconds": self.seconds,
        }

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message

    def fail(self, error: FateSAMError) -> None:
        self.error = {"message": str(error), "kind": type(error).__name__}


def new_job_id() -> str:
    """A job id nobody can guess."""
    return uuid.uuid4().hex


class JobQueue:
    """At most ``size`` jobs waiting and ``workers`` running; finished jobs kept until they expire."""

    def __init__(
        self, store: SupportSetStore, predictors: WarmPredictors, workers: int = 1, size: int = 8, per_user: int = 8
    ) -> None:
        self.store = store
        self.predictors = predictors
        self.workers = workers
        self.per_user = per_user
        self._waiting: queue.Queue[Job | None] = queue.Queue(maxsize=size)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._mean_seconds = 30.0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"fatesam-worker-{i}") for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` when the queue is full, or when its user has ``per_user`` unfinished
        jobs (the caller then removes the job's files)."""
        with self._lock:
            mine = sum(not other.finished and other.owner == job.owner for other in self._jobs.values())
            if mine >= self.per_user:
                raise QueueFull(max(1, round(self._mean_seconds)), per_user=True)
            try:
                self._waiting.put_nowait(job)
            except queue.Full:
                waiting = self._waiting.qsize() + self.workers
                raise QueueFull(max(1, round(self._mean_seconds * waiting / self.workers))) from None
            self._jobs[job.id] = job
            self.store.acquire(job.support_set)

    def get(self, job_id: str, owner: str) -> Job | None:
        """The job ``job_id`` of user ``owner`` (marked as seen by its client now), or None (also when it is another
        user's)."""
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return None
        job.last_seen = time.monotonic()
        return job

    def of_user(self, owner: str) -> list[Job]:
        """The jobs of user ``owner``, oldest first."""
        return sorted((job for job in list(self._jobs.values()) if job.owner == owner), key=lambda job: job.created)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        counts: dict[str, int] = {}
        for job in list(self._jobs.values()):
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        return counts

    def cancel(self, job: Job) -> None:
        """Cancel a waiting job now, a running one at its next slice."""
        job.cancel.cancel()
        with self._lock:
            if job.state == TaskState.QUEUED:
                self._end(job, TaskState.CANCELLED, "Cancelled before it started")

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

    def _end(self, job: Job, state: TaskState, message: str) -> None:
        if job.finished:
            return
        job.state, job.message, job.finished_at = state, message, time.monotonic()
        self.store.release(job.support_set)
        seconds = f" after {job.seconds:.1f} s" if job.seconds is not None else ""
        kind = f" ({job.error['kind']})" if state == TaskState.FAILED and job.error else ""  # never its message
        LOG.info("Job %s of user %s %s%s%s", job.id, job.owner, state.value, seconds, kind)

    def _work(self) -> None:
        try:
            self.predictors.warm_up()  # the server's model, loaded once for every worker before the first job
        except Exception:  # a model that cannot load fails the jobs that need it, with its message
            LOG.exception("The server's model could not be loaded at start-up")
        while True:
            job = self._waiting.get()
            if job is None:
                return
            with self._lock:
                if job.finished or self._closed:
                    self._end(job, TaskState.CANCELLED, "Cancelled before it started")
                    continue
                job.state, job.message = TaskState.RUNNING, "Starting"
            LOG.info("Job %s of user %s started", job.id, job.owner)
            started = time.perf_counter()
            state = self._run(job)
            job.seconds = time.perf_counter() - started
            with self._lock:
                if state == TaskState.SUCCEEDED:
                    self._mean_seconds = 0.7 * self._mean_seconds + 0.3 * job.seconds
                    job.fraction = 1.0
                    self._end(job, state, "Done")
                elif state == TaskState.CANCELLED:
                    self._end(job, state, "Cancelled")
                else:
                    self._end(job, state, job.error["message"] if job.error else "Failed")

    def _run(self, job: Job) -> TaskState:
        """Run ``job`` on the warm predictor of its model; the state it ends in (its error in ``job.error``)."""
        predictor = None
        try:
            with thread_warnings(job.warnings.append):
                predictor = self.predictors.for_settings(job.settings)
                run_job(predictor, job.request, job.progress, job.cancel)
            return TaskState.SUCCEEDED
        except Cancelled as error:
            job.fail(error)
            return TaskState.CANCELLED
        except FateSAMError as error:
            job.fail(error)
        except Exception as error:  # a bug must end this job only, never the worker
            memory = run_memory_error(error, predictor.loaded.device if predictor and predictor.loaded else None)
            if memory is not None:
                job.fail(memory)
            else:
                LOG.exception("Job %s failed", job.id)
                job.error = {"message": "The server failed on this job (see its log); run again.", "kind": "Error"}
        return TaskState.FAILED
