"""What the cohort commands (``batch``, ``crossval``) share: where their cases run (this process, or Ray actors with
``--ray``), the options that choose it, and how each finished case is reported."""

from __future__ import annotations

import argparse
import functools
import json

from ..cohort.runner import CasePool, LocalPool, RecordCallback
from ..cohort.worker import CohortSettings
from ..method.predictor import FateSamPredictor
from ..options import RunSettings, finite_float_type, whole_number_type
from ..progress import CancelToken
from .reporting import Reporter


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-worker`` and ``--cpus-per-worker``."""
    ray = parser.add_argument_group('Ray (pip install "fatesam[cluster]")')
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray actors: no address starts a local Ray; 'auto' or ray://host:port joins a cluster "
        "(every path must be readable by every worker)",
    )
    ray.add_argument("--workers", type=whole_number_type("--workers"), help="Ray workers (default: as resources hold)")
    ray.add_argument(
        "--gpus-per-worker", type=finite_float_type("--gpus-per-worker"), default=0.0, help="GPUs per worker (0)"
    )
    ray.add_argument(
        "--cpus-per-worker", type=finite_float_type("--cpus-per-worker"), default=1.0, help="CPUs per worker (1)"
    )


def case_pool(
    args: argparse.Namespace, cohort: CohortSettings, run: RunSettings, reporter: Reporter, cancel: CancelToken
) -> CasePool:
    """The pool the options of :func:`add_pool_arguments` ask for: one worker here (the model's loading and download
    reported), or Ray actors (Ray is imported only then), each holding one predictor."""
    if args.ray is None:

        def loaded_predictor() -> FateSamPredictor:  # as the first case starts: no case is finished yet
            predictor = FateSamPredictor(run)
            predictor.load(lambda fraction, message: reporter.progress(0.0, message), cancel)
            return predictor

        return LocalPool(cohort, loaded_predictor)
    from ..cohort.ray_pool import RayPool

    address = None if args.ray == "local" else args.ray
    return RayPool(
        cohort,
        functools.partial(FateSamPredictor, run),
        address,
        args.workers,
        args.gpus_per_worker,
        args.cpus_per_worker,
    )


def case_event_writer(reporter: Reporter) -> RecordCallback:
    """With --json-progress, one ``{"event": "case", ...}`` line per finished case; otherwise a warning per failure."""

    def write(record: dict) -> None:
        if reporter.json_lines:
            event = {"event": "case", **{k: record.get(k) for k in ("id", "status", "error", "seconds", "output")}}
            reporter.stdout.write(json.dumps(event) + "\n")
            reporter.stdout.flush()
        elif record["status"] == "failed":
            reporter.warning(f"{record['id']} failed: {record['error']}")

    return write
