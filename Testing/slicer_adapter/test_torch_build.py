"""The PyTorch build the Slicer module installs: the NVIDIA driver read from nvidia-smi, the newest CUDA build it runs
(the same choice as light-the-torch's, checked against the installed light-the-torch), the CPU-only build without an
NVIDIA GPU, PyPI's build on macOS, and the override."""

from __future__ import annotations

import os
import sys

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.slicer.torch_build import (
    CUDA_BUILDS,
    OVERRIDE_VARIABLE,
    TorchBuild,
    choose_torch_build,
    cuda_version,
    newest_cuda_build,
    nvidia_driver_version,
)

# Driver versions around each CUDA major's minimum (Linux and Windows), and a few real ones.
DRIVERS = ("384.81", "450.36.06", "450.80.02", "452.39", "470.57.02", "525.60.13", "528.33", "535.104.05", "550.54")
DRIVERS += ("570.86.10", "580.0.0", "580.65.06", "590.44.01", "not-a-version")

FAKE_NVIDIA_SMI = """#!/bin/sh
# nvidia-smi as it answers --query-gpu=driver_version (with --format=csv: a header line first)
[ -n "$FAKE_DRIVER_FAILS" ] && exit 9
case "$*" in *noheader*) ;; *) echo driver_version ;; esac
echo "$FAKE_DRIVER"
"""


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi first on PATH that reports $FAKE_DRIVER; returns a function that sets it."""
    if os.name == "nt":
        pytest.skip("the stand-in nvidia-smi is a POSIX shell script")
    script = tmp_path / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI)
    script.chmod(0o700)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("FAKE_DRIVER_FAILS", raising=False)
    return lambda driver: monkeypatch.setenv("FAKE_DRIVER", driver)


def test_the_driver_version_is_read_from_nvidia_smi(nvidia_smi, monkeypatch):
    nvidia_smi("570.86.10")
    assert nvidia_driver_version() == "570.86.10"
    monkeypatch.setenv("FAKE_DRIVER_FAILS", "1")  # nvidia-smi there, but no driver loaded
    assert nvidia_driver_version() is None
    monkeypatch.setenv("PATH", "")
    assert nvidia_driver_version() is None  # no NVIDIA software at all


def test_the_build_is_the_one_light_the_torch_would_take(nvidia_smi):
    """light-the-torch takes the newest CUDA build, among those on PyTorch's index, that the driver runs (its sort
    key puts the build before the version): the newest of ours that it finds compatible, with the same nvidia-smi."""
    cb = pytest.importorskip("light_the_torch._cb", reason="light-the-torch (test extra) compares the choice")
    for driver in DRIVERS:
        nvidia_smi(driver)
        compatible = {str(backend) for backend in cb.detect_compatible_computation_backends()}
        expected = max((b for b in CUDA_BUILDS if b in compatible), key=cuda_version, default=None)
        assert newest_cuda_build(driver, "Linux") == expected, driver
        assert choose_torch_build("Linux", override="").backend == (expected or "cpu"), driver


def just_below(version: str) -> str:
    """The highest version below ``version`` (e.g. 580.0.0 -> 579.999.999)."""
    parts = [int(part) for part in version.split(".")]
    last = max(index for index, part in enumerate(parts) if part)
    return ".".join(map(str, [*parts[:last], parts[last] - 1] + [999] * (len(parts) - last - 1)))


def test_the_minimum_drivers_are_light_the_torchs_on_both_systems():
    """Each of our builds is chosen from the very driver light-the-torch's table names for it, on Linux and Windows."""
    cb = pytest.importorskip("light_the_torch._cb", reason="light-the-torch (test extra) compares the tables")
    for system, minimums in cb._MINIMUM_DRIVER_VERSIONS.items():
        for backend in CUDA_BUILDS:
            needed = str(minimums[cb.Version("{}.{}".format(*cuda_version(backend)))])
            chosen = newest_cuda_build(needed, system)
            assert chosen is not None and cuda_version(chosen) >= cuda_version(backend), (system, backend)
            below = newest_cuda_build(just_below(needed), system)
            assert below is None or cuda_version(below) < cuda_version(backend), (system, backend)


def test_without_an_nvidia_gpu_the_cpu_only_build_comes_from_pytorchs_cpu_index(nvidia_smi, monkeypatch):
    monkeypatch.delenv(OVERRIDE_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", "")
    for system in ("Linux", "Windows"):
        build = choose_torch_build(system)
        assert build == TorchBuild("cpu", "no NVIDIA GPU found")
        assert build.pip_arguments() == ["--index-url", "https://download.pytorch.org/whl/cpu"]
        assert "CPU-only" in build.describe() and "200 MB" in build.describe()
    old = choose_torch_build("Linux", driver="384.81")
    assert old.backend == "cpu" and "too old" in old.reason
    cuda = choose_torch_build("Windows", driver="535.104.05")
    assert cuda.backend == CUDA_BUILDS[-2] and "CUDA 12.9" in cuda.describe() and "535.104.05" in cuda.describe()
    mac = choose_torch_build("Darwin", driver="570.86.10")
    assert mac.backend == "" and mac.pip_arguments() == [] and "PyPI" in mac.describe()


def test_the_override_names_the_build_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.setenv(OVERRIDE_VARIABLE, " CPU ")
    assert choose_torch_build("Linux", driver="570.86.10").backend == "cpu"
    assert choose_torch_build("Darwin").backend == "cpu"
    assert choose_torch_build("Linux", override="cu126").index_url == "https://download.pytorch.org/whl/cu126"
    with pytest.raises(InputError, match=f"{OVERRIDE_VARIABLE}='cuda' names no PyTorch build; use cpu"):
        choose_torch_build("Linux", override="cuda")


def test_this_machine_gets_the_cpu_only_build_unless_it_has_an_nvidia_driver(monkeypatch):
    monkeypatch.delenv(OVERRIDE_VARIABLE, raising=False)
    driver = nvidia_driver_version()
    expected = newest_cuda_build(driver, "Windows" if os.name == "nt" else "Linux") if driver else None
    assert choose_torch_build().backend == ("" if sys.platform == "darwin" else expected or "cpu")
