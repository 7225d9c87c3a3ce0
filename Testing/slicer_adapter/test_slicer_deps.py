"""What the Slicer module installs and how: requirements, checks against the installed packages, PyTorch from its
index for this computer's build and the rest with pip, in separate processes (the build's choice: test_torch_build)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from engine_needed import needs_engine

from FateSAMLib.errors import FateSAMError, InputError
from FateSAMLib.slicer.deps import (
    REQUIREMENTS_FILE,
    TORCH_REQUIREMENTS,
    DependencyPlan,
    check_installed,
    dependency_plan,
    install_steps,
    missing_packages,
    missing_torch,
    pip_arguments,
    pip_environment,
    read_requirements,
    start_install,
    unmet_requirements,
)
from FateSAMLib.slicer.torch_build import OVERRIDE_VARIABLE, TorchBuild

REPO = Path(__file__).resolve().parents[2]


def test_requirements_file_pins_the_engine_packages_and_leaves_torch_to_its_own_step():
    assert REQUIREMENTS_FILE == REPO / "requirements.txt"
    requirements = read_requirements()
    assert "sam2==1.1.0" in requirements
    names = [requirement.split("=")[0].split(">")[0].lower() for requirement in requirements]
    assert {"sam2", "simpleitk", "slicerio", "numpy"} <= set(names)
    assert "torch" not in names and "torchvision" not in names


@needs_engine
def test_this_environment_has_everything():
    assert missing_packages() == []
    assert missing_torch() == []


def test_unmet_requirements_checks_names_and_versions(tmp_path):
    assert unmet_requirements(["numpy>=1.0", "pytest"]) == []
    assert unmet_requirements(["numpy<1.0", "no-such-package-fatesam-test>=1"]) == [
        "numpy<1.0",
        "no-such-package-fatesam-test>=1",
    ]
    with pytest.raises(InputError, match="Invalid requirement"):
        unmet_requirements(["numpy >>= 2"])


@needs_engine
def test_the_plan_names_what_is_missing_and_an_installation_that_left_something_out(tmp_path):
    assert dependency_plan() == DependencyPlan() and DependencyPlan().complete
    check_installed()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\nno-such-package-fatesam-test>=1\n")
    plan = dependency_plan(requirements)
    assert plan == DependencyPlan(torch=(), packages=("no-such-package-fatesam-test>=1",)) and not plan.complete
    with pytest.raises(FateSAMError, match="still missing after installation: no-such-package-fatesam-test>=1"):
        check_installed(requirements)


def test_the_plan_names_the_pytorch_build_only_when_pytorch_is_missing(monkeypatch):
    """Where torch is installed (the main test environment) no build is chosen; where it is not (the Python 3.12 run,
    as in Slicer before the first installation) the plan carries the build the dialog names."""
    monkeypatch.setenv(OVERRIDE_VARIABLE, "cpu")
    plan = dependency_plan()
    if plan.torch:
        assert plan.torch == TORCH_REQUIREMENTS and plan.torch_build == TorchBuild("cpu", f"set by {OVERRIDE_VARIABLE}")
    else:
        assert plan.torch_build is None


def test_read_requirements_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\nsam2==1.1.0  # pinned\n  slicerio>=1\n")
    assert read_requirements(path) == ["sam2==1.1.0", "slicerio>=1"]
    assert pip_arguments(path) == ["-r", str(path), "--no-build-isolation"]
    with pytest.raises(InputError, match="reinstall the FateSAM extension"):
        read_requirements(tmp_path / "missing.txt")


def test_pytorch_comes_first_from_its_index_then_pip_installs_the_requirements():
    python = "/opt/Slicer/bin/PythonSlicer"
    build = TorchBuild("cu128", "for the NVIDIA driver 570.86")
    plan = DependencyPlan(torch=TORCH_REQUIREMENTS, packages=("sam2==1.1.0",), torch_build=build)
    steps = install_steps(plan, REQUIREMENTS_FILE, python)
    assert [step.command for step in steps] == [
        (python, "-m", "pip", "install", "torch>=2.5.1", "torchvision>=0.20.1", "--index-url", build.index_url),
        (python, "-m", "pip", "install", "-r", str(REQUIREMENTS_FILE), "--no-build-isolation"),
    ]
    assert build.index_url == "https://download.pytorch.org/whl/cu128"
    # Slicer's pip is never reinstalled: no step names pip, or light-the-torch (which pins pip), as a package.
    assert not [arg for step in steps for arg in step.command[4:] if arg.lower().startswith(("pip", "light"))]
    cpu_only = install_steps(DependencyPlan(torch=TORCH_REQUIREMENTS, torch_build=TorchBuild("cpu", "no GPU")))
    assert cpu_only[0].command[-2:] == ("--index-url", "https://download.pytorch.org/whl/cpu")
    assert [step.command[2] for step in install_steps(DependencyPlan(packages=("sam2==1.1.0",)), python=python)] == [
        "pip"
    ]
    assert install_steps(DependencyPlan()) == [] and start_install(DependencyPlan()) is None
    environment = pip_environment({"HOME": "/h", "SAM2_BUILD_CUDA": "1"})
    assert environment == {"HOME": "/h", "SAM2_BUILD_CUDA": "0", "PYTHONUNBUFFERED": "1"}


def test_pip_installs_in_a_background_process_and_reports_its_failure(tmp_path):
    """Real pip runs, offline (PIP_NO_INDEX): an installed requirement succeeds, an unknown one fails, quoting pip."""
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    satisfied = tmp_path / "satisfied.txt"
    satisfied.write_text("numpy>=1.0\n")
    job = start_install(DependencyPlan(packages=("numpy>=1.0",)), satisfied, sys.executable, offline)
    job.wait(interval_s=0.05)
    assert job.state == "succeeded", job.error
    assert any("already satisfied" in line for line in job.log_tail)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("no-such-package-fatesam-test==1.0\n")
    job = start_install(
        DependencyPlan(packages=("no-such-package-fatesam-test==1.0",)), unknown, sys.executable, offline
    )
    job.wait(interval_s=0.05)
    assert job.state == "failed" and "The installation (pip) stopped with exit code" in str(job.error)
    assert "no-such-package-fatesam-test" in str(job.error)
