"""Reading volumes and label maps from real files, and every bad input the readers must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, SEGMENT, assert_same_image, case_paths, cut_short, write_dicom_series, write_seg_nrrd

from FateSAMLib.errors import InputError
from FateSAMLib.io.geometry import check_same_geometry
from FateSAMLib.io.images import read_image
from FateSAMLib.io.labels import read_label_map, read_labels
from FateSAMLib.segments import default_segment

DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def labels_like(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return labels


def make_image(size=(6, 5, 4), spacing=(0.8, 1.0, 2.5), pixel=np.int16, seed=0) -> sitk.Image:
    array = np.random.default_rng(seed).integers(0, 1000, size[::-1]).astype(pixel)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.5))
    image.SetDirection(DIRECTION)
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_reads_each_file_format_with_its_geometry(tmp_path: Path, suffix: str) -> None:
    image = make_image()
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(image, str(path))
    assert_same_image(read_image(path), image)


TRUNCATED = r"is incomplete \(truncated\).*copy it again from its source \(or export it again\)"
FORMATS = [(".nrrd", False), (".nrrd", True), (".nhdr", False), (".nhdr", True), (".nii", False)]
FORMATS += [(".mha", False), (".mha", True), (".mhd", False), (".mhd", True)]


@pytest.mark.parametrize("missing", [1, 0.5, 0.99])  # the last byte, half the file, all but the header's start
def test_a_truncated_real_nifti_gz_is_refused_as_image_and_as_labels(tmp_path: Path, missing: int | float) -> None:
    for source in case_paths(HIPPOCAMPUS, "hippocampus_001"):
        path = tmp_path / source.parent.name / source.name
        path.parent.mkdir()
        path.write_bytes(source.read_bytes())
        cut_short(path, missing)
        with pytest.raises(InputError, match=f"{path.name} {TRUNCATED}"):
            (read_image if source.parent.name == "images" else read_labels)(path)


@pytest.mark.parametrize("suffix, compressed", FORMATS)
@pytest.mark.parametrize("missing", [1, 0.5, 0.99])  # the last byte, half the file, all but the header's start
def test_a_truncated_file_is_refused_in_every_format(
    tmp_path: Path, suffix: str, compressed: bool, missing: int | float
) -> None:
    image_path, labels_path = case_paths(HIPPOCAMPUS, "hippocampus_001")
    for source, reader in ((image_path, read_image), (labels_path, read_labels)):
        folder = tmp_path / reader.__name__
        folder.mkdir()
        path = folder / f"volume{suffix}"
        sitk.WriteImage(sitk.ReadImage(str(source)), str(path), useCompression=compressed)
        reader(path)  # complete: accepted
        (data_file,) = [p for p in folder.iterdir() if p != path] or [path]  # .nhdr, .mhd: a detached data file
        cut_short(data_file, missing)
        with pytest.raises(InputError, match=f"volume{suffix} {TRUNCATED}"):
            reader(path)


def test_a_truncated_seg_nrrd_is_refused(tmp_path: Path) -> None:
    image = make_image(size=(30, 20, 10))
    voxels = np.zeros(image.GetSize(), np.uint8)
    voxels[3:20, 4:15, 2:8] = 2
    write_seg_nrrd(tmp_path / "s.seg.nrrd", image, voxels, [SEGMENT])
    cut_short(tmp_path / "s.seg.nrrd", 0.3)
    with pytest.raises(InputError, match=f"s.seg.nrrd {TRUNCATED}"):
        read_label_map(tmp_path / "s.seg.nrrd", image)


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_missing_detached_data_file_is_named(tmp_path: Path, suffix: str) -> None:
    sitk.WriteImage(make_image(), str(tmp_path / f"volume{suffix}"))
    (data_file,) = [p for p in tmp_path.iterdir() if p.suffix != suffix]
    data_file.unlink()
    with pytest.raises(InputError, match=f"keeps its voxels in .*{data_file.name}, which does not exist. Copy"):
        read_image(tmp_path / f"volume{suffix}")


def test_a_damaged_gzip_stream_is_refused(tmp_path: Path) -> None:
    source = case_paths(HIPPOCAMPUS, "hippocampus_001")[0]
    data = bytearray(source.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    (tmp_path / "damaged.nii.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"damaged.nii.gz is damaged: its compressed data cannot be decompressed"):
        read_image(tmp_path / "damaged.nii.gz")


def test_reads_a_dicom_series_folder(tmp_path: Path) -> None:
    image = make_image(size=(8, 7, 5), spacing=(0.7, 0.7, 3.0))
    write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.7")
    read = read_image(tmp_path / "series")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-4)


def test_folder_with_two_series_reads_the_largest_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dicom_series(make_image(size=(8, 7, 3)), tmp_path, "1.2.826.0.1.3680043.2.1125.8")
    large = make_image(size=(8, 7, 6), seed=1)
    write_dicom_series(large, tmp_path, "1.2.826.0.1.3680043.2.1125.9")
    read = read_image(tmp_path)
    (warning,) = [record for record in caplog.records if record.levelname == "WARNING"]
    assert "holds 2 DICOM series; reading the largest (1.2.826.0.1.3680043.2.1125.9" in warning.getMessage()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(large))


def test_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="without a DICOM series"):
        read_image(tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.nii\.gz does not exist"):
        read_image(tmp_path / "missing.nii.gz")


def test_unsupported_and_unreadable_files(tmp_path: Path) -> None:
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), str(png))
    with pytest.raises(InputError, match=r"unsupported file type.*\.nii\.gz"):
        read_image(png)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(InputError, match="could not be read"):
        read_image(broken)


def test_2d_and_single_slice_images_are_refused(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="FateSAM segments 3D volumes"):
        read_image(tmp_path / "flat.nrrd")
    sitk.WriteImage(sitk.Image(8, 8, 1, sitk.sitkInt16), str(tmp_path / "one.nrrd"))
    with pytest.raises(InputError, match="FateSAM segments 3D volumes"):
        read_image(tmp_path / "one.nrrd")


def test_colour_image_is_refused(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([6, 6, 6], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="3 components per voxel"):
        read_image(tmp_path / "rgb.nrrd")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("pixel", [np.float32, np.float64])
def test_nan_or_inf_intensities_are_refused_in_every_format(tmp_path: Path, suffix: str, pixel: type) -> None:
    # ITK's NIfTI reader turns NaN and inf into 0: the check must read the file's own voxels
    for bad in (np.nan, np.inf, -np.inf):
        array = np.arange(4 * 5 * 6, dtype=pixel).reshape(4, 5, 6)
        array[1, 2, 3] = bad
        path = tmp_path / f"bad{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
        with pytest.raises(InputError, match=f"{path.name} contains NaN or infinite values"):
            read_image(path)


def test_nan_in_a_float_nifti_label_map_is_refused(tmp_path: Path) -> None:
    image = make_image()
    array = np.zeros(image.GetSize()[::-1], np.float32)
    array[1, 1, 1], array[2, 2, 2] = 1.0, np.nan
    sitk.WriteImage(labels_like(image, array), str(tmp_path / "labels.nii.gz"))
    with pytest.raises(InputError, match="NaN or infinite"):
        read_label_map(tmp_path / "labels.nii.gz", image)


@pytest.mark.parametrize("value", [0, 7])
def test_a_blank_volume_is_refused(tmp_path: Path, value: int) -> None:
    image = make_image()
    blank = labels_like(image, np.full(image.GetSize()[::-1], value, np.int16))
    sitk.WriteImage(blank, str(tmp_path / "blank.nrrd"))
    with pytest.raises(InputError, match=f"blank.nrrd has a single intensity value, {value}, everywhere"):
        read_image(tmp_path / "blank.nrrd")


def test_plain_label_map_gives_default_segments_sorted(tmp_path: Path) -> None:
    image = make_image()
    array = np.zeros(image.GetSize()[::-1], np.uint8)
    array[0, 0, :3], array[2, 1, 1] = 7, 3
    sitk.WriteImage(labels_like(image, array), str(tmp_path / "labels.nii.gz"))
    labels, segments = read_label_map(tmp_path / "labels.nii.gz", image)
    assert segments == [default_segment(3), default_segment(7)]
    assert labels.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), array)
    assert labels.GetOrigin() == image.GetOrigin() and labels.GetDirection() == image.GetDirection()


def test_integral_float_labels_are_accepted_and_fractional_refused(tmp_path: Path) -> None:
    image = make_image()
    array = np.zeros(image.GetSize()[::-1], np.float32)
    array[1, 1, 1] = 2.0
    sitk.WriteImage(labels_like(image, array), str(tmp_path / "ok.nrrd"))
    assert [s.value for s in read_label_map(tmp_path / "ok.nrrd", image)[1]] == [2]
    array[1, 1, 2] = 0.5
    sitk.WriteImage(labels_like(image, array), str(tmp_path / "bad.nrrd"))
    with pytest.raises(InputError, match="non-integer values"):
        read_label_map(tmp_path / "bad.nrrd", image)


def test_empty_labels_are_refused(tmp_path: Path) -> None:
    image = make_image()
    sitk.WriteImage(labels_like(image, np.zeros(image.GetSize()[::-1], np.uint8)), str(tmp_path / "empty.nii.gz"))
    with pytest.raises(InputError, match="support labels are empty"):
        read_label_map(tmp_path / "empty.nii.gz", image)


def test_labels_on_another_grid_list_both_geometries_and_the_fix(tmp_path: Path) -> None:
    image = make_image()
    array = np.ones(image.GetSize()[::-1], np.uint8)
    moved = labels_like(image, array)
    moved.SetSpacing((0.8, 1.0, 2.0))
    sitk.WriteImage(moved, str(tmp_path / "labels.nrrd"))
    with pytest.raises(InputError, match=r"(?s)spacing \(0.8, 1, 2\).*spacing \(0.8, 1, 2.5\).*Resample"):
        read_label_map(tmp_path / "labels.nrrd", image)


def test_geometry_tolerance() -> None:
    image = make_image()
    close = make_image()
    close.SetOrigin(tuple(v + 1e-6 for v in image.GetOrigin()))
    close.SetSpacing(tuple(v * (1 + 1e-6) for v in image.GetSpacing()))
    check_same_geometry(image, close, "nearly equal grids")
    far = make_image()
    far.SetOrigin(tuple(v + 0.01 for v in image.GetOrigin()))
    with pytest.raises(InputError, match="origin"):
        check_same_geometry(image, far, "shifted grids")


def test_a_cropped_seg_nrrd_is_padded_onto_the_image(tmp_path: Path) -> None:
    image = make_image(size=(10, 9, 8))
    full = np.zeros(image.GetSize()[::-1], np.uint8)
    full[2:5, 3:6, 4:9] = 2
    cropped = labels_like(image, full)[4:9, 3:6, 2:5]  # SimpleITK slices x, y, z and keeps the physical position
    write_seg_nrrd(
        tmp_path / "cropped.seg.nrrd", cropped, sitk.GetArrayFromImage(cropped).transpose(2, 1, 0), [SEGMENT]
    )
    labels, _ = read_label_map(tmp_path / "cropped.seg.nrrd", image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), full)


def test_a_plain_label_map_cropped_by_one_slice_is_refused(tmp_path: Path) -> None:
    image_path, labels_path = case_paths(HIPPOCAMPUS, "hippocampus_001")
    image = read_image(image_path)
    cropped = sitk.ReadImage(str(labels_path))[:, :, 1:]
    sitk.WriteImage(cropped, str(tmp_path / "cropped.nii.gz"))
    size, cropped_size = image.GetSize(), cropped.GetSize()
    with pytest.raises(InputError) as error:
        read_label_map(tmp_path / "cropped.nii.gz", image)
    message = str(error.value)
    assert f"size {cropped_size}" in message and f"size {size}" in message
    assert "must be on exactly its image's grid" in message and "Resample the labels onto the image grid" in message
    # the same crop saved as a Slicer segmentation, which carries its own extent, is padded back
    segments = [{**SEGMENT, "id": name, "name": name, "labelValue": value} for value, name in ((1, "a"), (2, "p"))]
    write_seg_nrrd(tmp_path / "cropped.seg.nrrd", cropped, sitk.GetArrayFromImage(cropped).transpose(2, 1, 0), segments)
    labels, _ = read_label_map(tmp_path / "cropped.seg.nrrd", image)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    expected[0] = 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected)


def test_a_label_map_from_another_case_is_refused(tmp_path: Path) -> None:
    image = read_image(case_paths(HIPPOCAMPUS, "hippocampus_001")[0])
    other_labels = case_paths(HIPPOCAMPUS, "hippocampus_003")[1]
    with pytest.raises(InputError, match=r"(?s)hippocampus_003.nii.gz does not match its image.*size.*size.*Resample"):
        read_label_map(other_labels, image)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_label_values_above_65535_are_refused_when_read(tmp_path: Path, suffix: str) -> None:
    image = make_image()
    array = np.zeros(image.GetSize()[::-1], np.uint32)
    array[1, 1, 1], array[2, 2, 2] = 3, 70000
    path = tmp_path / f"labels{suffix}"
    sitk.WriteImage(labels_like(image, array), str(path))
    with pytest.raises(
        InputError, match=r"label value 70000, above 65535.*Relabel its structures with values 1..65535"
    ):
        read_labels(path)


def test_seg_nrrd_label_values_above_65535_are_refused(tmp_path: Path) -> None:
    image = make_image()
    voxels = np.zeros(image.GetSize(), np.int32)
    voxels[1, 2, 3] = 70000
    write_seg_nrrd(tmp_path / "big.seg.nrrd", image, voxels, [{**SEGMENT, "labelValue": 70000}])
    with pytest.raises(InputError, match="label value 70000, above 65535"):
        read_label_map(tmp_path / "big.seg.nrrd", image)


def test_seg_nrrd_keeps_names_colours_and_values(tmp_path: Path) -> None:
    image = make_image()
    voxels = np.zeros(image.GetSize(), np.uint8)  # (i, j, k)
    voxels[1, 2, 3], voxels[4, 0, 0] = 5, 2
    segments = [
        {"id": "a", "name": "liver", "color": [0.1, 0.2, 0.3], "labelValue": 5, "layer": 0},
        {"id": "b", "name": "spleen", "color": [0.9, 0.8, 0.7], "labelValue": 2, "layer": 0},
        {"id": "c", "name": "never drawn", "color": [1.0, 1.0, 1.0], "labelValue": 9, "layer": 0},
    ]
    write_seg_nrrd(tmp_path / "s.seg.nrrd", image, voxels, segments)
    labels, found = read_label_map(tmp_path / "s.seg.nrrd", image)
    assert [(s.value, s.name, s.color) for s in found] == [
        (2, "spleen", (0.9, 0.8, 0.7)),
        (5, "liver", (0.1, 0.2, 0.3)),
    ]
    array = sitk.GetArrayFromImage(labels)
    assert array[3, 2, 1] == 5 and array[0, 0, 4] == 2 and (array > 0).sum() == 2


def test_seg_nrrd_layers_get_distinct_values_and_overlaps_are_refused(tmp_path: Path) -> None:
    image = make_image()
    layers = np.zeros((2, *image.GetSize()), np.uint8)
    layers[0, 0, 0, 0], layers[1, 1, 1, 1] = 1, 1
    segments = [
        {"id": "a", "name": "first", "color": [1.0, 0.0, 0.0], "labelValue": 1, "layer": 0},
        {"id": "b", "name": "second", "color": [0.0, 1.0, 0.0], "labelValue": 1, "layer": 1},
    ]
    write_seg_nrrd(tmp_path / "layers.seg.nrrd", image, layers, segments)
    labels, found = read_labels(tmp_path / "layers.seg.nrrd")
    assert [(s.value, s.name) for s in found] == [(1, "first"), (2, "second")]
    array = sitk.GetArrayFromImage(labels)
    assert array[0, 0, 0] == 1 and array[1, 1, 1] == 2

    layers[1, 0, 0, 0] = 1
    write_seg_nrrd(tmp_path / "overlap.seg.nrrd", image, layers, segments)
    with pytest.raises(InputError, match="overlapping segments.*Overwrite all"):
        read_label_map(tmp_path / "overlap.seg.nrrd", image)


def test_real_hippocampus_labels_match_their_image() -> None:
    image_path, labels_path = case_paths(HIPPOCAMPUS, "hippocampus_001")
    image = read_image(image_path)
    labels, segments = read_label_map(labels_path, image)
    assert [s.value for s in segments] == [1, 2]
    assert labels.GetSize() == image.GetSize() and labels.GetOrigin() == image.GetOrigin()
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    )
