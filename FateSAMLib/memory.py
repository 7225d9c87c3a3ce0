"""Memory free for this process on the host: the system's available memory, or less under ``ulimit -v``
(RLIMIT_AS), RLIMIT_DATA or a cgroup memory limit; and the one "not enough memory" error. Standard library only, so
that the readers (``io``) check a volume's size before reading it as the model tiers check theirs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from .cgroups import CGROUP_ROOT, PROC_CGROUP, cgroup_folders
from .errors import ResourceError


class _MemoryStatusEx(ctypes.Structure):
    """Windows MEMORYSTATUSEX, filled by GlobalMemoryStatusEx."""

    _fields_ = [
        ("dwLength", ctypes.c_ulong),
        ("dwMemoryLoad", ctypes.c_ulong),
        ("ullTotalPhys", ctypes.c_ulonglong),
        ("ullAvailPhys", ctypes.c_ulonglong),
        ("ullTotalPageFile", ctypes.c_ulonglong),
        ("ullAvailPageFile", ctypes.c_ulonglong),
        ("ullTotalVirtual", ctypes.c_ulonglong),
        ("ullAvailVirtual", ctypes.c_ulonglong),
        ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
    ]


def _system_available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "win32":
        status = _MemoryStatusEx()
        status.dwLength = ctypes.sizeof(_MemoryStatusEx)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.ullAvailPhys)
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):  # macOS only has the total, an upper bound
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            continue
    raise ResourceError("Cannot tell how much memory is free on this system; run on Linux, Windows or macOS.")


def _read_int(path: Path) -> int | None:
    """The number in a one-number file (None when unreadable, or 'max', i.e. no limit)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file_bytes(stat_file: Path) -> int:
    """Page cache the kernel reclaims before failing an allocation (``inactive_file`` of a cgroup's memory.stat)."""
    try:
        for line in stat_file.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_available_memory(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int | None:
    """Memory left under the tightest cgroup limit of this process (v2 or v1, its group or one above), None if
    unlimited."""
    left = []
    for folder in cgroup_folders("memory", proc_cgroup, root):
        for limit_name, usage_name, stat_name in (
            ("memory.max", "memory.current", "memory.stat"),  # v2
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat"),  # v1
        ):
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < 2**62:  # v1 writes "no limit" as a huge number
                left.append(max(0, limit - usage + _inactive_file_bytes(folder / stat_name)))
    return min(left, default=None)


def _process_limit_memory() -> int | None:
    """Memory left under this process's ``ulimit -v`` (RLIMIT_AS) and RLIMIT_DATA, None if unlimited or unknown."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    except OSError:
        return None
    left = []
    for limit_name, used_name in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft, _hard = resource.getrlimit(getattr(resource, limit_name))
        if soft != resource.RLIM_INFINITY and used_name in status:
            left.append(max(0, soft - int(status[used_name].split()[0]) * 1024))
    return min(left, default=None)


def host_memory_bytes() -> int:
    """Memory free for this process on the host: the system's, or less where the process has a tighter limit."""
    limits = (_system_available_memory(), _process_limit_memory(), _cgroup_available_memory())
    return min(limit for limit in limits if limit is not None)


ALLOCATION_FAILURE_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is an allocator running out of memory (MemoryError, or torch's RuntimeError saying so)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in ALLOCATION_FAILURE_MARKERS)


def not_enough_memory_error(detail: str, where: str, available: int) -> ResourceError:
    """The "not enough memory" error: what did not fit (``detail``) on ``where``, the ``available`` bytes, the fix."""
    return ResourceError(
        f"Not enough memory on {where}: {detail}, but only {available / 1024**3:.1f} GB is free for this process. "
        "Use fewer or smaller supports, a smaller --image-size, or a machine with more memory."
    )
