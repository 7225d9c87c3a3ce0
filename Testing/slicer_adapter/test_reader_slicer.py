"""What the Slicer module gives a reader, without Qt (slicer-core): a result applied into an existing node keeps the
node's other segments bit for bit and a reader's edits, the support slice a prediction leaned on shown in a second
slice view, segment volumes, and the probabilities as volumes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import vtk
from engine_needed import needs_engine
from scene_helpers import KIDNEY, LIVER, SPLEEN, make_case, oblique_geometry, slicer
from test_refine_run import edit_slice, labels_of
from test_slicer_run import FAST, small_supports, succeeded

from FateSAMLib.segments import Segment
from FateSAMLib.slicer.apply_result import apply_result, plan_apply
from FateSAMLib.slicer.review import ReviewSession, slice_array_axis
from FateSAMLib.slicer.run import SegmentationRun
from FateSAMLib.slicer.scene import (
    BINARY_LABELMAP,
    from_world,
    ijk_to_ras,
    label_array_to_segmentation,
    lps_to_ras,
    register_segmentation_converters,
    segment_infos,
    segmentation_to_label_array,
    to_world,
)
from FateSAMLib.slicer.support_view import leaned_on, show_support_slice, stack_index
from FateSAMLib.slicer.volumes import segmentation_volumes


@pytest.fixture
def scene():
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


def segment_state(node) -> dict[str, tuple]:
    """Per segment name: its colour, its own labelmap's voxels (its label value's mask), extent and geometry."""
    state = {}
    segmentation = node.GetSegmentation()
    for info in segment_infos(node):
        segment = segmentation.GetSegment(info.segment_id)
        image = segment.GetRepresentation(BINARY_LABELMAP)
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        scalars = _scalars(image)
        state[info.name] = (
            info.color,
            tuple(image.GetExtent()),
            tuple(matrix.GetElement(r, c) for r in range(4) for c in range(4)),
            (scalars == segment.GetLabelValue()).tobytes(),
        )
    return state


def _scalars(image) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).copy()


def result_node(shape, geometry, boxes: dict[str, tuple]) -> tuple:
    """A result node outside the scene with one box per named segment, and its label array (values 1..N)."""
    labels = np.zeros(shape, np.uint8)
    segments = []
    for value, (name, box) in enumerate(boxes.items(), start=1):
        labels[box] = value
        segments.append(Segment(value, name, (0.5, 0.5, value / 4)))
    return label_array_to_segmentation(labels, geometry, segments, "result"), labels


def test_applying_replaces_only_the_runs_untouched_segments_and_keeps_the_rest_bit_for_bit(scene):
    volume, node, _ = make_case(scene, "case", segments=(LIVER, SPLEEN, KIDNEY))
    before = segment_state(node)
    boxes = {"liver": np.s_[1:4, 2:6, 2:5], "Spleen": np.s_[5:8, 8:12, 6:10], "Tumour": np.s_[2:3, 9:11, 1:3]}
    result, labels = result_node((9, 14, 12), oblique_geometry(), boxes)
    plan = plan_apply(node, list(boxes), locked=["SPLEEN"], untouched={"liver", "spleen"})
    assert (plan.replaced, plan.added, plan.locked, plan.edited) == (["liver"], ["Tumour"], ["Spleen"], [])
    warnings = apply_result(node, result, locked=["SPLEEN"], untouched={"liver", "spleen"})
    assert warnings == []
    # Liver replaced where it was (first), Spleen locked and Left kidney not produced: both kept bit for bit
    assert [info.name for info in segment_infos(node)] == ["liver", "Spleen", "Left kidney", "Tumour"]
    after = segment_state(node)
    assert after["Spleen"] == before["Spleen"] and after["Left kidney"] == before["Left kidney"]
    ids = {info.name: info.segment_id for info in segment_infos(node)}
    np.testing.assert_array_equal(segmentation_to_label_array(node, volume, {ids["liver"]: 1}), labels == 1)
    np.testing.assert_array_equal(segmentation_to_label_array(node, volume, {ids["Tumour"]: 3}), (labels == 3) * 3)


def test_a_hand_edited_segment_is_replaced_only_with_consent(scene):
    volume, node, _ = make_case(scene, "case", segments=(LIVER, SPLEEN))
    before = segment_state(node)
    boxes = {"Liver": np.s_[1:4, 2:6, 2:5]}
    plan = plan_apply(node, list(boxes), locked=(), untouched=set())  # nothing known as FateSAM's: the user's
    assert plan.edited == ["Liver"] and "Liver" in plan.question() and "Replace" in plan.question()
    result, labels = result_node((9, 14, 12), oblique_geometry(), boxes)
    warnings = apply_result(node, result)
    assert [info.name for info in segment_infos(node)] == ["Liver", "Spleen", "Liver FateSAM"]
    assert segment_state(node)["Liver"] == before["Liver"] and "kept" in warnings[0]
    again, _ = result_node((9, 14, 12), oblique_geometry(), boxes)
    apply_result(node, again)  # an earlier copy beside the user's is replaced, not duplicated
    assert [info.name for info in segment_infos(node)] == ["Liver", "Spleen", "Liver FateSAM"]
    consented, _ = result_node((9, 14, 12), oblique_geometry(), boxes)
    assert apply_result(node, consented, replace_edited=True) == []
    ids = {info.name: info.segment_id for info in segment_infos(node)}
    np.testing.assert_array_equal(segmentation_to_label_array(node, volume, {ids["Liver"]: 1}), labels == 1)
    assert segment_state(node)["Spleen"] == before["Spleen"]


def test_volumes_of_a_node_are_voxel_counts_times_the_voxel_volume(scene):
    volume, node, labels = make_case(scene, "case")
    voxel_ml = abs(np.linalg.det(oblique_geometry()[:3, :3])) / 1000  # 0.7 x 1.3 x 2.9 mm, rotated
    volumes = segmentation_volumes(node, volume)
    assert [(v.name, v.voxels) for v in volumes] == [
        (s.name, int((labels == s.value).sum())) for s in (LIVER, SPLEEN, KIDNEY)
    ]
    for v in volumes:
        assert v.volume_ml == pytest.approx(v.voxels * voxel_ml)


def second_view(scene):
    """A slice view as the application makes one: its slice node (with the orientation presets) and composite."""
    slice_node = slicer.vtkMRMLSliceNode()
    slice_node.SetLayoutName("Yellow")
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    scene.AddNode(slice_node)
    for name in ("Axial", "Coronal", "Sagittal"):
        if not slice_node.HasSliceOrientationPreset(name):
            default = scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
            slice_node.AddSliceOrientationPreset(name, default.GetSliceOrientationPreset(name))
    composite = slicer.vtkMRMLSliceCompositeNode()
    composite.SetLayoutName("Yellow")
    scene.AddNode(composite)
    return slice_node, composite


@needs_engine
def test_a_second_run_into_an_edited_result_keeps_the_edits_and_shows_its_provenance_volumes_and_probabilities(scene):
    target, pairs, _ = small_supports(scene)
    session = ReviewSession()
    try:
        first = succeeded(SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable, session=session))
        result = first.result
        measured = {v.name: v for v in segmentation_volumes(result, target)}
        for stats_volume in first.stats.volumes:  # the module measures the result as the engine did
            assert measured[stats_volume.name].voxels == stats_volume.voxels
            assert measured[stats_volume.name].volume_ml == pytest.approx(stats_volume.volume_ml)

        axis = slice_array_axis(ijk_to_ras(target), first.stats.slice_axis)
        edit_slice(result, target, axis, 1, "Ball")  # the reader corrects Ball on one slice
        note = label_array_to_segmentation(
            np.pad(np.ones((1, 2, 2), np.uint8), ((1, 1), (5, 25), (5, 25))),
            ijk_to_ras(target),
            [Segment(1, "Note", (1.0, 1.0, 1.0))],
            "note",
        )
        result.GetSegmentation().CopySegmentFromSegmentation(note.GetSegmentation(), segment_infos(note)[0].segment_id)
        before = segment_state(result)
        edited_ball = labels_of_named(result, target, "Ball")

        into_result = {"output_node": result, "python": sys.executable, "session": session, "probabilities": True}
        second = succeeded(SegmentationRun(scene, target, pairs, options=FAST, **into_result))
        assert second.result is result
        assert [info.name for info in segment_infos(result)] == ["Ball", "Box", "Note", "Ball FateSAM"]
        after = segment_state(result)
        assert after["Note"] == before["Note"] and after["Ball"] == before["Ball"]  # bit for bit
        np.testing.assert_array_equal(labels_of_named(result, target, "Ball"), edited_ball)
        assert any("'Ball' in" in warning and "kept" in warning for warning in second.warnings)

        # probabilities: one volume per segment on the target's grid, >= 128 exactly where Box (unedited) is alone
        assert [node.GetName() for node in second.probability_volumes] == [
            "target FateSAM P(Ball)",
            "target FateSAM P(Box)",
        ]
        box_probability = slicer_array(second.probability_volumes[1])
        np.testing.assert_allclose(ijk_to_ras(second.probability_volumes[1]), ijk_to_ras(target), atol=1e-6)
        ball_probability = slicer_array(second.probability_volumes[0])
        alone = (box_probability >= 128) != (ball_probability >= 128)
        box = labels_of_named(result, target, "Box")
        np.testing.assert_array_equal(box[alone], (box_probability >= 128)[alone])
        assert all(scene.IsNodePresent(node) for node in second.probability_volumes)

        # the engine's slice numbers, found back from a point of the slice (as the views' centre is)
        for doubtful in second.doubtful_slices:
            assert stack_index(target, second.stats.slice_axis, doubtful.center_ras) == doubtful.slice_index
        # provenance: the support slice the middle slice leaned on, shown in a second view
        middle = len(second.provenance) // 2
        used = leaned_on(second.provenance, middle)
        pair = second.used_supports[used.support]
        assert used.support_name == f"support-{used.support + 1}.nrrd" and used.segments
        slice_node, composite = second_view(scene)
        world = show_support_slice(scene, slice_node, pair.volume, pair.segmentation, used, second.stats.slice_axis)
        assert composite.GetBackgroundVolumeID() == pair.volume.GetID()
        assert pair.segmentation.GetDisplayNode().GetVisibility()
        np.testing.assert_allclose(world, lps_to_ras(second.stats.provenance[middle].supports[0].center_lps))
        slice_to_ras = slice_node.GetSliceToRAS()
        np.testing.assert_allclose([slice_to_ras.GetElement(r, 3) for r in range(3)], world, atol=1e-6)
        # the slice shown is a labelled slice of the support: its labels there show the segments listed
        support_labels = labels_of(pair.segmentation, pair.volume)
        support_axis = slice_array_axis(ijk_to_ras(pair.volume), second.stats.slice_axis)
        ijk = np.linalg.solve(ijk_to_ras(pair.volume), [*used.center_ras, 1.0])[:3]
        index = int(round(ijk[2 - support_axis]))  # array axis a is voxel axis 2 - a
        shown = np.take(support_labels, index, axis=support_axis)
        assert sorted({("Ball", "Box")[v - 1] for v in np.unique(shown) if v}) == sorted(used.segments)
    finally:
        session.close()


def labels_of_named(node, target, name: str) -> np.ndarray:
    segment_id = next(info.segment_id for info in segment_infos(node) if info.name == name)
    return segmentation_to_label_array(node, target, {segment_id: 1}).astype(bool)


def slicer_array(volume) -> np.ndarray:
    from vtk.util import numpy_support

    image = volume.GetImageData()
    columns, rows, slices = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(slices, rows, columns)


@pytest.mark.parametrize("angles", [(0, 0, 0), (17, -8, 25), (0, 90, 0), (180, 0, 90)])
def test_a_point_of_the_views_gives_the_engines_slice_number_through_the_transforms(scene, angles):
    volume, _, _ = make_case(scene, "case", geometry=oblique_geometry(angles=angles))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 40.0)
    for row, column, value in ((1, 1, 0.0), (1, 2, -1.0), (2, 1, 1.0), (2, 2, 0.0)):  # a quarter turn about x
        matrix.SetElement(row, column, value)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    for axis in ("axial", "coronal", "sagittal"):
        array_axis = slice_array_axis(ijk_to_ras(volume), axis)
        count = (9, 14, 12)[array_axis]
        # the engine's stack runs superior / posterior / left: the RAS coordinate of slice centres sorts them
        centres = []
        for index in range(count):
            ijk = np.array([6.0, 7.0, 4.5, 1.0])  # the middle of the (i, j, k) grid, then one slice moved
            ijk[2 - array_axis] = index
            centres.append((ijk_to_ras(volume) @ ijk)[:3])
        ras_axis, sign = {"axial": (2, 1), "coronal": (1, -1), "sagittal": (0, -1)}[axis]
        order = np.argsort([sign * centre[ras_axis] for centre in centres])
        for stack, index in enumerate(order):
            world = to_world(volume, centres[index])
            assert stack_index(volume, axis, from_world(volume, world)) == stack
