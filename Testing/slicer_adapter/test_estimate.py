"""The line the Slicer module shows before Apply (``slicer.estimate``): the time of a typical volume with the chosen
model on this computer, the faster MedSAM2 when it is much faster, the server; read from the cached estimates,
without torch (under Python 3.12 without torch nothing can have been measured: the line says so)."""

from __future__ import annotations

import importlib.util

import pytest

from FateSAMLib.estimates import StepTimes, record_estimate
from FateSAMLib.slicer.estimate import estimate_text


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FATESAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unmeasured_on_a_server_or_without_a_model_the_line_says_so():
    assert "not measured yet" in estimate_text("sam2.1-tiny")
    assert estimate_text("sam2.1-tiny", on_server=True) == "Runs on the server: the time depends on its GPU."
    assert estimate_text("") == ""  # the model list is not filled yet


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="estimates are kept per torch version: no torch")
def test_the_module_line_gives_the_time_here_the_faster_model_and_the_server():
    record_estimate("hiera_t@1024", StepTimes(3.4, 5.5, 0.2, "cpu"))  # as measured at 1024 on a 2-core CPU
    record_estimate("hiera_t@512", StepTimes(0.6, 0.4, 0.05, "cpu"))
    assert estimate_text("sam2.1-tiny") == (
        "About 15 min for a typical volume (40 slices, 2 segments) on this CPU; about 2 min with medsam2 at 512; "
        "or run on a GPU server (Where to run)."
    )
    assert estimate_text("medsam2") == "About 2 min for a typical volume (40 slices, 2 segments) on this CPU."
    record_estimate("hiera_t@1024", StepTimes(0.05, 0.04, 0.01, "cuda"))
    assert estimate_text("sam2.1-tiny") == "About 10 s for a typical volume (40 slices, 2 segments) on this GPU."
