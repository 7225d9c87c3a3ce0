"""Fixtures of the slicer tier's tests: a real MRML scene (slicer-core wheel), supports in it, a private temp folder."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture
def scene():
    """An empty MRML scene with the segmentation converters registered (skips without the slicer-core wheel)."""
    from scene_helpers import slicer

    from FateSAMLib.slicer.scene import register_segmentation_converters

    register_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture
def supports(scene):
    """Two supports whose segment names differ in case and in which segments they have."""
    from scene_helpers import KIDNEY, LIVER, SPLEEN, TERMINOLOGY, make_case, oblique_geometry

    from FateSAMLib.segments import Segment
    from FateSAMLib.slicer.plan import SupportPair

    first = make_case(scene, "A", segments=(LIVER, SPLEEN))
    lower_spleen = Segment(SPLEEN.value, "spleen", (0.0, 1.0, 0.0))
    geometry = oblique_geometry(angles=(5, 0, -20))
    second = make_case(scene, "B", shape=(8, 12, 10), geometry=geometry, seed=1, segments=(lower_spleen, KIDNEY))
    second[1].GetSegmentation().GetNthSegment(0).SetTerminology(TERMINOLOGY)
    return [SupportPair(first[0], first[1]), SupportPair(second[0], second[1])], [first[2], second[2]]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Run folders go into tmp_path (as with TMPDIR), so that tests see only their own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path
