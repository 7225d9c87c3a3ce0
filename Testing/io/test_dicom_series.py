"""DICOM series folders: one regular grid of slices or a refusal that names the slice files (real DICOM files)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_dicom_series

from FateSAMLib.errors import InputError
from FateSAMLib.io.images import read_image

UID = "1.2.826.0.1.3680043.2.1125.41"
DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # slices along x: the normal is not an image axis of z


def volume(size=(8, 7, 6), spacing=(0.7, 0.8, 3.0), direction=DIRECTION, seed=0) -> sitk.Image:
    array = np.random.default_rng(seed).integers(0, 1000, size[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.5))
    image.SetDirection(direction)
    return image


def set_tag(tag: str, value: str, only: int = 2):
    def change(k: int, tags: dict[str, str]) -> None:
        if k == only:
            tags[tag] = value

    return change


def moved(offset: tuple[float, float, float], start: int):
    """Slices from ``start`` on moved by ``offset`` mm (LPS)."""

    def change(k: int, tags: dict[str, str]) -> None:
        if k >= start:
            position = [float(v) for v in tags["0020|0032"].split("\\")]
            tags["0020|0032"] = "\\".join(str(p + o) for p, o in zip(position, offset, strict=True))

    return change


def missing_slice(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID, slices=[0, 1, 3, 4, 5])


def duplicated_slice(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID)
    write_dicom_series(volume(), folder, UID, slices=[2], copy=1)


def uneven_spacing(folder: Path) -> None:
    normal = np.array(DIRECTION).reshape(3, 3)[:, 2]
    write_dicom_series(volume(), folder, UID, change=moved(tuple(1.5 * normal), 3))


def other_orientation(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID, change=set_tag("0020|0037", "0\\0.0998\\0.995\\-1\\0\\0"))


def other_pixel_spacing(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID, slices=[0, 1, 3, 4, 5])
    write_dicom_series(volume(spacing=(0.9, 0.8, 3.0)), folder, UID, slices=[2])


def other_size(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID, slices=[0, 1, 3, 4, 5])
    write_dicom_series(volume(size=(8, 6, 6)), folder, UID, slices=[2])


def shifted_in_plane(folder: Path) -> None:
    write_dicom_series(volume(), folder, UID, change=moved((0.0, 0.0, 2.0), 3))


def slice_without_a_position(folder: Path) -> None:
    pydicom = pytest.importorskip("pydicom")  # SimpleITK always writes a position: remove it with pydicom
    write_dicom_series(volume(), folder, UID)
    header = pydicom.dcmread(folder / f"{UID}_002.dcm")
    del header.ImagePositionPatient
    header.save_as(folder / f"{UID}_002.dcm")


BROKEN = {
    "missing slice": (missing_slice, r"the slices are 3 mm apart, but 6 mm between \S+_001.dcm and \S+_003.dcm"),
    "duplicated slice": (duplicated_slice, r"_002.dcm and \S+_002.dcm lie at the same position"),
    "uneven spacing": (uneven_spacing, r"but 4.5 mm between \S+_002.dcm and \S+_003.dcm"),
    "slice of another orientation": (other_orientation, r"_002.dcm has another orientation than the others'"),
    "slice of another pixel spacing": (other_pixel_spacing, r"_002.dcm has another pixel spacing than the others'"),
    "slice of another size": (other_size, r"_002.dcm has another size than the others' 8x7"),
    "slice without a position": (slice_without_a_position, r"_002.dcm has no slice position \(Image Position\)"),
    "slices shifted in their plane": (shifted_in_plane, r"_003.dcm, \S+_004.dcm, \S+_005.dcm are shifted within"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_series_that_is_not_one_regular_grid_is_refused_naming_its_slices(tmp_path: Path, case: str) -> None:
    write, expected = BROKEN[case]
    write(tmp_path / "series")
    with pytest.raises(InputError, match=f"the DICOM series {UID} is not one regular grid of slices") as refused:
        read_image(tmp_path / "series")
    assert "Export the complete series again" in str(refused.value)
    assert re.search(expected, str(refused.value)), str(refused.value)


def test_a_regular_series_in_any_file_order_is_read_on_its_grid(tmp_path: Path) -> None:
    image = volume()
    folder = tmp_path / "série_脑"  # a non-ASCII (UTF-8) folder and file names
    write_dicom_series(image, folder, UID)
    for path in folder.iterdir():  # file names in reverse slice order
        path.rename(path.with_name(f"coupe_{99 - int(path.stem[-3:]):03d}.dcm"))
    read = read_image(folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-4)


def test_positions_rounded_as_scanners_write_them_are_a_regular_grid(tmp_path: Path) -> None:
    image = volume(spacing=(0.7, 0.8, 1.25), size=(8, 7, 9))

    def rounded(k: int, tags: dict[str, str]) -> None:
        tags["0020|0032"] = "\\".join(f"{float(v) + 0.01 * (-1) ** k:.2f}" for v in tags["0020|0032"].split("\\"))

    write_dicom_series(image, tmp_path / "series", UID, change=rounded)
    read = read_image(tmp_path / "series")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_a_folder_with_a_broken_small_series_reads_its_regular_largest_one(tmp_path: Path, caplog) -> None:
    write_dicom_series(volume(seed=1), tmp_path, UID, slices=[0, 2, 3])
    large = volume(size=(8, 7, 7), seed=2)
    write_dicom_series(large, tmp_path, UID + "1")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path)), sitk.GetArrayFromImage(large))
    assert "holds 2 DICOM series; reading the largest" in caplog.text


def test_a_series_with_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    write_dicom_series(volume(), tmp_path, UID)
    os.rename(tmp_path / f"{UID}_002.dcm", os.fsdecode(bytes(tmp_path) + b"/slice\xff.dcm"))
    with pytest.raises(InputError, match=r"slice\\xff.dcm: this path is not UTF-8 text"):
        read_image(tmp_path)
