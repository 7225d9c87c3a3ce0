"""Devices: which one to run on, how much memory it has free (the host's from :mod:`FateSAMLib.memory`), allocation
failures."""

from __future__ import annotations

import torch

from ..errors import ModelError, ResourceError
from ..memory import host_memory_bytes, is_allocation_failure, not_enough_memory_error


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


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's for CUDA; for the CPU and MPS (unified memory) the system's, or less
    where this process has a tighter limit (``ulimit -v``, RLIMIT_DATA, a cgroup memory limit)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return host_memory_bytes()


def not_enough_memory(detail: str, device: torch.device) -> ResourceError:
    """The "not enough memory" error: what did not fit (``detail``), the memory this process has, and the fix."""
    return not_enough_memory_error(detail, str(device), available_memory_bytes(device))


def run_memory_error(
    error: BaseException, device: torch.device | None, during: str = "during the run"
) -> ResourceError | None:
    """The "not enough memory" error for ``error`` when it is an allocation failure during a run (``device`` None:
    the default one), else None."""
    if not is_allocation_failure(error):
        return None
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return not_enough_memory(f"an allocation failed {during} ({reason[:200]})", device or resolve_device("auto"))
