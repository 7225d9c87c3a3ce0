"""``fatesam batch --ray`` and ``fatesam crossval --ray`` on a local Ray (2 CPUs, no dashboard): 2 actors, the local
batch's outputs and scores, a worker killed mid-run replaced with its case retried, and the running cases' stages
on the driver's progress line. Run these alone with ``pytest -m ray``."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from cohort_helpers import FAST, QUERIES, batch_args, finished_cohort, query_folder, read_summary
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.cli.main import build_parser
from FateSAMLib.cli.reporting import Reporter
from FateSAMLib.cohort.ray_pool import STAGE_INTERVAL, PostedProgress, RayPool, RunningStages
from FateSAMLib.cohort.worker import CohortSettings
from FateSAMLib.progress import CancelToken

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


class WorkerKiller(Reporter):
    """The driver's reporter, which kills worker 0 at the first stage that shows a case being segmented while no case
    has finished: the models load before any case is handed out and each worker then holds one case, so worker 0's
    case is cut mid-run (not after it ended, which a wait for the first output could not rule out)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(json_lines=True, stdout=io.StringIO())
        self.output_dir = output_dir
        self.killed = False

    def progress(self, fraction: float, message: str) -> None:
        super().progress(fraction, message)
        if not self.killed and "Segmenting slice" in message and not any(self.output_dir.glob("*.nii.gz")):
            ray.kill(ray.get_actor("fatesam-worker-0"), no_restart=True)
            self.killed = True


def test_two_ray_workers_give_the_local_outputs_and_a_killed_worker_is_replaced(local_ray, tmp_path_factory, tmp_path):
    _, finished, _, threads = finished_cohort(tmp_path_factory)
    output_dir = tmp_path / "out"
    argv = batch_args(query_folder(tmp_path / "q"), output_dir, "--ray", "--workers", "2", "--threads", str(threads))
    args = build_parser().parse_args(argv)
    killer = WorkerKiller(output_dir)
    assert args.func(args, killer, CancelToken()) == 0 and killer.killed
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert sorted(summary[name]["attempts"] for name in QUERIES) == [1, 1, 2]  # the killed worker's case, retried
    for name in QUERIES:
        assert (output_dir / f"{name}.nii.gz").read_bytes() == (finished / f"{name}.nii.gz").read_bytes()


class StageRecorder(Reporter):
    """JSON lines kept in memory, and for each progress report the names of the predictions written under ``root``
    by then (the workers write a case's prediction when it is segmented)."""

    def __init__(self, root: Path) -> None:
        super().__init__(json_lines=True, stdout=io.StringIO())
        self.root = root
        self.reports: list[tuple[str, set[str]]] = []

    def progress(self, fraction: float, message: str) -> None:
        super().progress(fraction, message)
        self.reports.append((message, {path.name for path in self.root.rglob("*.nii.gz")}))


def test_crossval_on_two_ray_workers_scores_as_the_local_cohort_and_shows_the_running_stages(
    local_ray, tmp_path_factory, tmp_path
):
    _, finished, _, threads = finished_cohort(tmp_path_factory)
    queries = QUERIES[:2]
    data = tmp_path / "data"
    for name in ("hippocampus_001", *queries):  # the local cohort's support, then two of its queries
        for sub, path in zip(("images", "labels"), case_paths(HIPPOCAMPUS, name), strict=True):
            (data / sub).mkdir(parents=True, exist_ok=True)
            (data / sub / f"{name}.nii.gz").symlink_to(path)
    out = tmp_path / "out"
    out.mkdir()  # the predictions are staged in it, where StageRecorder sees them
    argv = ["crossval", str(data), "--shots", "1", "--json", str(out / "report.json"), "--output-dir", str(out)]
    args = build_parser().parse_args([*argv, "--ray", "--workers", "2", *FAST, "--threads", str(threads)])
    reporter = StageRecorder(out)
    assert args.func(args, reporter, CancelToken()) == 0

    local = read_summary(finished)
    rows = [{"case": name, "label": int(label), **local[name]["metrics"][label]} for name in queries for label in "12"]
    assert json.loads((out / "report.json").read_text())["rows"] == rows
    for name in queries:
        assert (out / f"{name}.nii.gz").read_bytes() == (finished / f"{name}.nii.gz").read_bytes()
        while_running = [message for message, written in reporter.reports if f"{name}.nii.gz" not in written]
        assert any(f"{name}: Segmenting slice" in m for m in while_running), f"no stage of {name} came while it ran"
    events = [json.loads(line) for line in reporter.stdout.getvalue().splitlines()]
    assert sorted(e["id"] for e in events if e["event"] == "case") == sorted(queries)


def test_a_case_posts_its_first_stage_then_at_most_one_per_interval():
    posted: list[tuple[str, float, str]] = []
    progress = PostedProgress(lambda *stage: posted.append(stage), "case-1")
    started = time.monotonic()
    for k in range(1000):
        progress(k / 1000, f"slice {k}")
    assert time.monotonic() - started < STAGE_INTERVAL  # so only the first may be posted
    assert posted == [("case-1", 0.0, "slice 0")]
    time.sleep(STAGE_INTERVAL)
    progress(0.5, "later")
    progress(0.6, "too soon")
    assert posted[1:] == [("case-1", 0.5, "later")]


def test_the_progress_line_shows_each_running_cases_latest_stage_and_no_finished_ones():
    reports: list[tuple[float, str]] = []
    stages = RunningStages(lambda fraction, message: reports.append((fraction, message)))
    stages.update({"a": (0.5, "Segmenting slice 5/10"), "b": (0.25, "Encoding")}, ["a", "b"])
    stages.update({"a": (0.75, "Segmenting slice 7/10")}, ["a", "b"])
    stages.update({"a": (1.0, "posted late")}, ["b"])  # a finished meanwhile: its late stage is dropped
    stages.update({}, ["b", "c"])  # nothing new: nothing reported
    stages.update({"c": (0.0, "reading")}, ["b", "c"])
    assert reports == [
        (0.75, "a: Segmenting slice 5/10; b: Encoding"),
        (1.0, "a: Segmenting slice 7/10; b: Encoding"),
        (0.25, "b: Encoding; c: reading"),
    ]


def test_ray_workers_wait_passively_even_where_the_driver_did_not_say_so(monkeypatch, tmp_path):
    """A cluster's nodes do not inherit the driver's environment: the actors get the wait policy from their own
    runtime environment, set before torch loads."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")  # its workers do not inherit a policy
    try:
        pool = RayPool(CohortSettings(supports=(), output_dir=tmp_path), predictor_factory=lambda: None, workers=1)
        actor = pool._new_actor()
        policy = ray.get(actor.__ray_call__.remote(lambda worker: os.environ.get("OMP_WAIT_POLICY")), timeout=120)
        assert policy == "PASSIVE"
        pool.close()
    finally:
        ray.shutdown()
