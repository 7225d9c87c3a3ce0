"""A Slicer run's files: the export of the scene's inputs (label values by name, scene untouched) and the import
of the engine's result (named, coloured, on the target)."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import (
    KIDNEY,
    LIVER,
    SPLEEN,
    TERMINOLOGY,
    oblique_geometry,
    result_file,
    scene_fixture,  # noqa: F401 (a fixture)
    scene_snapshot,
    supports_fixture,  # noqa: F401 (a fixture)
)

from FateSAMLib.errors import InputError
from FateSAMLib.segments import Segment
from FateSAMLib.slicer.apply_result import KeptSegments
from FateSAMLib.slicer.exchange import export_inputs, import_result
from FateSAMLib.slicer.plan import plan_segments
from FateSAMLib.slicer.scene import add_to_scene, array_to_volume, segment_infos, segmentation_to_label_array


def label_values(seg_nrrd) -> dict[str, int]:
    slicerio = pytest.importorskip("slicerio")
    return {segment["name"]: segment["labelValue"] for segment in slicerio.read_segmentation(str(seg_nrrd))["segments"]}


def test_export_assigns_label_values_by_name_and_leaves_the_scene_alone(scene, supports, tmp_path):
    pairs, labels = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), oblique_geometry(), "target"))
    before = scene_snapshot(scene)
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs))
    assert scene_snapshot(scene) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "query.nrrd",
        "support-1.nrrd",
        "support-1.seg.nrrd",
        "support-2.nrrd",
        "support-2.seg.nrrd",
    ]
    assert label_values(inputs.supports[0][1]) == {"Liver": 1, "Spleen": 2}
    assert label_values(inputs.supports[1][1]) == {"Spleen": 2, "Left kidney": 3}  # "spleen" joins "Spleen"
    slicerio = pytest.importorskip("slicerio")
    second = slicerio.read_segmentation(str(inputs.supports[1][1]))["voxels"].transpose(2, 1, 0)
    expected = np.select([labels[1] == SPLEEN.value, labels[1] == KIDNEY.value], [2, 3], 0)
    np.testing.assert_array_equal(second, expected)
    assert (inputs.output.parent, inputs.stats.parent) == (tmp_path, tmp_path) and not inputs.output.exists()
    # The engine reads the exported pair back as the same labels, named, on the support image's grid.
    sitk = pytest.importorskip("SimpleITK", reason="the engine reads with SimpleITK")
    from FateSAMLib.io.images import read_image
    from FateSAMLib.io.labels import read_label_map

    image, segments = read_label_map(inputs.supports[1][1], read_image(inputs.supports[1][0]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    assert [(segment.value, segment.name) for segment in segments] == [(2, "Spleen"), (3, "Left kidney")]


def test_a_support_without_the_chosen_segments_is_left_out(scene, supports, tmp_path):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs, ["Liver"]))
    assert len(inputs.supports) == 1 and "none of the chosen segments" in inputs.warnings[0]
    empty = pairs[0].segmentation.GetSegmentation().AddEmptySegment("", "Heart")
    assert empty
    planned = plan_segments(pairs, ["Liver", "Heart"])
    inputs = export_inputs(tmp_path / "empty", target, pairs, planned)
    assert label_values(inputs.supports[0][1]) == {"Liver": 1}  # an empty segment is not exported
    with pytest.raises(InputError, match="None of the supports"):
        export_inputs(tmp_path / "only-empty", target, pairs, plan_segments(pairs, ["Heart"]))
    with pytest.raises(InputError, match="None of the supports"):
        export_inputs(tmp_path / "x", target, pairs, [Segment(1, "Heart", (1, 0, 0))])
    with pytest.raises(InputError, match="No support"):
        export_inputs(tmp_path, target, [], plan_segments(pairs))


def test_import_creates_a_new_named_node_with_terminology_on_the_target(scene, supports, tmp_path):
    pairs, _ = supports
    geometry = oblique_geometry()
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), geometry, "target"))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    target.SetAndObserveTransformNodeID(transform.GetID())
    path, labels = result_file(tmp_path, (6, 9, 8), geometry)
    first = import_result(scene, path, target, terminologies={"SPLEEN": TERMINOLOGY})
    second = import_result(scene, path, target)
    assert first.GetName() == "target FateSAM" and second.GetName() != first.GetName()
    infos = segment_infos(first)
    assert [(i.name, i.color) for i in infos] == [("Liver", LIVER.color), ("Spleen", SPLEEN.color)]
    assert infos[1].terminology == TERMINOLOGY and infos[0].terminology != TERMINOLOGY
    assert first.GetNodeReference(first.GetReferenceImageGeometryReferenceRole()) is target
    assert first.GetTransformNodeID() == transform.GetID()
    values = {info.segment_id: index for index, info in enumerate(infos, start=1)}
    np.testing.assert_array_equal(segmentation_to_label_array(first, target, values), labels)


def test_import_into_a_picked_node_replaces_its_segments_with_consent(scene, supports, tmp_path):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), np.eye(4), "target"))
    picked = pairs[0].segmentation
    count = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    path, _ = result_file(tmp_path, (6, 9, 8), np.eye(4))
    keeping = KeptSegments(replace_edited=True)  # the picked node's segments are the user's: replaced if consented
    assert import_result(scene, path, target, output_node=picked, keeping=keeping) is picked
    assert [info.name for info in segment_infos(picked)] == ["Liver", "Spleen"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    scene.RemoveNode(target)
    with pytest.raises(InputError, match="removed from the scene"):
        import_result(scene, path, target)
