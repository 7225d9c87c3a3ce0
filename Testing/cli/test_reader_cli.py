"""What ``fatesam`` gives a reader besides the labels: provenance and volumes in --stats-json, --probabilities, names
from --label-names in every output, volumes in ``evaluate``, and a crossval table that says what it averaged."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import HIPPOCAMPUS, case_paths
from test_cli import FAST, segment_args

from FateSAMLib.cli.main import main
from FateSAMLib.method.probabilities import PRESENT_FROM

NAMES = ["--label-names", "1=anterior", "2=posterior"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """One run with every reader output: (folder, stats)."""
    folder = tmp_path_factory.mktemp("reader")
    extra = ["--stats-json", str(folder / "stats.json"), "--probabilities", str(folder / "p.nrrd"), *NAMES]
    assert main(segment_args(folder / "out.seg.nrrd", extra=extra)) == 0
    return folder, json.loads((folder / "stats.json").read_text())


def test_label_names_reach_the_seg_nrrd_and_the_stats(segmented):
    folder, stats = segmented
    segmentation = slicerio.read_segmentation(str(folder / "out.seg.nrrd"))
    assert [s["name"] for s in segmentation["segments"]] == ["anterior", "posterior"]
    assert [s["name"] for s in stats["segments"]] == ["anterior", "posterior"]
    assert {entry["name"] for entry in stats["confidence"]} == {"anterior", "posterior"}


def test_stats_list_volumes_and_the_provenance_of_every_slice(segmented):
    folder, stats = segmented
    labels = sitk.ReadImage(str(folder / "out.seg.nrrd"))
    array = sitk.GetArrayFromImage(labels)
    voxel_ml = np.prod(labels.GetSpacing()) / 1000
    for volume in stats["volumes"]:
        assert volume["voxels"] == int((array == volume["value"]).sum())
        assert volume["volume_ml"] == pytest.approx(volume["voxels"] * voxel_ml)
    assert [entry["slice_index"] for entry in stats["provenance"]] == list(range(stats["query_slices"]))
    first = stats["provenance"][0]["supports"][0]
    assert set(first) == {"rank", "support", "support_name", "slice_index", "center_lps", "distance", "segments"}
    assert first["rank"] == 1 and first["support_name"] == "hippocampus_001.nii.gz"
    assert "score" not in stats["doubtful_slices"][0] and 0 <= stats["doubtful_slices"][0]["certainty"] <= 1


def test_probabilities_lie_on_the_query_grid_and_threshold_to_the_labels(segmented):
    folder, stats = segmented
    probabilities, labels = sitk.ReadImage(str(folder / "p.nrrd")), sitk.ReadImage(str(folder / "out.seg.nrrd"))
    query = sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_004")[0]))
    assert probabilities.GetSize() == query.GetSize() and probabilities.GetNumberOfComponentsPerPixel() == 2
    np.testing.assert_allclose(probabilities.GetDirection(), query.GetDirection())
    np.testing.assert_allclose(probabilities.GetOrigin(), query.GetOrigin(), atol=1e-5)
    present = sitk.GetArrayFromImage(probabilities) >= PRESENT_FROM
    single = present.sum(axis=-1) <= 1
    expected = np.select([present[..., 0], present[..., 1]], [1, 2], 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels)[single], expected[single])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probabilities", "{folder}/p.seg.nrrd"], "--probabilities .*use one of .nrrd"),
        (["--label-names", "0=background"], "VALUE=NAME with a label value above 0"),
        (["--label-names", "1=a", "--server", "http://127.0.0.1:9"], "run locally only"),
    ],
)
def test_bad_reader_options_are_refused_before_any_work(tmp_path, capsys, extra, message):
    extra = [item.format(folder=tmp_path) for item in extra]
    assert main(segment_args(tmp_path / "out.nii.gz", extra=extra)) == 1
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_lists_volumes_and_names(segmented, capsys):
    folder, _ = segmented
    reference = case_paths(HIPPOCAMPUS, "hippocampus_004")[1]
    args = ["evaluate", "--prediction", str(folder / "out.seg.nrrd"), "--reference", str(reference)]
    assert main([*args, "--json", *NAMES[:2]]) == 0
    report = json.loads(capsys.readouterr().out)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
    assert report["labels"]["1"]["name"] == "anterior"
    assert report["labels"]["2"]["reference_voxels"] == int((truth == 2).sum())
    assert report["labels"]["2"]["reference_volume_ml"] == pytest.approx((truth == 2).sum() / 1000)  # 1 mm voxels
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "Vol mL" in table and "Ref mL" in table


def test_crossval_names_its_supports_queries_and_spread(tmp_path, capsys):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"example data missing: {HIPPOCAMPUS}")
    report = tmp_path / "crossval.json"
    args = ["crossval", str(HIPPOCAMPUS), "--shots", "1", "--cases", "1", "--json", str(report), *NAMES, *FAST]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "mean ± standard deviation over the scored queries" in table
    assert "queries scored: 1; supports: hippocampus_001" in table
    assert "anterior" in table and "posterior" in table
    data = json.loads(report.read_text())
    assert data["queries"] == 1 and data["supports"] == ["hippocampus_001"] and "standard deviation" in data["spread"]
