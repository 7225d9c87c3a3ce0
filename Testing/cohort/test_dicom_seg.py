"""DICOM SEG: written for a small DICOM series made here (SimpleITK), read back with highdicom and pydicom."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cohort_helpers import batch_args, read_summary
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.cli.main import main
from FateSAMLib.io.dicom_seg import dicom_seg_writer
from FateSAMLib.io.images import read_image
from FateSAMLib.io.labels import label_image
from FateSAMLib.segments import Segment

highdicom = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SERIES_UID = "1.2.826.0.1.3680043.2.1125.77.1"


def write_series(folder: Path) -> sitk.Image:
    """A real hippocampus volume as an MR DICOM series, one file per slice; returns the volume written."""
    image = sitk.Cast(
        sitk.RescaleIntensity(sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_243")[0])), 0, 1000),
        sitk.sitkInt16,
    )
    d = image.GetDirection()
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": f"{SERIES_UID}.{k + 1}",
            "0008|0060": "MR",
            "0010|0010": "Test^Cohort",
            "0010|0020": "C1",
            "0020|000d": f"{SERIES_UID}.0",
            "0020|000e": SERIES_UID,
            "0020|0052": f"{SERIES_UID}.9",  # frame of reference
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return image


def test_labels_on_a_dicom_grid_come_back_from_the_seg_with_names_colours_and_references(tmp_path):
    series = tmp_path / "series"
    write_series(series)
    query = read_image(series)
    array = np.zeros(sitk.GetArrayViewFromImage(query).shape, np.int64)
    array[3:9, 10:20, 5:15], array[12:15, 30:40, 20:30] = 2, 7
    segments = [Segment(2, "left kidney", (0.1, 0.5, 0.9)), Segment(7, "spleen", (0.8, 0.2, 0.3))]
    output = tmp_path / "seg.dcm"
    dicom_seg_writer(label_image(array, query), segments, series)(output)

    seg = highdicom.seg.segread(output)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["left kidney", "spleen"]
    rgb = highdicom.color.CIELabColor.from_dicom_value(seg.SegmentSequence[1].RecommendedDisplayCIELabValue).to_rgb()
    np.testing.assert_allclose(rgb, (204, 51, 76), atol=1)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    for k in range(array.shape[0]):
        uid = f"{SERIES_UID}.{k + 1}"
        if not array[k].any():
            continue
        pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True, skip_overlap_checks=True)[0]
        np.testing.assert_array_equal(pixels, np.select([array[k] == 2, array[k] == 7], [1, 2], 0))


def test_batch_writes_a_dicom_seg_for_a_dicom_query_and_refuses_a_file_before_any_work(tmp_path, capsys):
    queries = tmp_path / "queries"
    write_series(queries / "patient1")
    (queries / "plain.nii.gz").symlink_to(case_paths(HIPPOCAMPUS, "hippocampus_243")[0])
    output_dir = tmp_path / "out"
    assert main(batch_args(queries, output_dir, "--format", ".dcm")) == 1
    err = capsys.readouterr().err
    assert "fatesam: error: Case 'plain': " in err and "is not a DICOM series folder" in err
    assert "Choose another --format" in err and "RANDOM WEIGHTS" not in err and not output_dir.exists()

    (queries / "plain.nii.gz").unlink()
    assert main(batch_args(queries, output_dir, "--format", ".dcm")) == 0
    assert read_summary(output_dir)["patient1"]["status"] == "done"
    seg = pydicom.dcmread(output_dir / "patient1.dcm")
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Label 1", "Label 2"]


def without(series: Path, *keywords: str) -> None:
    """Remove these attributes from every file of ``series``, as an anonymiser may."""
    for path in series.iterdir():
        header = pydicom.dcmread(path)
        for keyword in keywords:
            delattr(header, keyword)
        header.save_as(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda series: without(series, "FrameOfReferenceUID", "PatientBirthDate"), "lacks FrameOfReferenceUID, "
         "PatientBirthDate, which a DICOM SEG must reference or copy (an anonymiser may have removed them)"),
        (lambda series: without(series, "ImagePositionPatient"), "lacks ImagePositionPatient"),
    ],
)  # fmt: skip
def test_a_series_a_seg_cannot_reference_is_refused_before_any_work_naming_what_it_lacks(
    tmp_path, capsys, change, expected
):
    queries = tmp_path / "queries"
    write_series(queries / "patient1")
    change(queries / "patient1")
    assert main(batch_args(queries, tmp_path / "out", "--format", ".dcm")) == 1
    err = capsys.readouterr().err
    assert f"fatesam: error: Case 'patient1': The DICOM series in {queries / 'patient1'} {expected}" in err
    assert "Export the series again with them" in err and "choose another --format" in err
    assert "Traceback" not in err and "RANDOM WEIGHTS" not in err and not (tmp_path / "out").exists()


def test_without_highdicom_dicom_seg_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    queries = tmp_path / "queries"
    write_series(queries / "patient1")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # what an installation without the [dicom] extra imports
    assert main(batch_args(queries, tmp_path / "out", "--format", ".dcm")) == 1
    err = capsys.readouterr().err
    assert "Case 'patient1': Writing DICOM SEG (.dcm) needs highdicom: pip install \"fatesam[dicom]\"" in err
    assert "Traceback" not in err and "RANDOM WEIGHTS" not in err and not (tmp_path / "out").exists()
