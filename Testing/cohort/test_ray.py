"""``fatesam batch --ray`` on a local Ray (2 CPUs, no dashboard): 2 actors, the local batch's outputs, and a worker
killed mid-run replaced with its case retried. Run these alone with ``pytest -m ray``."""

from __future__ import annotations

import threading
import time

import pytest
from cohort_helpers import QUERIES, batch_args, finished_cohort, query_folder, read_summary

from FateSAMLib.cli.main import main

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def kill_a_worker_once_a_case_is_done(output_dir, killed: list[str]) -> None:
    """Wait (bounded) until the first output appears, then kill the first worker, which is busy or about to be."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(output_dir.glob("*.nii.gz")):
        time.sleep(0.2)
    actor = ray.get_actor("fatesam-worker-0")
    ray.kill(actor, no_restart=True)
    killed.append("fatesam-worker-0")


def test_two_ray_workers_give_the_local_outputs_and_a_killed_worker_is_replaced(local_ray, tmp_path_factory, tmp_path):
    _, finished, _, threads = finished_cohort(tmp_path_factory)
    output_dir = tmp_path / "out"
    killed: list[str] = []
    killer = threading.Thread(target=kill_a_worker_once_a_case_is_done, args=(output_dir, killed), daemon=True)
    killer.start()
    code = main(
        batch_args(query_folder(tmp_path / "q"), output_dir, "--ray", "--workers", "2", "--threads", str(threads))
    )
    killer.join(timeout=10)
    assert code == 0 and killed
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert sorted(summary[name]["attempts"] for name in QUERIES) == [1, 1, 2]  # the killed worker's case, retried
    for name in QUERIES:
        assert (output_dir / f"{name}.nii.gz").read_bytes() == (finished / f"{name}.nii.gz").read_bytes()
