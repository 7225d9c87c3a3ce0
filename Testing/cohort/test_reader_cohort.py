"""A cohort's summary for a reader: each case's segment volumes (and their cohort mean) and slice provenance, and the
names of --label-names in a DICOM SEG."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from cohort_helpers import batch_args, finished_cohort, read_summary
from test_dicom_seg import write_series

from FateSAMLib.cli.main import main

pydicom = pytest.importorskip("pydicom")


def test_each_record_has_its_volumes_and_provenance_and_the_summary_their_mean(tmp_path_factory):
    queries, output_dir, _, _ = finished_cohort(tmp_path_factory)
    summary = read_summary(output_dir)
    cases = [case for case in summary if case not in ("counts", "mean")]
    for case in cases:
        record = summary[case]
        labels = sitk.ReadImage(str(output_dir / f"{case}.nii.gz"))
        array = sitk.GetArrayFromImage(labels)
        for value, volume in record["volumes"].items():
            assert volume["voxels"] == int((array == int(value)).sum())
            assert volume["volume_ml"] == pytest.approx(volume["voxels"] * np.prod(labels.GetSpacing()) / 1000)
        assert len(record["provenance"]) == sitk.ReadImage(str(queries / f"{case}.nii.gz")).GetSize()[2]
        assert record["provenance"][0]["supports"][0]["support_name"] == "hippocampus_001.nii.gz"
    for label in ("1", "2"):
        mean = np.mean([summary[case]["volumes"][label]["volume_ml"] for case in cases])
        assert summary["mean"][label]["volume_ml"] == pytest.approx(mean)
    with open(output_dir / "summary.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    by_id = {row["id"]: row for row in rows}
    assert float(by_id[cases[0]]["volume_ml_2"]) == pytest.approx(summary[cases[0]]["volumes"]["2"]["volume_ml"])
    assert int(by_id[cases[0]]["voxels_1"]) == summary[cases[0]]["volumes"]["1"]["voxels"]
    assert float(by_id["mean"]["volume_ml_1"]) == pytest.approx(summary["mean"]["1"]["volume_ml"])


def test_label_names_reach_a_dicom_seg(tmp_path):
    queries = tmp_path / "queries"
    write_series(queries / "patient1")
    output_dir = tmp_path / "out"
    names = ["--label-names", "1=anterior", "2=posterior"]
    assert main(batch_args(queries, output_dir, "--format", ".dcm", *names)) == 0
    seg = pydicom.dcmread(output_dir / "patient1.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior", "posterior"]
