"""Reader errors are one message each (a .seg.nrrd segment on a missing layer, NIfTI-2, an allocation failure), and
plausible mistakes get a warning (an image passed as labels, a segment of label value 0); good inputs still read."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, SEGMENT, case_paths, write_seg_nrrd

from FateSAMLib.errors import InputError
from FateSAMLib.io.images import read_image
from FateSAMLib.io.labels import MANY_LABEL_VALUES, read_label_map, read_labels
from FateSAMLib.memory import is_allocation_failure


def small_image() -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    image.SetSpacing((0.5, 0.7, 2.0))
    return image


def segment_voxels(image: sitk.Image) -> np.ndarray:
    voxels = np.zeros(image.GetSize(), np.uint8)  # (i, j, k), as slicerio indexes them
    voxels[1:3, 1:3, 1] = 2
    return voxels


def test_a_seg_nrrd_segment_on_a_layer_the_file_lacks_is_one_message(tmp_path: Path) -> None:
    image = small_image()
    path = tmp_path / "labels.seg.nrrd"
    write_seg_nrrd(path, image, segment_voxels(image), [SEGMENT, {**SEGMENT, "id": "b", "name": "gone", "layer": 3}])
    with pytest.raises(
        InputError, match=r"labels.seg.nrrd: its segment 'gone' is on layer 3, but the file holds 1 lay"
    ):
        read_labels(path)


def test_a_seg_nrrd_segment_of_label_value_0_is_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    image = small_image()
    path = tmp_path / "labels.seg.nrrd"
    background = {**SEGMENT, "id": "b", "name": "outside", "labelValue": 0}
    write_seg_nrrd(path, image, segment_voxels(image), [SEGMENT, background])
    labels, segments = read_labels(path)
    assert [(s.value, s.name) for s in segments] == [(2, "liver")]
    assert set(np.unique(sitk.GetArrayFromImage(labels))) == {0, 2}
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("FateSAMLib")]
    assert "the segment 'outside' has the label value 0, the background's" in warning.getMessage()


def test_an_image_passed_as_labels_gets_a_warning_and_a_label_map_none(caplog) -> None:
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    read_label_map(labels, read_image(image))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    _, segments = read_label_map(image, read_image(labels))  # --support LABELS IMAGE
    assert len(segments) == 124 > MANY_LABEL_VALUES
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "holds 124 different label values" in warning.getMessage()
    assert "Were the image and its labels swapped? --support takes IMAGE LABELS" in warning.getMessage()


def test_an_image_with_fractional_values_passed_as_labels_is_refused_with_the_same_hint(tmp_path: Path) -> None:
    image = small_image()
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * 0.5, str(tmp_path / "image.nrrd"))
    with pytest.raises(InputError, match="holds non-integer values, so it is not a label map. Were the image and its"):
        read_label_map(tmp_path / "image.nrrd", image)


def nifti2(array_zyx: np.ndarray, spacing: tuple[float, float, float]) -> bytes:
    """A NIfTI-2 single file (magic n+2) of an int16 (z, y, x) array, its grid in the sform (scaled identity)."""
    nz, ny, nx = array_zyx.shape
    header = bytearray(540)
    struct.pack_into("<i8s", header, 0, 540, b"n+2\0\r\n\x1a\n")
    struct.pack_into("<hh8q", header, 12, 4, 16, 3, nx, ny, nz, 1, 1, 1, 1)  # datatype int16, bitpix, dim
    struct.pack_into("<8d", header, 104, 1.0, *spacing, 1.0, 1.0, 1.0, 1.0)  # pixdim
    struct.pack_into("<qdd", header, 168, 544, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<ii", header, 344, 0, 1)  # qform_code, sform_code
    for row in range(3):
        struct.pack_into("<4d", header, 400 + 32 * row, *(spacing[row] if c == row else 0.0 for c in range(4)))
    struct.pack_into("<i", header, 500, 2)  # xyzt_units: mm
    return bytes(header) + bytes(4) + array_zyx.astype("<i2").tobytes()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_valid_nifti2_file_is_read_or_refused_as_nifti2(tmp_path: Path, suffix: str) -> None:
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    data = nifti2(array, (0.5, 0.7, 2.0))
    path = tmp_path / f"volume{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" else data)
    if sitk.ImageFileReader().GetImageIOFromFileName(str(path)):  # a SimpleITK that reads NIfTI-2
        read = read_image(path)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read), array)
        np.testing.assert_allclose(read.GetSpacing(), (0.5, 0.7, 2.0))
        return
    with pytest.raises(InputError, match=f"{path.name} is a NIfTI-2 file, which this SimpleITK") as refused:
        read_image(path)
    assert "complete" not in str(refused.value)  # not called damaged or truncated


def test_simpleitk_allocation_failures_are_known_as_such() -> None:
    with pytest.raises(RuntimeError) as failed:
        sitk.Image([2**20, 2**20, 2**10], sitk.sitkUInt8)  # a petabyte
    assert is_allocation_failure(failed.value)
    assert is_allocation_failure(MemoryError()) and not is_allocation_failure(RuntimeError("file is damaged"))


def test_a_4d_nifti_with_one_time_point_is_read_as_a_volume(tmp_path: Path) -> None:
    array = np.arange(60, dtype=np.int16).reshape(1, 3, 4, 5) + 1  # (t, z, y, x)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(tmp_path / "one-time-point.nii.gz"))
    read = read_image(tmp_path / "one-time-point.nii.gz")
    assert read.GetSize() == (5, 4, 3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), array[0])
