"""Devices: which one to run on, how much memory it has free (within the process's limits), allocation failures."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import torch

from ..errors import ModelError, ResourceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit device must be available (ModelError)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ModelError(f"Unknown device '{device}'. Use auto, cpu, cuda, cuda:N or mps.") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"Device '{device}' was asked for, but CUDA is not available (no NVIDIA GPU or driver, or a PyTorch "
                "built without CUDA). Use --device auto or --device cpu."
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ModelError(
                f"Device '{device}' does not exist: {torch.cuda.device_count()} CUDA device(s) are visible. "
                "Use --device cuda (the first one) or a lower index."
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"Device '{device}' was asked for, but Apple MPS is not available. Use --device cpu.")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"Device '{device}' is not supported. Use auto, cpu, cuda, cuda:N or mps.")
    return chosen


def use_tf32(device: torch.device) -> None:
    """On CUDA, let the float32 parts run in TF32 (bf16 autocast covers the rest), as SAM2's own examples set it.

    The switches are global to the process, so they are set once, where the model is loaded.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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


def _cgroup_available_memory(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory left under the tightest cgroup limit of this process (v2 and its parents, or v1), None if unlimited."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths = {controllers: path.lstrip("/") for _, controllers, path in (line.split(":", 2) for line in lines)}
    candidates = []  # (limit file, usage file, stat file)
    if "" in paths:  # cgroup v2: the process's group and every group above it
        group = root / paths[""]
        for folder in (group, *group.parents):
            if folder == root.parent:
                break
            candidates.append((folder / "memory.max", folder / "memory.current", folder / "memory.stat"))
    memory_v1 = root / "memory"
    candidates.append(
        (memory_v1 / "memory.limit_in_bytes", memory_v1 / "memory.usage_in_bytes", memory_v1 / "memory.stat")
    )
    left = []
    for limit_file, usage_file, stat_file in candidates:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**62:  # v1 writes "no limit" as a huge number
            left.append(max(0, limit - usage + _inactive_file_bytes(stat_file)))
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


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's for CUDA; for the CPU and MPS (unified memory) the system's, or less
    where this process has a tighter limit (``ulimit -v``, RLIMIT_DATA, a cgroup memory limit)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    limits = (_system_available_memory(), _process_limit_memory(), _cgroup_available_memory())
    return min(limit for limit in limits if limit is not None)


ALLOCATION_FAILURE_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is an allocator running out of memory (MemoryError, or torch's RuntimeError saying so)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in ALLOCATION_FAILURE_MARKERS)


def not_enough_memory(detail: str, device: torch.device) -> ResourceError:
    """The "not enough memory" error: what did not fit (``detail``), the memory this process has, and the fix."""
    available = available_memory_bytes(device)
    return ResourceError(
        f"Not enough memory on {device}: {detail}, but only {available / 1024**3:.1f} GB is free for this process. "
        "Use fewer or smaller supports, a smaller --image-size, or a machine with more memory."
    )


def allocation_error(
    error: BaseException, device: torch.device | None, during: str = "during the run"
) -> ResourceError | None:
    """The "not enough memory" error for ``error`` when it is an allocation failure (``device`` None: the default
    one), else None."""
    if not is_allocation_failure(error):
        return None
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return not_enough_memory(f"an allocation failed {during} ({reason[:200]})", device or resolve_device("auto"))
