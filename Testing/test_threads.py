"""Threads that adapt (``FateSAMLib.threads``): OpenMP waits passively unless the user chose a policy, and the default
thread count follows the CPUs this process may use: its affinity (``taskset``) and its cgroup's CPU quota (parsed
from files written here), while a count the user set in the environment wins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_small_case

from FateSAMLib.threads import (
    cgroup_cpu_limit,
    default_threads,
    prepare_environment,
    thread_environment,
    usable_cpus,
)

REPO = Path(__file__).resolve().parents[1]


def test_openmp_waits_passively_unless_the_user_chose_a_policy():
    environ: dict[str, str] = {}
    prepare_environment(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_environment(chosen)
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"} and thread_environment(chosen) == {}


def test_a_thread_count_set_in_the_environment_wins_over_the_cpus_this_process_may_use():
    assert default_threads(64, {}) == min(64, usable_cpus())
    assert default_threads(1, {}) == 1  # never more than torch's own (one per physical core)
    assert default_threads(64, {"OMP_NUM_THREADS": "64"}) == 64  # the user's (or Ray's) choice
    assert default_threads(3, {"MKL_NUM_THREADS": "3"}) == 3


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_read_along_the_path_and_the_tightest_counts(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "0::/user.slice/job\n")
    root = tmp_path / "fs"
    write(root / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "cpu.max", "250000 100000\n")
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc, root) == 2.5
    write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(proc, root) == 1.5
    write(root / "user.slice" / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc, root) is None  # no quota anywhere
    assert cgroup_cpu_limit(tmp_path / "missing", root) is None  # no /proc/self/cgroup (not Linux)


def test_cgroup_v1_quota_is_read_from_the_cpu_controller(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "4:memory:/job\n3:cpu,cpuacct:/job\n2:cpuset:/\n")
    root = tmp_path / "fs"
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "300000\n")
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc, root) == 3.0
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "-1\n")  # v1's "no quota"
    assert cgroup_cpu_limit(proc, root) is None
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "garbage\n")
    assert cgroup_cpu_limit(proc, root) is None


def bare_environment() -> dict[str, str]:
    """This environment without the thread settings a user (or this test run) may have set."""
    names = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    environment = {key: value for key, value in os.environ.items() if key not in names}
    return {**environment, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")

PROBE = (
    "import os, FateSAMLib.cli, torch; from FateSAMLib.models.devices import use_threads; "
    "print(os.environ['OMP_WAIT_POLICY'], use_threads(), torch.get_num_threads())"
)


@needs_taskset
def test_the_command_line_pins_the_policy_before_torch_and_follows_taskset():
    probe = ["taskset", "-c", "0", sys.executable, "-c", PROBE]
    out = subprocess.run(probe, env=bare_environment(), capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["PASSIVE", "1", "1"]
    chosen = {**bare_environment(), "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"}
    out = subprocess.run(probe, env=chosen, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["ACTIVE", "2", "2"]  # the user's settings are kept, above the 1 usable CPU


@needs_taskset
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_the_engine_process_runs_one_thread_on_one_allowed_cpu_and_threads_overrides(tmp_path):
    """``python -m FateSAMLib.cli segment``, as the Slicer module starts it, under ``taskset -c 0``."""
    paths = write_small_case(tmp_path)
    for extra, expected in (([], 1), (["--threads", "2"], 2)):
        stats = tmp_path / f"stats{expected}.json"
        command = ["taskset", "-c", "0", sys.executable, "-m", "FateSAMLib.cli", "segment", "--support"]
        command += [str(paths["support"]), str(paths["labels"]), "--query", str(paths["query"])]
        command += ["--output", str(tmp_path / f"out{expected}.nii.gz"), "--stats-json", str(stats), *extra]
        command += ["--random-weights", "--image-size", "64", "--device", "cpu"]
        done = subprocess.run(command, env=bare_environment(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(stats.read_text())["threads"] == expected
