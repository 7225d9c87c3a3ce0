"""CPU threads that adapt to the machine: OpenMP threads that wait without spinning, and a default thread count
taken from the cores this process may use (its CPU affinity and its cgroup's CPU quota), not the machine's.

Standard library only: every entry point (the ``fatesam`` command, ``python -m FateSAMLib.cli``, the engine process
the Slicer module starts, the server, cohort workers and Ray actors) calls :func:`prepare_environment` before torch
is imported, because OpenMP reads its settings once, when torch loads it. ``models.devices.use_threads`` then sets
torch's thread count from :func:`default_threads`.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

from .cgroups import CGROUP_ROOT, PROC_CGROUP, cgroup_folders

WAIT_POLICY = "OMP_WAIT_POLICY"
"""OpenMP's setting for idle threads: ACTIVE spins (and steals the cores of every other process), PASSIVE sleeps."""
THREAD_COUNT_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Settings by which a user (or Ray, for its workers) chose the thread count: they win over our default."""


def thread_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The settings :func:`prepare_environment` adds to ``environ`` (default ``os.environ``): PASSIVE waiting unless
    the user chose a wait policy. For the environment of a process started elsewhere (a Ray actor)."""
    environ = os.environ if environ is None else environ
    return {} if environ.get(WAIT_POLICY) else {WAIT_POLICY: "PASSIVE"}


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Make idle OpenMP threads sleep instead of spinning, unless the user chose otherwise. Call before importing torch.

    Spinning threads that share cores with another busy process slow a run down many times over (measured: 134 s
    instead of 10 s for the same segmentation); sleeping ones cost a few percent on an idle machine.
    """
    environ = os.environ if environ is None else environ
    environ.update(thread_environment(environ))


def affinity_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask, e.g. ``taskset``), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cgroup_v2_limit(folder: Path) -> float | None:
    """CPUs allowed by a cgroup v2 folder's ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``), or None."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cgroup_v1_limit(folder: Path) -> float | None:
    """CPUs allowed by a cgroup v1 folder's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none), or None."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup and its parents, in CPUs (e.g. 1.5), or None when there is none.

    Reads the quota files of :func:`~FateSAMLib.cgroups.cgroup_folders`: cgroup v2's ``cpu.max``, or cgroup v1's
    ``cpu`` controller. The tightest quota on the path counts.
    """
    limits = []
    for folder in cgroup_folders("cpu", proc_cgroup, root):
        limits += [_cgroup_v2_limit(folder), _cgroup_v1_limit(folder)]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def usable_cpus() -> int:
    """The CPUs this process can keep busy: its affinity, capped by its cgroup's quota (rounded up), at least 1."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def default_threads(library_default: int, environ: MutableMapping[str, str] | None = None) -> int:
    """The thread count to use when ``--threads`` is not given.

    ``library_default`` is torch's own (one per physical core of the machine, or what ``OMP_NUM_THREADS`` says). A
    count set in the environment (by the user, or by Ray for its workers) is kept; otherwise torch's is capped at
    the CPUs this process may use (:func:`usable_cpus`).
    """
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in THREAD_COUNT_SETTINGS):
        return max(library_default, 1)
    return max(min(library_default, usable_cpus()), 1)
