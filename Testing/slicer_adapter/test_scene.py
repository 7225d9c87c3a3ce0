"""Scene adapter: volumes and segmentations to arrays and files and back, on oblique grids, in a real MRML scene."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from scene_helpers import KIDNEY, LIVER, SPLEEN, blob_labels, make_case, oblique_geometry, slicer, vtk_matrix

from FateSAMLib.errors import InputError
from FateSAMLib.slicer.scene import (
    BINARY_LABELMAP,
    add_to_scene,
    array_to_volume,
    label_array_to_segmentation,
    lps_to_ras,
    read_segmentation,
    read_volume,
    register_segmentation_converters,
    replace_segments,
    save_segmentation,
    save_volume,
    segment_infos,
    segmentation_to_label_array,
    segmentations_with_reference_volume,
    to_world,
    volume_to_array,
)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
LIVER_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^"
)


@pytest.fixture
def scene():
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


def values_by_name(segmentation) -> dict[str, int]:
    values = {LIVER.name: LIVER.value, SPLEEN.name: SPLEEN.value, KIDNEY.name: KIDNEY.value}
    return {info.segment_id: values[info.name] for info in segment_infos(segmentation)}


def test_register_segmentation_converters_is_idempotent():
    register_segmentation_converters()
    register_segmentation_converters()
    names = [rule.GetClassName() for rule in slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()]
    assert "vtkBinaryLabelmapToClosedSurfaceConversionRule" in names
    assert "vtkClosedSurfaceToBinaryLabelmapConversionRule" in names
    assert len(names) == len(set(names))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_volume_round_trip_keeps_voxels_and_oblique_geometry(scene, dtype):
    geometry = oblique_geometry()
    voxels = np.random.default_rng(1).normal(50, 20, (5, 7, 11)).astype(dtype)
    node = add_to_scene(scene, array_to_volume(voxels, geometry, "oblique"))
    array, matrix = volume_to_array(node)
    assert array.dtype == dtype and array.shape == (5, 7, 11)
    np.testing.assert_array_equal(array, voxels)
    np.testing.assert_allclose(matrix, geometry, atol=1e-12)
    array[0, 0, 0] += 1  # a copy: the node's voxels do not change
    np.testing.assert_array_equal(volume_to_array(node)[0], voxels)


def test_volume_file_round_trip_and_geometry_seen_by_simpleitk(scene, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from FateSAMLib.io.geometry import ijk_to_lps

    geometry = oblique_geometry(spacing=(0.5, 0.75, 3.0))
    voxels = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    node = array_to_volume(voxels, geometry, "v")
    path = save_volume(node, tmp_path / "v.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]  # no temporary file left
    array, matrix = volume_to_array(read_volume(path))
    np.testing.assert_array_equal(array, voxels)
    np.testing.assert_allclose(matrix, geometry, atol=1e-9)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    np.testing.assert_allclose(ijk_to_lps(image), RAS_TO_LPS @ geometry, atol=1e-9)  # directions, spacing, origin
    with pytest.raises(InputError, match="exists"):
        save_volume(node, path)
    with pytest.raises(InputError, match=r"\.nrrd"):
        save_volume(node, tmp_path / "v.nii.gz")


def test_lps_to_ras_flips_the_first_two_axes():
    point = (1.5, -2.0, 3.0)
    assert lps_to_ras(point) == (-1.5, 2.0, 3.0)
    np.testing.assert_allclose(RAS_TO_LPS[:3, :3] @ lps_to_ras(point), point)


def test_vector_volume_is_refused_with_a_fix(scene):
    node = array_to_volume(np.zeros((2, 3, 4), np.uint8), np.eye(4), "rgb")
    rgb = vtk.vtkImageData()
    rgb.SetDimensions(4, 3, 2)
    rgb.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(rgb)
    with pytest.raises(InputError, match="Vector to Scalar"):
        volume_to_array(node)


def test_label_round_trip_on_oblique_grid_keeps_values_names_and_colours(scene):
    volume, segmentation, labels = make_case(scene, "case")
    infos = segment_infos(segmentation)
    assert [(info.name, info.color) for info in infos] == [(s.name, s.color) for s in (LIVER, SPLEEN, KIDNEY)]
    array = segmentation_to_label_array(segmentation, volume, values_by_name(segmentation))
    np.testing.assert_array_equal(array, labels)


def test_subset_of_segments_with_new_values(scene):
    volume, segmentation, labels = make_case(scene, "case")
    spleen = next(info.segment_id for info in segment_infos(segmentation) if info.name == "Spleen")
    array = segmentation_to_label_array(segmentation, volume, {spleen: 1})
    np.testing.assert_array_equal(array, (labels == SPLEEN.value).astype(np.uint16))
    with pytest.raises(InputError, match="no segment with ID"):
        segmentation_to_label_array(segmentation, volume, {"nope": 1})


def test_segmentation_on_a_coarser_grid_is_resampled_onto_the_volume(scene):
    fine = oblique_geometry(spacing=(0.8, 1.1, 2.0))
    coarse = fine.copy()
    coarse[:3, :3] *= 2  # twice the spacing, same directions
    coarse[:3, 3] = fine[:3, :3] @ np.array([0.5, 0.5, 0.5]) + fine[:3, 3]  # coarse voxel 0 covers fine voxels 0-1
    coarse_labels = blob_labels((5, 6, 7), seed=3)
    volume = add_to_scene(scene, array_to_volume(np.zeros((10, 12, 14), np.int16), fine, "fine"))
    segmentation = add_to_scene(scene, label_array_to_segmentation(coarse_labels, coarse, [LIVER, SPLEEN, KIDNEY], "s"))
    array = segmentation_to_label_array(segmentation, volume, values_by_name(segmentation))
    expected = coarse_labels.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(array, expected)


def test_segmentation_with_other_axis_order_and_flip_is_resampled(scene):
    geometry = oblique_geometry()
    labels = blob_labels((6, 8, 10), seed=4)
    # The same voxels stored with i reversed and k/j swapped: new[a, b, c] = labels[b, a, 9 - c].
    stored = labels[:, :, ::-1].transpose(1, 0, 2)
    other = np.eye(4)
    other[:3, 0] = -geometry[:3, 0]
    other[:3, 1] = geometry[:3, 2]
    other[:3, 2] = geometry[:3, 1]
    other[:3, 3] = geometry[:3, :3] @ np.array([9, 0, 0]) + geometry[:3, 3]
    volume = add_to_scene(scene, array_to_volume(np.zeros(labels.shape, np.int16), geometry, "v"))
    segmentation = add_to_scene(scene, label_array_to_segmentation(stored, other, [LIVER, SPLEEN, KIDNEY], "s"))
    np.testing.assert_array_equal(
        segmentation_to_label_array(segmentation, volume, values_by_name(segmentation)), labels
    )


def test_closed_surface_segmentation_is_converted_without_touching_the_node(scene):
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(0, 0, 0)
    sphere.SetRadius(10)
    sphere.SetThetaResolution(48)
    sphere.SetPhiResolution(48)
    sphere.Update()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surface")
    segmentation.GetSegmentation().SetSourceRepresentationName("Closed surface")
    segment_id = segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "Ball", (1, 0, 0))
    geometry = np.diag([1.0, 1.0, 1.0, 1.0])
    geometry[:3, 3] = (-15, -15, -15)
    volume = add_to_scene(scene, array_to_volume(np.zeros((31, 31, 31), np.int16), geometry, "grid"))
    array = segmentation_to_label_array(segmentation, volume, {segment_id: 5})
    volume_mm3 = (array == 5).sum()
    assert abs(volume_mm3 - 4 / 3 * np.pi * 10**3) < 0.05 * 4 / 3 * np.pi * 10**3
    assert array[15, 15, 15] == 5 and array[0, 0, 0] == 0
    assert not segmentation.GetSegmentation().ContainsRepresentation(BINARY_LABELMAP)


def test_seg_nrrd_reads_back_with_slicerio_and_with_the_adapter(scene, tmp_path):
    slicerio = pytest.importorskip("slicerio")
    volume, segmentation, labels = make_case(scene, "case")
    terminology = LIVER_TERMINOLOGY
    first = segmentation.GetSegmentation().GetNthSegment(0)
    first.SetTerminology(terminology)
    path = save_segmentation(segmentation, tmp_path / "case.seg.nrrd")
    read = slicerio.read_segmentation(str(path))
    segments = {segment["name"]: segment for segment in read["segments"]}
    assert set(segments) == {"Liver", "Spleen", "Left kidney"}
    for described in (LIVER, SPLEEN, KIDNEY):
        assert segments[described.name]["labelValue"] == described.value
        np.testing.assert_allclose(segments[described.name]["color"], described.color, atol=1e-5)
    assert segments["Liver"]["terminology"]["type"][1] == "10200004"
    np.testing.assert_array_equal(read["voxels"], labels.transpose(2, 1, 0))  # slicerio indexes [i, j, k]
    np.testing.assert_allclose(read["ijkToLPS"], RAS_TO_LPS @ oblique_geometry(), atol=1e-6)

    again = add_to_scene(scene, read_segmentation(path))
    assert [(i.name, i.terminology) for i in segment_infos(again)][0] == ("Liver", terminology)
    np.testing.assert_array_equal(segmentation_to_label_array(again, volume, values_by_name(again)), labels)
    with pytest.raises(InputError, match="exists"):
        save_segmentation(segmentation, path)


def test_unreadable_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_text("not a segmentation")
    with pytest.raises(InputError, match="Slicer .seg.nrrd"):
        read_segmentation(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.nrrd")


def test_replace_segments_changes_only_the_target(scene):
    _, first, _ = make_case(scene, "a", segments=(LIVER,))
    _, second, _ = make_case(scene, "b", segments=(SPLEEN, KIDNEY))
    replace_segments(first, second)
    assert [info.name for info in segment_infos(first)] == ["Spleen", "Left kidney"]
    assert [info.name for info in segment_infos(second)] == ["Spleen", "Left kidney"]


def test_pairs_of_segmentations_and_reference_volumes(scene):
    volume_a, segmentation_a, _ = make_case(scene, "a")
    volume_b, segmentation_b, _ = make_case(scene, "b")
    add_to_scene(scene, label_array_to_segmentation(np.ones((2, 2, 2), np.uint8), np.eye(4), [LIVER], "loose"))
    pairs = segmentations_with_reference_volume(scene)
    assert [(v.GetID(), s.GetID()) for v, s in pairs] == [
        (volume_a.GetID(), segmentation_a.GetID()),
        (volume_b.GetID(), segmentation_b.GetID()),
    ]


def test_segmentation_and_volume_under_different_transforms_are_refused(scene):
    volume, segmentation, _ = make_case(scene, "case")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="Harden transform"):
        segmentation_to_label_array(segmentation, volume, values_by_name(segmentation))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    assert segmentation_to_label_array(segmentation, volume, values_by_name(segmentation)).any()


def test_to_world_goes_through_every_parent_transform(scene):
    volume, _, _ = make_case(scene, "A")
    point = (1.5, -2.0, 30.0)
    assert to_world(volume, point) == point
    inner_matrix = oblique_geometry((1, 1, 1), (10, -5, 2))
    outer_matrix = oblique_geometry((1, 1, 1), (0, 3, -7), (0, 0, 90))
    inner = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "inner")
    inner.SetMatrixTransformToParent(vtk_matrix(inner_matrix))
    outer = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "outer")
    outer.SetMatrixTransformToParent(vtk_matrix(outer_matrix))
    inner.SetAndObserveTransformNodeID(outer.GetID())
    volume.SetAndObserveTransformNodeID(inner.GetID())
    expected = outer_matrix @ inner_matrix @ np.array([*point, 1.0])
    np.testing.assert_allclose(to_world(volume, point), expected[:3], atol=1e-9)
