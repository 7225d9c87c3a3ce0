"""Which PyTorch build the Slicer module installs, and from which index: light-the-torch's rule, in our code.

light-the-torch picks the newest CUDA build of PyTorch that the computer's NVIDIA driver runs, else the CPU build;
but every release of it pins pip (0.8.1: ``pip>=22.3,<26.1``), and Slicer 5.12 ships pip 26.1.1: installing it would
downgrade Slicer's own pip. So the module applies the same rule itself and installs PyTorch with Slicer's pip, from
PyTorch's index for that build (``https://download.pytorch.org/whl/<build>``), leaving pip as it is:

- the driver version comes from ``nvidia-smi`` (as light-the-torch reads it);
- each CUDA version runs from a minimum driver version (NVIDIA's CUDA toolkit release notes, per operating system);
- the build is the newest of PyTorch's CUDA builds (:data:`CUDA_BUILDS`) that the driver runs; without an NVIDIA
  driver, the CPU-only build (about 200 MB instead of the CUDA build's 3 GB); on macOS, PyPI's only build (MPS).

``FATESAM_TORCH_BACKEND`` (``cpu``, ``cu126``, ...) in Slicer's environment overrides the choice.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ..errors import InputError

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
OVERRIDE_VARIABLE = "FATESAM_TORCH_BACKEND"
# PyTorch's CUDA builds that carry torch>=2.5.1 (what sam2 needs), oldest first.
CUDA_BUILDS = ("cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130")
# The minimum driver of each CUDA major version (NVIDIA's CUDA toolkit release notes, minor version compatibility).
_MINIMUM_DRIVERS = {
    "Linux": {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"},
    "Windows": {11: "452.39", 12: "528.33", 13: "580.0.0"},
}


@dataclass(frozen=True)
class TorchBuild:
    """A PyTorch build: ``backend`` (``cpu``, ``cu128``, or ``""`` for PyPI's build) and why it was chosen."""

    backend: str
    reason: str

    @property
    def index_url(self) -> str | None:
        """PyTorch's index for this build (None: PyPI)."""
        return PYTORCH_INDEX + self.backend if self.backend else None

    def pip_arguments(self) -> list[str]:
        """The ``pip install`` options that take torch and torchvision from this build's index."""
        return ["--index-url", self.index_url] if self.index_url else []

    def describe(self) -> str:
        """The build in words, for the confirmation dialog."""
        if not self.backend:
            return f"the build from PyPI ({self.reason})"
        if self.backend == "cpu":
            return f"the CPU-only build, about 200 MB ({self.reason})"
        major, minor = self.backend[2:-1], self.backend[-1]
        return f"the CUDA {major}.{minor} build, about 3 GB ({self.reason})"


def cuda_version(backend: str) -> tuple[int, int]:
    """``cu128`` -> (12, 8)."""
    return int(backend[2:-1]), int(backend[-1])


def nvidia_driver_version(timeout_s: float = 10.0) -> str | None:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it, or None (no NVIDIA GPU, driver or nvidia-smi)."""
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = completed.stdout.split()
    return lines[0] if lines else None


def newest_cuda_build(driver: str, system: str) -> str | None:
    """The newest of :data:`CUDA_BUILDS` that ``driver`` runs on ``system``; None when it runs none of them."""
    try:
        installed = Version(driver)
    except InvalidVersion:
        return None
    minimums = _MINIMUM_DRIVERS.get(system, {})
    runnable = [
        backend
        for backend in CUDA_BUILDS
        if cuda_version(backend)[0] in minimums and installed >= Version(minimums[cuda_version(backend)[0]])
    ]
    return runnable[-1] if runnable else None


def choose_torch_build(system: str | None = None, driver: str | None = None, override: str | None = None) -> TorchBuild:
    """The build to install on ``system`` (default: this one) with the NVIDIA ``driver`` (default: detected).

    ``override`` (default: ``$FATESAM_TORCH_BACKEND``) names the build; an unknown name is refused (InputError).
    """
    system = system or platform.system()
    override = os.environ.get(OVERRIDE_VARIABLE, "") if override is None else override
    if override.strip():
        backend = override.strip().lower()
        if not re.fullmatch(r"cpu|cu\d{3}", backend):
            raise InputError(
                f"{OVERRIDE_VARIABLE}={override!r} names no PyTorch build; use cpu or a CUDA build such as "
                f"{CUDA_BUILDS[-1]}, or unset it to let FateSAM choose."
            )
        return TorchBuild(backend, f"set by {OVERRIDE_VARIABLE}")
    if system == "Darwin":
        return TorchBuild("", "macOS: Apple GPU (MPS) or CPU")
    driver = nvidia_driver_version() if driver is None else driver
    if not driver:
        return TorchBuild("cpu", "no NVIDIA GPU found")
    backend = newest_cuda_build(driver, system)
    if backend is None:
        return TorchBuild("cpu", f"the NVIDIA driver {driver} is too old for PyTorch's CUDA builds")
    return TorchBuild(backend, f"for the NVIDIA driver {driver}")
