"""``fatesam crossval``: K supports, the other cases as queries, a per-label table and a JSON report."""

from __future__ import annotations

import json
import math

import pytest
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE

from FateSAMLib.cli import main
from FateSAMLib.crossval import find_cases, summarize

FAST = ["--random-weights", "--model", "sam2.1-tiny", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def test_crossval_scores_each_query_against_its_labels(tmp_path, capsys):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"example data missing: {HIPPOCAMPUS}")
    report = tmp_path / "crossval.json"
    predictions = tmp_path / "predictions"
    args = ["crossval", str(HIPPOCAMPUS), "--shots", "1", "--cases", "1", "--json", str(report)]
    assert main([*args, "--output-dir", str(predictions), *FAST]) == 0
    table = capsys.readouterr().out
    assert "Label 1" in table and "Label 2" in table and "mean" in table
    data = json.loads(report.read_text())
    assert data["supports"] == ["hippocampus_001"]
    assert {row["case"] for row in data["rows"]} == {"hippocampus_003"}
    assert {row["label"] for row in data["rows"]} == {1, 2}
    assert all(0.0 <= row["dice"] <= 1.0 for row in data["rows"])
    assert [p.name for p in predictions.iterdir()] == ["hippocampus_003.nii.gz"]


def test_crossval_refuses_a_folder_without_the_layout(tmp_path, capsys):
    assert main(["crossval", str(tmp_path), "--shots", "1", *FAST]) == 1
    assert "must contain 'images/' and 'labels/'" in capsys.readouterr().err


def test_cases_pair_images_with_same_named_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("b.nii.gz", "a.nrrd", "c.nii.gz"):
        (tmp_path / "images" / name).write_bytes(b"")
    for name in ("a.nrrd", "b.nii.gz"):
        (tmp_path / "labels" / name).write_bytes(b"")
    assert [name for name, _, _ in find_cases(tmp_path)] == ["a", "b"]


def test_summary_leaves_out_infinite_distances():
    rows = [
        {"case": "x", "label": 1, "dice": 0.5, "hd95": 2.0, "assd": 1.0},
        {"case": "y", "label": 1, "dice": 0.0, "hd95": math.inf, "assd": math.inf},
    ]
    summary = summarize(rows)["1"]
    assert summary["dice_mean"] == pytest.approx(0.25)
    assert summary["hd95_mean"] == pytest.approx(2.0)
