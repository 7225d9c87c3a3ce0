"""Showing a result in Slicer's views: jumping to a doubtful slice, displaying the result without ever raising."""

from __future__ import annotations

import numpy as np
from scene_helpers import (
    oblique_geometry,
    result_file,
    scene_fixture,  # noqa: F401 (a fixture)
    slicer,
    vtk_matrix,
)

from FateSAMLib.slicer.exchange import import_result
from FateSAMLib.slicer.scene import add_to_scene, array_to_volume, register_segmentation_converters, segment_infos
from FateSAMLib.slicer.stats import DoubtfulSlice
from FateSAMLib.slicer.views import display_result, jump_to


def test_jump_to_a_doubtful_slice_goes_through_the_targets_transform(scene):
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), oblique_geometry(), "target"))
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetLayoutName("Red")
    matrix = oblique_geometry((1, 1, 1), (25.0, -40.0, 12.5), (0, 30, 90))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    transform.SetMatrixTransformToParent(vtk_matrix(matrix))
    target.SetAndObserveTransformNodeID(transform.GetID())
    doubtful = DoubtfulSlice(2, "axial", (3.0, -4.0, 5.0), 0.1, ("Liver",))
    expected = (matrix @ np.array([*doubtful.center_ras, 1.0]))[:3]
    np.testing.assert_allclose(jump_to(scene, target, doubtful.center_ras), expected, atol=1e-9)
    slice_to_ras = slice_node.GetSliceToRAS()
    np.testing.assert_allclose([slice_to_ras.GetElement(row, 3) for row in range(3)], expected, atol=1e-6)


def test_showing_the_result_never_raises_and_keeps_it(scene, tmp_path):
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), np.eye(4), "target"))
    path, _ = result_file(tmp_path, (6, 9, 8), np.eye(4))
    shown = import_result(scene, path, target)
    assert display_result(shown) == []
    assert shown.GetDisplayNode().GetVisibility() and shown.GetSegmentation().ContainsRepresentation("Closed surface")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    surface_rule = next(
        rule
        for rule in factory.GetConverterRules()
        if rule.GetClassName() == "vtkBinaryLabelmapToClosedSurfaceConversionRule"
    )
    factory.UnregisterConverterRule(surface_rule)  # a 3D surface that cannot be built
    try:
        unshown = import_result(scene, path, target)
        warnings = display_result(unshown)
    finally:
        register_segmentation_converters()
    assert len(warnings) == 1 and "its 3D surface could not be built" in warnings[0]
    assert f"'{unshown.GetName()}' was imported" in warnings[0] and scene.IsNodePresent(unshown)
    assert [info.name for info in segment_infos(unshown)] == ["Liver", "Spleen"]
    orphan = slicer.vtkMRMLSegmentationNode()  # e.g. the scene was closed meanwhile
    assert "no display node" in display_result(orphan)[0]
