"""The Linux control-group folders that limit this process, for a quota set on its group or on any group above it:
the memory left (:mod:`FateSAMLib.memory`) and the CPUs allowed (:mod:`FateSAMLib.threads`). Standard library only."""

from __future__ import annotations

from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _with_ancestors(root: Path, relative: str) -> list[Path]:
    """``root`` joined with ``relative`` and each of its parents up to ``root`` itself (a limit set above applies)."""
    parts = [part for part in relative.strip().split("/") if part and part != ".."]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def cgroup_folders(controller: str, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> list[Path]:
    """The folders whose ``controller`` files (e.g. ``cpu``, ``memory``) limit this process, innermost first: its
    cgroup v2 group and every group above it, and the same path under cgroup v1's mount of that controller (as
    ``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/cpu,cpuacct`` or ``/sys/fs/cgroup/cpu``). Read from ``proc_cgroup``;
    none when it is unreadable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    folders: list[Path] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2: "0::/path"
            folders += _with_ancestors(root, path)
        elif controller in controllers.split(","):
            for mount in dict.fromkeys((root / controllers, root / controller)):  # "cpu,cpuacct" or its link "cpu"
                folders += _with_ancestors(mount, path)
    return folders
