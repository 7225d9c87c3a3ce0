"""Headers read before any voxel: data files only beside their header (none in an upload), a bound on the voxels a
header promises, the memory check on that promise, and paths that are not UTF-8."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, assert_same_image, case_paths

from FateSAMLib.errors import InputError, ResourceError
from FateSAMLib.io.images import read_image
from FateSAMLib.io.integrity import check_header
from FateSAMLib.io.labels import read_labels

SIZE = (5, 4, 3)  # 60 voxels of 2 bytes: 120 bytes of voxel data
SECRET = b"root:x:0:0:secret line of another file that must never be read into an image\n" * 3


def volume() -> sitk.Image:
    array = np.arange(60, dtype=np.int16).reshape(SIZE[::-1])
    return sitk.GetImageFromArray(array)


def nrrd_header(path: Path, data_file: str, listed: tuple[str, ...] = ()) -> Path:
    lines = ["NRRD0004", "type: short", "dimension: 3", "sizes: 5 4 3", "endian: little", "encoding: raw"]
    path.write_text("\n".join([*lines, f"data file: {data_file}", *listed]) + "\n")
    return path


def meta_header(path: Path, data_file: str, listed: tuple[str, ...] = ()) -> Path:
    lines = ["ObjectType = Image", "NDims = 3", "DimSize = 5 4 3", "ElementType = MET_SHORT", "BinaryData = True"]
    lines += ["BinaryDataByteOrderMSB = False", f"ElementDataFile = {data_file}", *listed]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(the folder of the headers, with a data file beside them; a folder beside it holding a secret file)."""
    headers, other = tmp_path / "case", tmp_path / "other"
    headers.mkdir()
    other.mkdir()
    (headers / "voxels.raw").write_bytes(volume_bytes())
    (headers / "slice1.raw").write_bytes(volume_bytes()[:40])
    (other / "secret.raw").write_bytes(SECRET)
    return headers, other


def volume_bytes() -> bytes:
    return sitk.GetArrayFromImage(volume()).astype("<i2").tobytes()


ELSEWHERE = {
    "absolute path": lambda other: str(other / "secret.raw"),
    "../ relative path": lambda other: "../other/secret.raw",
    "sub-folder": lambda other: "sub/voxels.raw",
    "%d pattern outside": lambda other: "../other/secret%d.raw 1 3 1",
    "pattern with another conversion": lambda other: "slice%s.raw 1 3 1",
}


@pytest.mark.parametrize("where", sorted(ELSEWHERE))
@pytest.mark.parametrize("header", ["nrrd", "nhdr", "mhd", "mha", "seg.nrrd"])
def test_a_data_file_elsewhere_than_beside_its_header_is_refused(folders, where: str, header: str) -> None:
    headers, other = folders
    data_file = ELSEWHERE[where](other)
    write = meta_header if header in ("mhd", "mha") else nrrd_header
    path = write(headers / f"volume.{header}", data_file)
    for own_data_only, expected in ((False, "which is not a file beside it"), (True, "is a detached header")):
        with pytest.raises(InputError, match=expected) as refused:
            check_header(path, own_data_only=own_data_only)
        assert str(len(SECRET)) not in str(refused.value) and "root:" not in str(refused.value)
    read = read_labels if header == "seg.nrrd" else read_image
    with pytest.raises(InputError, match="which is not a file beside it") as refused:
        read(path)
    assert str(len(SECRET)) not in str(refused.value)


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_list_of_data_files_is_read_only_beside_its_header(folders, suffix: str) -> None:
    headers, other = folders
    write = nrrd_header if suffix == ".nhdr" else meta_header
    beside = write(headers / f"beside{suffix}", "LIST", ("slice1.raw", "slice1.raw", "slice1.raw"))
    assert read_image(beside).GetSize() == SIZE  # each listed file holds one slice
    with pytest.raises(InputError, match="is a detached header"):
        check_header(beside, own_data_only=True)
    outside = write(headers / f"outside{suffix}", "LIST", ("slice1.raw", str(other / "secret.raw"), "slice1.raw"))
    with pytest.raises(InputError, match=f"names '{other / 'secret.raw'}' as the file that holds its voxels"):
        read_image(outside)


def test_a_carriage_return_cannot_hide_a_data_file(folders) -> None:
    headers, _ = folders
    # a carriage return alone ends a header line for the readers: it cannot hide a data file either
    hidden = headers / "hidden.nrrd"
    hidden.write_bytes(b"NRRD0004\ntype: short\rdata file: ../other/secret.raw\ndimension: 3\nsizes: 5 4 3\n")
    with pytest.raises(InputError, match="'../other/secret.raw' as the file"):
        check_header(hidden, own_data_only=False)


