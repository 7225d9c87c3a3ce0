"""What the Slicer module installs and how: requirements, checks against the installed packages, pip in a separate
process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from FateSAMLib.errors import FateSAMError, InputError
from FateSAMLib.slicer.deps import (
    REQUIREMENTS_FILE,
    DependencyPlan,
    check_installed,
    dependency_plan,
    missing_packages,
    missing_torch,
    pip_arguments,
    pip_environment,
    pip_install_command,
    read_requirements,
    start_pip_install,
    unmet_requirements,
)

REPO = Path(__file__).resolve().parents[2]


def test_requirements_file_pins_the_engine_packages_and_leaves_torch_to_the_pytorch_extension():
    assert REQUIREMENTS_FILE == REPO / "requirements.txt"
    requirements = read_requirements()
    assert "sam2==1.1.0" in requirements
    names = [requirement.split("=")[0].split(">")[0].lower() for requirement in requirements]
    assert {"sam2", "simpleitk", "slicerio", "numpy"} <= set(names)
    assert "torch" not in names and "torchvision" not in names


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


def test_the_plan_names_what_is_missing_and_an_installation_that_left_something_out(tmp_path):
    assert dependency_plan() == DependencyPlan() and DependencyPlan().complete
    check_installed()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\nno-such-package-fatesam-test>=1\n")
    plan = dependency_plan(requirements)
    assert plan == DependencyPlan(torch=(), packages=("no-such-package-fatesam-test>=1",)) and not plan.complete
    with pytest.raises(FateSAMError, match="still missing after installation: no-such-package-fatesam-test>=1"):
        check_installed(requirements)


def test_pytorch_is_installed_only_through_the_pytorch_extension():
    DependencyPlan(packages=("sam2==1.1.0",)).check_installable(pytorch_extension_installed=False)
    DependencyPlan(torch=("torch>=2.5.1",)).check_installable(pytorch_extension_installed=True)
    with pytest.raises(FateSAMError, match="Install the 'PyTorch' extension"):
        DependencyPlan(torch=("torch>=2.5.1",)).check_installable(pytorch_extension_installed=False)


def test_read_requirements_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\nsam2==1.1.0  # pinned\n  slicerio>=1\n")
    assert read_requirements(path) == ["sam2==1.1.0", "slicerio>=1"]
    assert pip_arguments(path) == ["-r", str(path), "--no-build-isolation"]
    with pytest.raises(InputError, match="reinstall the FateSAM extension"):
        read_requirements(tmp_path / "missing.txt")


def test_pip_runs_as_slicers_python_with_the_build_settings():
    assert pip_install_command(REQUIREMENTS_FILE, python="/opt/Slicer/bin/PythonSlicer") == [
        "/opt/Slicer/bin/PythonSlicer",
        "-m",
        "pip",
        "install",
        "-r",
        str(REQUIREMENTS_FILE),
        "--no-build-isolation",
    ]
    assert pip_install_command()[1:4] == ["-m", "pip", "install"]
    environment = pip_environment({"HOME": "/h", "SAM2_BUILD_CUDA": "1"})
    assert environment == {"HOME": "/h", "SAM2_BUILD_CUDA": "0", "PYTHONUNBUFFERED": "1"}


def test_pip_installs_in_a_background_process_and_reports_its_failure(tmp_path):
    """Real pip runs, offline (PIP_NO_INDEX): an installed requirement succeeds, an unknown one fails, quoting pip."""
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    satisfied = tmp_path / "satisfied.txt"
    satisfied.write_text("numpy>=1.0\n")
    job = start_pip_install(satisfied, python=sys.executable, environment=offline)
    job.wait(interval_s=0.05)
    assert job.state == "succeeded", job.error
    assert any("already satisfied" in line for line in job.log_tail)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("no-such-package-fatesam-test==1.0\n")
    job = start_pip_install(unknown, python=sys.executable, environment=offline)
    job.wait(interval_s=0.05)
    assert job.state == "failed" and "The installation (pip) stopped with exit code" in str(job.error)
    assert "no-such-package-fatesam-test" in str(job.error)
