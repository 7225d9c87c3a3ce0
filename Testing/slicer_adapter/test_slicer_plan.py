"""Segment planning of a Slicer run: the supports' segments matched by name, as the command line matches them."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import (
    KIDNEY,
    LIVER,
    SPLEEN,
    make_case,
    scene_fixture,  # noqa: F401 (a fixture)
    supports_fixture,  # noqa: F401 (a fixture)
)

from FateSAMLib.errors import InputError
from FateSAMLib.segments import Segment
from FateSAMLib.slicer.exchange import export_inputs
from FateSAMLib.slicer.plan import SupportPair, plan_segments, segment_names
from FateSAMLib.slicer.scene import add_to_scene, array_to_volume


def test_segment_names_and_plan_match_names_case_insensitively(supports):
    pairs, _ = supports
    assert segment_names([pair.segmentation for pair in pairs]) == ["Liver", "Spleen", "Left kidney"]
    planned = plan_segments(pairs)
    assert planned == [
        Segment(1, "Liver", LIVER.color),
        Segment(2, "Spleen", SPLEEN.color),
        Segment(3, "Left kidney", KIDNEY.color),
    ]
    assert [s.name for s in plan_segments(pairs, ["LEFT KIDNEY", "spleen"])] == ["Left kidney", "Spleen"]
    with pytest.raises(InputError, match="No support has a segment named 'Heart'.*Liver, Spleen, Left kidney"):
        plan_segments(pairs, ["Heart"])
    with pytest.raises(InputError, match="at least one segment"):
        plan_segments(pairs, [])


def test_names_match_by_the_rule_of_the_command_line(scene, tmp_path):
    """The spellings the command line takes for one structure (Testing/test_segments.py) are one segment here too."""
    same_names = pytest.importorskip("test_segments", reason="the command line's names need SimpleITK").SAME_NAMES
    read_labels = pytest.importorskip("FateSAMLib.io.labels", reason="the engine reads with SimpleITK").read_labels
    livers, strasses = same_names
    pairs = []
    for index, names in enumerate(zip(livers, strasses, strict=True)):
        segments = (Segment(LIVER.value, names[0], LIVER.color), Segment(SPLEEN.value, names[1], SPLEEN.color))
        volume, segmentation, _ = make_case(scene, f"S{index}", segments=segments, seed=index)
        pairs.append(SupportPair(volume, segmentation))
    assert segment_names([pair.segmentation for pair in pairs]) == ["Liver", "Straße"]
    for wanted in (*livers, *strasses):
        assert len(plan_segments(pairs, [wanted])) == 1
    assert [s.name for s in plan_segments(pairs, ["STRASSE", " LIVER "])] == ["Straße", "Liver"]
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs))
    read = [[(s.value, s.name) for s in read_labels(labels)[1]] for _, labels in inputs.supports]
    assert read == [[(1, "Liver"), (2, "Straße")]] * len(livers)  # as the engine reads them
