"""Writing label volumes: plain label maps and Slicer segmentations, atomically and never over a user's file."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import SEGMENTS, assert_same_image, oblique_labels

from FateSAMLib.errors import InputError
from FateSAMLib.formats import OUTPUT_SUFFIXES, output_suffix
from FateSAMLib.io.geometry import lps_to_index
from FateSAMLib.io.labels import read_labels, write_label_map
from FateSAMLib.segments import Segment, default_segment


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_plain_label_map_round_trip(tmp_path: Path, suffix: str) -> None:
    image = oblique_labels()
    path = write_label_map(image, tmp_path / f"out{suffix}", SEGMENTS)
    read = sitk.ReadImage(str(path))
    assert read.GetPixelID() == sitk.sitkUInt8
    assert_same_image(read, image)
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temporary file left behind


def test_large_label_values_are_written_as_uint16(tmp_path: Path) -> None:
    image = oblique_labels(max_value=300)
    read = sitk.ReadImage(str(write_label_map(image, tmp_path / "big.nii.gz", SEGMENTS)))
    assert read.GetPixelID() == sitk.sitkUInt16
    assert_same_image(read, image)


def test_seg_nrrd_has_names_colours_and_values_for_slicerio(tmp_path: Path) -> None:
    image = oblique_labels()
    path = write_label_map(image, tmp_path / "out.seg.nrrd", SEGMENTS)
    segmentation = slicerio.read_segmentation(str(path))
    found = [(s["labelValue"], s["name"], tuple(s["color"])) for s in segmentation["segments"]]
    assert found == [(2, "left kidney", (0.1, 0.5, 0.9)), (7, "spleen", (0.8, 0.2, 0.3))]
    labels, segments = read_labels(path)
    assert segments == SEGMENTS
    assert_same_image(labels, image)


def test_seg_nrrd_is_read_by_slicers_own_reader(tmp_path: Path) -> None:
    """Names, colours, and voxels on an oblique grid, as the 3D Slicer application would load them."""
    scene = pytest.importorskip("FateSAMLib.slicer.scene", reason="needs slicer-core (pip install slicer-core)")
    scene.register_segmentation_converters()
    image = oblique_labels()
    path = write_label_map(image, tmp_path / "out.seg.nrrd", SEGMENTS)
    segmentation = scene.read_segmentation(path)
    infos = scene.segment_infos(segmentation)
    assert [info.name for info in infos] == ["left kidney", "spleen"]
    for info, segment in zip(infos, SEGMENTS, strict=True):
        np.testing.assert_allclose(info.color, segment.color, atol=1e-6)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(tmp_path / "volume.nrrd"))
    volume = scene.read_volume(tmp_path / "volume.nrrd")
    values = {info.segment_id: segment.value for info, segment in zip(infos, SEGMENTS, strict=True)}
    array = scene.segmentation_to_label_array(segmentation, volume, values)  # [k, j, i] on Slicer's volume grid
    # Slicer may store the volume's voxels in another order (it flips left-handed grids): compare voxel by voxel at
    # the same physical point.
    kji = np.argwhere(np.ones(array.shape, bool))
    ras = scene.ijk_to_ras(volume) @ np.column_stack([kji[:, ::-1], np.ones(len(kji))]).T
    lps = np.array([scene.lps_to_ras(point) for point in ras[:3].T])  # the same sign flip turns RAS into LPS
    ijk = np.rint(lps_to_index(image, lps)).astype(int)
    expected = sitk.GetArrayFromImage(image)[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    np.testing.assert_array_equal(array[tuple(kji.T)], expected)
    assert (expected == 2).sum() == 16 and (expected == 7).sum() == 1


def test_label_without_a_segment_gets_a_default_one(tmp_path: Path) -> None:
    path = write_label_map(oblique_labels(), tmp_path / "out.seg.nrrd", SEGMENTS[:1])
    assert read_labels(path)[1] == [SEGMENTS[0], default_segment(7)]


def test_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "mine.nii.gz"
    path.write_bytes(b"the user's file")
    with pytest.raises(InputError, match="exists; pass --overwrite or choose another path"):
        write_label_map(oblique_labels(), path, SEGMENTS)
    assert path.read_bytes() == b"the user's file"
    write_label_map(oblique_labels(), path, SEGMENTS, overwrite=True)
    assert_same_image(sitk.ReadImage(str(path)), oblique_labels())


def test_output_gets_ordinary_permissions_and_missing_folders(tmp_path: Path) -> None:
    path = write_label_map(oblique_labels(), tmp_path / "new" / "folder" / "out.mha", SEGMENTS)
    ordinary = tmp_path / "ordinary"
    ordinary.touch()  # a file created the usual way: mode 0666 minus the umask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)


def test_unknown_extension_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"use one of \.seg\.nrrd, \.nii\.gz, \.nii, \.nrrd, \.mha"):
        write_label_map(oblique_labels(), tmp_path / "out.png", SEGMENTS)
    with pytest.raises(InputError, match="0..65535"):
        write_label_map(oblique_labels(max_value=-1), tmp_path / "out.nrrd", SEGMENTS)
    assert not any(tmp_path.iterdir())


def test_output_suffix() -> None:
    assert output_suffix("a/b.SEG.NRRD") == ".seg.nrrd"
    assert output_suffix("case.nii.gz") == ".nii.gz" and output_suffix("case.nrrd") == ".nrrd"
    assert output_suffix("case.png") == "" and set(OUTPUT_SUFFIXES) >= {".nii", ".mha"}


def test_non_ascii_segment_names_survive_the_seg_nrrd_both_ways(tmp_path: Path) -> None:
    """3D Slicer writes segment names as UTF-8, which slicerio reads as ASCII only and refuses to write."""
    segments = [Segment(2, "Straße", (0.1, 0.5, 0.9)), Segment(7, "Rein gauche (rénal)", (0.8, 0.2, 0.3))]
    path = write_label_map(oblique_labels(), tmp_path / "out.seg.nrrd", segments)
    assert "Straße".encode() in path.read_bytes()
    assert read_labels(path)[1] == segments
    scene = pytest.importorskip("FateSAMLib.slicer.scene", reason="needs slicer-core (pip install slicer-core)")
    scene.register_segmentation_converters()
    assert [info.name for info in scene.segment_infos(scene.read_segmentation(path))] == [s.name for s in segments]
