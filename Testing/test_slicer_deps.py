"""What the Slicer module would install: requirements parsing and checks against the installed packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.slicer_deps import (
    REQUIREMENTS_FILE,
    missing_packages,
    missing_torch,
    pip_arguments,
    read_requirements,
    unmet_requirements,
)

REPO = Path(__file__).resolve().parents[1]


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


def test_read_requirements_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\nsam2==1.1.0  # pinned\n  slicerio>=1\n")
    assert read_requirements(path) == ["sam2==1.1.0", "slicerio>=1"]
    assert pip_arguments(path) == ["-r", str(path), "--no-build-isolation"]
    with pytest.raises(InputError, match="reinstall the FateSAM extension"):
        read_requirements(tmp_path / "missing.txt")