@pytest.mark.parametrize("header", ["nhdr", "mhd"])
def test_a_detached_header_with_its_data_file_beside_it_is_read_on_the_command_line_only(folders, header) -> None:
    headers, _ = folders
    path = (meta_header if header == "mhd" else nrrd_header)(headers / f"volume.{header}", "voxels.raw")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(volume()))
    with pytest.raises(InputError, match="An upload must hold its own voxels"):
        check_header(path, own_data_only=True)


def test_a_nifti_pair_holds_its_voxels_in_another_file(tmp_path: Path) -> None:
    pair = tmp_path / "volume.hdr"
    sitk.WriteImage(volume(), str(pair))
    assert (tmp_path / "volume.img").is_file()
    check_header(pair, own_data_only=False)  # the .img lies beside it, by its name
    with pytest.raises(InputError, match="is a detached header"):
        check_header(pair, own_data_only=True)


def test_files_that_hold_their_voxels_pass_in_every_format(tmp_path: Path) -> None:
    for suffix in (".nrrd", ".mha", ".nii.gz", ".nii"):
        path = tmp_path / f"volume{suffix}"
        sitk.WriteImage(volume(), str(path), useCompression=True)
        check_header(path, own_data_only=True, max_voxels=60)
    labels = case_paths(HIPPOCAMPUS, "hippocampus_001")[1]
    check_header(labels, own_data_only=True, max_voxels=10**8)


def test_another_kind_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(path))
    with pytest.raises(InputError, match="could not be read as a NIfTI, NRRD or MetaImage file"):
        check_header(path, own_data_only=True)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_max_voxels_bounds_what_a_header_promises_before_anything_is_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(volume(), str(path), useCompression=True)
    check_header(path, own_data_only=True, max_voxels=60)
    with pytest.raises(InputError, match="its header promises 60 voxel values of 2 bytes; at most 59 voxel values"):
        check_header(path, own_data_only=True, max_voxels=59)


def test_max_voxels_also_bounds_the_bytes_of_a_value(tmp_path: Path) -> None:
    path = tmp_path / "blocks.nrrd"  # 60 "voxels" of 1 MiB each
    path.write_bytes(b"NRRD0004\ntype: block\nblock size: 1048576\ndimension: 3\nsizes: 5 4 3\nencoding: raw\n\n")
    with pytest.raises(InputError, match="promises 60 voxel values of 1048576 bytes; at most 100 voxel values of at"):
        check_header(path, own_data_only=True, max_voxels=100)


def test_a_header_promising_more_than_memory_holds_is_refused_before_its_voxels_are_decompressed(tmp_path) -> None:
    path = tmp_path / "bomb.nrrd"  # 128 GiB of voxels promised; the gzip stream holds a few bytes
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4096 4096 4096\nencoding: gzip\n\n"
    path.write_bytes(header + gzip.compress(b"\0" * 1000))
    started = time.perf_counter()
    with pytest.raises(
        ResourceError, match=r"Not enough memory on this machine: reading .*bomb.nrrd \(68719476736 vox"
    ):
        read_image(path)
    assert time.perf_counter() - started < 2
    with pytest.raises(InputError, match="promises 68719476736 voxel values of 2 bytes; at most 50000000 voxel"):
        check_header(path, own_data_only=True, max_voxels=50_000_000)


def test_a_path_that_is_not_utf8_is_refused_and_other_non_ascii_paths_are_read(tmp_path: Path) -> None:
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    latin1 = os.fsdecode(bytes(tmp_path) + b"/case\xff.nii.gz")
    Path(latin1).write_bytes(image.read_bytes())
    for read in (read_image, read_labels, lambda p: check_header(p, own_data_only=False)):
        with pytest.raises(InputError, match=r"case\\xff.nii.gz: this path is not UTF-8 text"):
            read(latin1)
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/s\xe9rie"))
    folder.mkdir()
    with pytest.raises(InputError, match="this path is not UTF-8 text"):
        read_image(folder)
    utf8 = tmp_path / "céréale 脑" / "cas_é.nii.gz"
    utf8.parent.mkdir()
    utf8.write_bytes(image.read_bytes())
    assert_same_image(read_image(utf8), sitk.ReadImage(str(image)))


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_data_file_named_after_a_header_too_long_to_read_is_refused(folders, suffix: str) -> None:
    headers, _ = folders
    path = headers / f"long{suffix}"
    field = "data file: ../other/secret.raw" if suffix == ".nhdr" else "ElementDataFile = ../other/secret.raw"
    start = "NRRD0004\ntype: short\ndimension: 3\nsizes: 5 4 3\n" if suffix == ".nhdr" else "ObjectType = Image\n"
    path.write_text(start + "# a comment\n" * 5000 + field + "\n")
    with pytest.raises(InputError, match="long" + suffix.replace(".", r"\.") + " is incomplete"):
        check_header(path, own_data_only=False)
