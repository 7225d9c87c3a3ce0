"""What the Slicer module must install before the engine can run, and how.

torch and torchvision are installed with Slicer's pip from PyTorch's index for the build that fits this computer's
NVIDIA driver, or the CPU-only build (:mod:`.torch_build`: light-the-torch's rule, without light-the-torch, which would
downgrade Slicer's pip); the other packages come from ``requirements.txt`` next to the FateSAMLib package, with pip.
Every step runs as ``PythonSlicer -m pip ...`` in a separate process, one after another (:func:`start_install`),
followed like a run: progress lines, cancel. Standard library plus ``packaging`` (shipped with Slicer's Python) only.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import FateSAMError, InputError
from .process import PACKAGE_PARENT, JobSequence, JobStep, python_executable
from .torch_build import TorchBuild, choose_torch_build

REQUIREMENTS_FILE = PACKAGE_PARENT / "requirements.txt"
TORCH_VERSION = ">=2.5.1"  # what sam2 1.1.0 needs
TORCH_REQUIREMENTS = (f"torch{TORCH_VERSION}", "torchvision>=0.20.1")
PIP_OPTIONS = ("--no-build-isolation",)  # build sam2 against the installed torch, not a second download
BUILD_ENVIRONMENT = {"SAM2_BUILD_CUDA": "0"}  # sam2's optional CUDA extension needs a compiler: skip it


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines left out)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputError(f"Cannot read {path} ({error}); reinstall the FateSAM extension.") from error
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def unmet_requirements(requirements: Sequence[str]) -> list[str]:
    """The requirements that are not installed, or installed at a version they exclude."""
    importlib.invalidate_caches()  # see what another process (pip) installed meanwhile
    unmet = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise InputError(f"Invalid requirement {text!r} ({error}); reinstall the FateSAM extension.") from error
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(text)
    return unmet


def missing_torch() -> list[str]:
    """The torch packages still to be installed (from PyTorch's index, :mod:`.torch_build`)."""
    return unmet_requirements(TORCH_REQUIREMENTS)


def missing_packages(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirements of ``path`` still to be installed with pip."""
    return unmet_requirements(read_requirements(path))


@dataclass(frozen=True)
class DependencyPlan:
    """What is missing before the engine can run: torch packages, the build they come from, other packages (pip)."""

    torch: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    torch_build: TorchBuild | None = None  # set when ``torch`` lists something

    @property
    def complete(self) -> bool:
        """Nothing to install."""
        return not self.torch and not self.packages


def dependency_plan(path: Path = REQUIREMENTS_FILE) -> DependencyPlan:
    """What is still to be installed: torch (:func:`missing_torch`, and its build for this computer) and ``path``'s
    other requirements."""
    torch = tuple(missing_torch())
    return DependencyPlan(torch, tuple(missing_packages(path)), choose_torch_build() if torch else None)


def check_installed(path: Path = REQUIREMENTS_FILE) -> None:
    """Raise FateSAMError naming what an installation left missing."""
    still_missing = missing_torch() + missing_packages(path)
    if still_missing:
        raise FateSAMError(
            f"These packages are still missing after installation: {', '.join(still_missing)}. "
            "Restart Slicer and try again; see the module's log for pip's messages."
        )


def pip_arguments(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The ``pip install`` arguments that install ``path``'s requirements."""
    return ["-r", str(path), *PIP_OPTIONS]


def install_steps(plan: DependencyPlan, path: Path = REQUIREMENTS_FILE, python: str | None = None) -> list[JobStep]:
    """The commands that install what ``plan`` lists with ``python`` (default: Slicer's ``PythonSlicer``), in order.

    PyTorch first, with pip from the index of the plan's build (:func:`~.torch_build.choose_torch_build`); pip
    itself is never upgraded or downgraded. Then pip installs ``path``'s requirements, building sam2 against that
    torch.
    """
    python = python or python_executable()
    steps = []
    if plan.torch:
        build = plan.torch_build or choose_torch_build()
        steps.append(
            JobStep(
                "The installation of PyTorch (pip)",
                (python, "-m", "pip", "install", *plan.torch, *build.pip_arguments()),
            )
        )
    if plan.packages:
        steps.append(JobStep("The installation (pip)", (python, "-m", "pip", "install", *pip_arguments(path))))
    return steps


def pip_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the build settings and unbuffered output for pip."""
    environment = dict(os.environ if base is None else base)
    environment.update(BUILD_ENVIRONMENT)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def start_install(
    plan: DependencyPlan,
    path: Path = REQUIREMENTS_FILE,
    python: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> JobSequence | None:
    """Start installing what ``plan`` lists (:func:`install_steps`), one separate process after another; poll the job
    until it has finished. None when ``plan`` is complete."""
    steps = install_steps(plan, path, python)
    return JobSequence(steps, pip_environment(environment)) if steps else None
