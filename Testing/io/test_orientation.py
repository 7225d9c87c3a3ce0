"""One anatomical frame for every volume: real cases re-stored in other voxel orders must give the same stacks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, HIPPOCAMPUS, case_paths

from FateSAMLib.errors import InputError
from FateSAMLib.io.geometry import SLICE_AXES, SliceFrame, choose_slice_axis, from_slices, slice_centers, to_slices
from FateSAMLib.io.images import read_image
from FateSAMLib.io.labels import labels_on_grid


def restored(image: sitk.Image, order: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> sitk.Image:
    """The same anatomy stored with voxel axes permuted and flipped, direction and origin updated to match."""
    result = sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))
    # Check that the re-stored image really is the same anatomy: every voxel keeps its physical position.
    index = [n // 3 for n in result.GetSize()]
    point = result.TransformIndexToPhysicalPoint(index)
    original_index = image.TransformPhysicalPointToIndex(point)
    assert result[index] == image[original_index]
    return result


def variants(image: sitk.Image) -> list[sitk.Image]:
    orders = list(itertools.permutations(range(3)))
    flips = [(False, False, False), (True, False, True), (False, True, False), (True, True, True)]
    return [restored(image, order, flip) for order, flip in zip(orders, itertools.cycle(flips))]


@pytest.mark.parametrize("dataset,case", [(HIPPOCAMPUS, "hippocampus_001"), (ABDOMEN, "chaos_t2_19")])
def test_reoriented_copies_of_a_real_case_give_identical_stacks(dataset, case) -> None:
    image = read_image(case_paths(dataset, case)[0])
    for axis in SLICE_AXES:
        expected = to_slices(sitk.GetArrayFromImage(image), image, axis)
        centers = slice_centers(image, axis)
        for other in variants(image):
            array = sitk.GetArrayFromImage(other)
            stack = to_slices(array, other, axis)
            np.testing.assert_array_equal(stack, expected)
            np.testing.assert_allclose(slice_centers(other, axis), centers, atol=1e-3)
            np.testing.assert_array_equal(from_slices(stack, other, axis), array)


def test_stack_layout_follows_the_radiological_convention() -> None:
    """A volume stored in LPS order: check slice, row and column directions of each axis by marking voxels."""
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)  # identity direction: x -> left, y -> posterior, z -> superior
    array = np.zeros((6, 5, 4), np.uint8)
    array[5, 0, 0] = 1  # most superior, most anterior, most right
    stacks = {axis: to_slices(array, image, axis) for axis in SLICE_AXES}
    assert stacks["axial"].shape == (6, 5, 4) and stacks["axial"][5, 0, 0] == 1  # last slice = superior
    assert stacks["coronal"].shape == (5, 6, 4) and stacks["coronal"][0, 0, 0] == 1  # top row = superior
    assert stacks["sagittal"].shape == (4, 6, 5) and stacks["sagittal"][0, 0, 0] == 1  # first slice = right


def test_auto_axis_is_the_coarsest_anatomical_axis() -> None:
    chaos = read_image(case_paths(ABDOMEN, "chaos_t2_19")[0])
    assert choose_slice_axis(chaos) == "axial"
    assert all(choose_slice_axis(v) == "axial" for v in variants(chaos))
    image = sitk.Image(8, 8, 8, sitk.sitkUInt8)
    image.SetSpacing((1.0, 3.0, 1.0))
    assert choose_slice_axis(image) == "coronal"
    image.SetSpacing((3.0, 1.0, 1.0))
    assert choose_slice_axis(image) == "sagittal"
    image.SetSpacing((2.0, 2.0, 2.0))
    assert choose_slice_axis(image) == "axial"
    assert choose_slice_axis(image, "sagittal") == "sagittal"
    with pytest.raises(InputError, match="Unknown slice axis 'oblique'"):
        choose_slice_axis(image, "oblique")


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_oblique_volume_is_sliced_along_its_closest_axis() -> None:
    array = np.arange(5 * 6 * 7, dtype=np.int32).reshape(5, 6, 7)
    straight = sitk.GetImageFromArray(array)
    tilted = sitk.GetImageFromArray(array)
    tilted.SetDirection(rotation_z(10).flatten().tolist())
    for axis in SLICE_AXES:
        stack = to_slices(array, tilted, axis)
        np.testing.assert_array_equal(stack, to_slices(array, straight, axis))
        np.testing.assert_array_equal(from_slices(stack, tilted, axis), array)
    # Rotated by 80 degrees the x voxel axis is closer to posterior than to left: rows and columns swap.
    turned = sitk.GetImageFromArray(array)
    turned.SetDirection(rotation_z(80).flatten().tolist())
    assert to_slices(array, turned, "axial").shape == (5, 7, 6)
    centers = slice_centers(turned, "axial")
    assert np.all(np.diff(centers[:, 2]) > 0)


def test_labels_on_grid_has_the_reference_geometry_exactly() -> None:
    image = read_image(case_paths(HIPPOCAMPUS, "hippocampus_001")[0])
    other = variants(image)[3]
    array = (sitk.GetArrayFromImage(other) > 60).astype(np.int64) * 300
    for axis in SLICE_AXES:
        labels = labels_on_grid(to_slices(array, other, axis), other, SliceFrame.of(other, axis))
        assert labels.GetSize() == other.GetSize() and labels.GetSpacing() == other.GetSpacing()
        assert labels.GetOrigin() == other.GetOrigin() and labels.GetDirection() == other.GetDirection()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), array)


def test_slice_centers_lie_on_the_slices() -> None:
    image = read_image(case_paths(ABDOMEN, "chaos_t2_19")[0])
    centers = slice_centers(image, "axial")
    assert centers.shape == (image.GetDepth(), 3)
    np.testing.assert_allclose(np.diff(centers[:, 2]), image.GetSpacing()[2], rtol=1e-6)
    middle = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    np.testing.assert_allclose(centers.mean(axis=0), middle, atol=1e-6)


def test_wrong_shapes_are_programming_errors() -> None:
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    with pytest.raises(ValueError, match="not the image's"):
        to_slices(np.zeros((4, 5, 6)), image, "axial")
    with pytest.raises(ValueError, match="coronal stack"):
        from_slices(np.zeros((6, 5, 4)), image, "coronal")
