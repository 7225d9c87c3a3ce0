"""Cases on a pool of Ray actors, each holding one loaded model: a worker that dies mid-case is replaced and the case
retried once; the workers post their cases' stages to a board actor that the driver's progress line shows. Imported
only for a Ray run (Ray is the optional extra ``fatesam[cluster]``)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..errors import Cancelled, FateSAMError, InputError
from ..progress import CancelToken, ProgressCallback
from .cases import Case
from .runner import RecordCallback
from .worker import CaseWorker, CohortSettings, PredictorFactory, failed_record

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError:
    raise InputError('--ray needs Ray: pip install "fatesam[cluster]" (on the driver and on every node).') from None

ATTEMPTS = 2  # a case whose worker died is retried once on a new worker
ACTOR_PREFIX = "fatesam-worker-"
STAGE_INTERVAL = 0.25  # seconds: at most four stages a second per case are posted, and the driver looks as often


class StageBoard:
    """The latest stage of each case (a Ray actor): workers post to it without waiting, the driver takes what was
    posted since it last looked."""

    def __init__(self) -> None:
        self.stages: dict[str, tuple[float, str]] = {}

    def post(self, case_id: str, fraction: float, message: str) -> None:
        """``case_id`` is at ``fraction`` of its work, in the stage ``message``."""
        self.stages[case_id] = (fraction, message)

    def take(self) -> dict[str, tuple[float, str]]:
        """The stages posted since the last call, by case id."""
        stages, self.stages = self.stages, {}
        return stages


class PostedProgress:
    """A case's progress callback on a Ray worker: its first stage, then at most one every :data:`STAGE_INTERVAL`
    seconds, handed to ``post`` (the board's ``post.remote``, which does not wait)."""

    def __init__(self, post: Callable[[str, float, str], object], case_id: str) -> None:
        self.post = post
        self.case_id = case_id
        self.last = -math.inf

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= STAGE_INTERVAL:
            self.last = now
            self.post(self.case_id, fraction, message)


class RunningStages:
    """The latest stage of each running case, reported as one progress line."""

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress
        self.stages: dict[str, tuple[float, str]] = {}

    def update(self, posted: dict[str, tuple[float, str]], running: Iterable[str]) -> None:
        """Take the ``posted`` stages of the ``running`` cases (a late one of a finished case is dropped) and report
        them with the others' latest if any came."""
        running = set(running)
        self.stages = {case_id: stage for case_id, stage in {**self.stages, **posted}.items() if case_id in running}
        if posted.keys() & running:
            fraction = sum(f for f, _ in self.stages.values())
            self.progress(fraction, "; ".join(f"{case_id}: {message}" for case_id, (_, message) in self.stages.items()))


class RayPool:
    """``workers`` Ray actors running :class:`CaseWorker`; joins ``address`` (``auto``, ``ray://host:port``), or the
    Ray this process already started, or starts a local one (stopped again by :meth:`close`)."""

    def __init__(
        self,
        settings: CohortSettings,
        predictor_factory: PredictorFactory,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
    ) -> None:
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        self.actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(CaseWorker)
        self.settings = settings
        self.predictor_factory = predictor_factory
        self.workers = workers or self._default_workers(gpus_per_worker, cpus_per_worker)
        self.actors: list = []
        self.spawned = 0
        self.board = None  # the StageBoard actor of a run

    @staticmethod
    def _default_workers(gpus_per_worker: float, cpus_per_worker: float) -> int:
        """As many workers as the cluster's GPUs (or, without GPUs per worker, its CPUs) hold."""
        resources = ray.cluster_resources()
        if gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // cpus_per_worker))

    def _new_actor(self):  # noqa: ANN202 - a Ray actor handle
        """A new worker, named ``fatesam-worker-<n>`` (n counts the workers this pool started)."""
        self.spawned += 1
        actor = self.actor_class.options(name=f"{ACTOR_PREFIX}{self.spawned - 1}")
        return actor.remote(self.settings, self.predictor_factory)

    def run(
        self, cases: list[Case], on_record: RecordCallback, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        """Hand the cases to the actors, one at a time each; records arrive in the order cases finish, and the running
        cases' stages are reported as the workers post them."""
        self.board = ray.remote(num_cpus=0)(StageBoard).remote()
        stages = RunningStages(progress)
        self.actors = [self._new_actor() for _ in range(min(self.workers, len(cases)))]
        try:
            ray.get([actor.start.remote() for actor in self.actors])  # the model loads before any case is handed out
        except RayTaskError as error:
            raise (error.cause if isinstance(error.cause, FateSAMError) else error) from None
        queue, attempts, pending = deque(cases), dict.fromkeys((c.id for c in cases), 0), {}

        def submit(index: int) -> None:
            if queue:
                case = queue.popleft()
                attempts[case.id] += 1
                posted = PostedProgress(self.board.post.remote, case.id)
                pending[self.actors[index].run.remote(case, posted)] = (index, case)

        for index in range(len(self.actors)):
            submit(index)
        progress(0.0, f"{len(self.actors)} Ray workers")
        while pending:
            if cancel.cancelled:
                raise Cancelled("The run was cancelled; the finished cases are kept, the others were not written.")
            done, _ = ray.wait(list(pending), num_returns=1, timeout=STAGE_INTERVAL)
            running = (case.id for _, case in pending.values())
            stages.update(ray.get(self.board.take.remote()), running)  # the finished cases' last stages, then records
            for ref in done:
                index, case = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except RayActorError as error:  # the worker died (killed, out of memory, node lost): replace it
                    self.actors[index] = self._new_actor()
                    if attempts[case.id] < ATTEMPTS:
                        queue.appendleft(case)
                        submit(index)
                        continue
                    record = failed_record(case, f"Its Ray worker died twice ({str(error).splitlines()[0]}).")
                submit(index)
                on_record({**record, "attempts": attempts[case.id]})

    def close(self) -> None:
        """Stop the actors and the stage board, and Ray itself when this pool started it."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.board is not None:
            ray.kill(self.board)
            self.board = None
        if self.started_ray:
            ray.shutdown()
