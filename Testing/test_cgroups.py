"""The cgroup folders that limit this process (v2 path and its parents, v1 per controller), and the memory left under
their limits, read from files written here as the kernel lays them out."""

from __future__ import annotations

from pathlib import Path

from FateSAMLib.cgroups import cgroup_folders
from FateSAMLib.memory import _cgroup_available_memory

GIB = 1024**3


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_folders_are_the_group_and_every_group_above_it_innermost_first(tmp_path):
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    write(proc, "0::/user.slice/job\n")
    assert cgroup_folders("memory", proc, root) == [root / "user.slice" / "job", root / "user.slice", root]
    write(proc, "4:memory:/process_api/abc\n3:cpu,cpuacct:/x\n")
    assert cgroup_folders("memory", proc, root) == [
        root / "memory" / "process_api" / "abc",
        root / "memory" / "process_api",
        root / "memory",
    ]
    assert cgroup_folders("cpu", proc, root)[:2] == [root / "cpu,cpuacct" / "x", root / "cpu,cpuacct"]
    assert cgroup_folders("memory", tmp_path / "missing", root) == []  # not Linux


def test_memory_left_is_the_tightest_limit_less_usage_plus_reclaimable_cache(tmp_path):
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    write(proc, "0::/user.slice/job\n")
    write(root / "user.slice" / "memory.max", f"{8 * GIB}\n")
    write(root / "user.slice" / "memory.current", f"{5 * GIB}\n")
    write(root / "user.slice" / "memory.stat", f"anon 1\ninactive_file {GIB}\n")
    write(root / "user.slice" / "job" / "memory.max", "max\n")
    write(root / "user.slice" / "job" / "memory.current", f"{5 * GIB}\n")
    assert _cgroup_available_memory(proc, root) == 4 * GIB  # the limit set above the process's group counts
    write(proc, "4:memory:/process_api/abc\n")  # cgroup v1, limited on the process's own group
    folder = root / "memory" / "process_api" / "abc"
    write(folder / "memory.limit_in_bytes", f"{2 * GIB}\n")
    write(folder / "memory.usage_in_bytes", f"{GIB}\n")
    write(root / "memory" / "memory.limit_in_bytes", f"{2**63 - 4096}\n")  # v1's "no limit"
    write(root / "memory" / "memory.usage_in_bytes", f"{GIB}\n")
    assert _cgroup_available_memory(proc, root) == GIB
    write(proc, "0::/\n")
    assert _cgroup_available_memory(proc, tmp_path / "empty") is None  # no limit anywhere
