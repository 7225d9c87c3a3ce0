"""``fatesam crossval``: K supports, the other cases as queries, a per-label table and a JSON report."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.atomic import strict_json
from FateSAMLib.cli.crossval import find_cases, split_cases, summarize
from FateSAMLib.cli.main import build_parser, main
from FateSAMLib.cli.reporting import Reporter
from FateSAMLib.errors import Cancelled, InputError
from FateSAMLib.metrics import evaluate_labels
from FateSAMLib.progress import CancelToken

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
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    (support,) = data["run"]["supports"]  # what made the predictions: the supports by content, and the settings
    assert support["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() and support["labels"] == str(
        labels
    )
    assert data["run"]["settings"]["top_k"] == 3 and data["run"]["settings"]["image_size"] == TEST_IMAGE_SIZE
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


def labelled_cases(folder: Path, names: tuple[str, ...] = ("a", "b", "c", "d")) -> Path:
    """Small real NIfTI cases (32 x 32 x 4 voxels, a bright cube labelled 1) in ``folder/{images,labels}``."""
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for index, name in enumerate(names):
        labels = np.zeros((4, 32, 32), np.uint8)
        labels[1:3, 8 + index : 20 + index, 10:22] = 1
        image = rng.normal(0.0, 1.0, labels.shape).astype(np.float32) + 3.0 * labels
        for array, sub in ((image, "images"), (labels, "labels")):
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing((1.0, 1.0, 3.0))
            sitk.WriteImage(volume, str(folder / sub / f"{name}.nii.gz"))
    return folder


def test_an_existing_json_is_refused_before_anything_is_written(tmp_path, capsys, no_model):
    data = labelled_cases(tmp_path / "data")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    report.write_text("an earlier run's report")
    args = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{report} exists; pass --overwrite" in err and "Traceback" not in err
    assert report.read_text() == "an earlier run's report" and not predictions.exists()


def test_an_existing_prediction_is_refused_before_any_work(tmp_path, capsys, no_model):
    data = labelled_cases(tmp_path / "data")
    (data / "images" / "d.nii.gz").write_bytes(b"damaged: it would be refused if it were read first")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    (predictions / "d.nii.gz").write_bytes(b"an earlier prediction")
    report = tmp_path / "report.json"
    args = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions)]
    assert main(args) == 1
    assert f"{predictions / 'd.nii.gz'} exists; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in predictions.iterdir()] == ["d.nii.gz"] and not report.exists()
    assert (predictions / "d.nii.gz").read_bytes() == b"an earlier prediction"


def test_a_damaged_query_is_refused_before_the_model_loads_and_nothing_is_written(tmp_path, capsys, no_model):
    data = labelled_cases(tmp_path / "data")
    (data / "images" / "d.nii.gz").write_bytes(b"not an image")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    args = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "d.nii.gz" in err and "download" not in err.lower()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--shots", "2", "--cases", "-1"], "--cases must be a whole number of at least 1 (got -1)"),
        (["--shots", "2", "--cases", "0"], "--cases must be a whole number of at least 1 (got 0)"),
        (["--shots", "0"], "--shots must be a whole number of at least 1 (got 0)"),
        (["--shots", "two"], "'two' is not a whole number"),
        (["--shots", "4"], "--shots 4 leaves no case to evaluate: {data} has 4 labelled case(s)"),
        (["--shots", "9"], "use --shots 3 or fewer"),
    ],
)
def test_shots_and_cases_are_validated(tmp_path, capsys, no_model, options, message):
    data = labelled_cases(tmp_path / "data")
    report = tmp_path / "report.json"
    assert main(["crossval", str(data), *options, "--json", str(report)]) == 1
    err = capsys.readouterr().err
    assert message.format(data=data) in err and "Traceback" not in err
    assert not report.exists()


def test_two_images_of_one_case_are_refused(tmp_path):
    data = labelled_cases(tmp_path / "data", names=("a", "b"))
    for sub in ("images", "labels"):
        sitk.WriteImage(sitk.ReadImage(str(data / sub / "a.nii.gz")), str(data / sub / "a.nrrd"))
    with pytest.raises(InputError, match="Two cases \\(a.nii.gz, a.nrrd\\) have the id 'a'"):
        find_cases(data)


def test_case_names_follow_the_one_id_rule(tmp_path):
    data = labelled_cases(tmp_path / "data", names=("Case1", "case1"))
    with pytest.raises(InputError, match="Two cases \\(Case1.nii.gz, case1.nii.gz\\) have the ids 'Case1' and 'case1'"):
        find_cases(data)
    data = labelled_cases(tmp_path / "other", names=("a", "NUL"))
    with pytest.raises(
        InputError, match="The case id 'NUL' cannot name an output file: it is a device name on Windows"
    ):
        find_cases(data)


def test_more_cases_than_remain_are_all_used_with_a_warning(tmp_path):
    cases = find_cases(labelled_cases(tmp_path / "data"))
    err = io.StringIO()
    reporter = Reporter(json_lines=False, stdout=io.StringIO(), stderr=err)
    supports, queries = split_cases(cases, 1, 10, tmp_path, reporter)
    assert [c[0] for c in supports] == ["a"] and [c[0] for c in queries] == ["b", "c", "d"]
    assert "--cases 10: only 3 cases remain after the 1 supports; all are used." in err.getvalue()
    assert [c[0] for c in split_cases(cases, 1, 2, tmp_path, reporter)[1]] == ["b", "c"]


class _CancelOnceAPredictionIsStaged(Reporter):
    """Cancels the run at its first progress report after a query's prediction was written under ``root`` in a
    hidden folder (where the workers write until every prediction is published); ``staged`` lists what was there."""

    def __init__(self, root: Path, cancel: CancelToken) -> None:
        super().__init__(json_lines=True, stdout=io.StringIO())
        self.root, self.cancel = root, cancel
        self.staged: list[Path] = []

    def progress(self, fraction: float, message: str) -> None:
        super().progress(fraction, message)
        if not self.staged and self.root.is_dir():
            self.staged = list(self.root.rglob(".*/*.nii.gz"))
            if self.staged:
                self.cancel.cancel()


def test_a_cancelled_run_leaves_no_output_folder_it_created(tmp_path):
    data = labelled_cases(tmp_path / "data")
    predictions = tmp_path / "new" / "predictions"
    argv = ["crossval", str(data), "--shots", "2", "--output-dir", str(predictions), *FAST]
    cancel = CancelToken()
    reporter = _CancelOnceAPredictionIsStaged(tmp_path, cancel)
    with pytest.raises(Cancelled):
        args = build_parser().parse_args(argv)
        args.func(args, reporter, cancel)
    assert reporter.staged, "the run was cancelled before any prediction was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_outputs_are_replaced_only_with_overwrite_and_only_by_a_finished_run(tmp_path, capsys):
    data = labelled_cases(tmp_path / "data")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    predictions.mkdir()
    (predictions / "c.nii.gz").write_bytes(b"an earlier prediction")
    report.write_text("an earlier report")
    argv = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions), *FAST]
    cancel = CancelToken()
    reporter = _CancelOnceAPredictionIsStaged(predictions, cancel)
    with pytest.raises(Cancelled):
        args = build_parser().parse_args([*argv, "--overwrite"])
        args.func(args, reporter, cancel)
    assert reporter.staged
    assert [p.name for p in predictions.iterdir()] == ["c.nii.gz"], "the new prediction of c was removed"
    assert (predictions / "c.nii.gz").read_bytes() == b"an earlier prediction"
    assert report.read_text() == "an earlier report"

    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in predictions.iterdir()) == ["c.nii.gz", "d.nii.gz"]
    assert sitk.ReadImage(str(predictions / "c.nii.gz")).GetSize() == (32, 32, 4)
    assert {row["case"] for row in json.loads(report.read_text())["rows"]} == {"c", "d"}
    before = {p: p.stat().st_mtime_ns for p in [report, *predictions.iterdir()]}
    capsys.readouterr()
    assert main(argv) == 1, "without --overwrite a second run is refused before it starts"
    assert f"{predictions / 'c.nii.gz'} exists; pass --overwrite" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in [report, *predictions.iterdir()]} == before


def test_each_score_is_the_metric_of_the_published_prediction_and_it_equals_fatesam_segment(tmp_path):
    data = labelled_cases(tmp_path / "data")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    argv = ["crossval", str(data), "--shots", "2", "--cases", "1", "--json", str(report), "--output-dir"]
    assert main([*argv, str(predictions), *FAST]) == 0
    alone = tmp_path / "alone.nii.gz"
    supports = [arg for name in ("a", "b") for arg in ("--support", *map(str, case_paths(data, name)))]
    query = str(data / "images" / "c.nii.gz")
    assert main(["segment", *supports, "--query", query, "--output", str(alone), *FAST]) == 0
    assert (predictions / "c.nii.gz").read_bytes() == alone.read_bytes()
    direct = evaluate_labels(sitk.ReadImage(str(alone)), sitk.ReadImage(str(data / "labels" / "c.nii.gz")))
    rows = json.loads(report.read_text())["rows"]
    assert rows == [{"case": "c", "label": label, **strict_json(scores)} for label, scores in direct.items()]
    assert json.loads(report.read_text())["failed"] == []

    scores_only = tmp_path / "scores-only.json"  # without --output-dir the workers write nothing
    before = sorted(tmp_path.rglob("*"))
    assert main(["crossval", str(data), "--shots", "2", "--cases", "1", "--json", str(scores_only), *FAST]) == 0
    assert sorted(tmp_path.rglob("*")) == sorted([*before, scores_only])
    assert json.loads(scores_only.read_text())["rows"] == rows


class _DamageOnceACaseRuns(Reporter):
    """Overwrites ``victim`` with bytes that are no image at the first progress report of ``case``'s segmentation
    (after every query was checked), as a file changed on a network share meanwhile would be."""

    def __init__(self, case: str, victim: Path) -> None:
        super().__init__(json_lines=True, stdout=io.StringIO())
        self.case, self.victim = case, victim

    def progress(self, fraction: float, message: str) -> None:
        super().progress(fraction, message)
        if f"| {self.case}: " in message and not self.victim.read_bytes().startswith(b"damaged"):
            self.victim.write_bytes(b"damaged meanwhile")


def test_a_query_that_fails_during_the_run_is_recorded_and_the_others_are_scored_and_published(tmp_path):
    data = labelled_cases(tmp_path / "data")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    argv = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions), *FAST]
    reporter = _DamageOnceACaseRuns("c", data / "images" / "d.nii.gz")
    args = build_parser().parse_args(argv)
    assert args.func(args, reporter, CancelToken()) == 1
    events = [json.loads(line) for line in reporter.stdout.getvalue().splitlines()]
    assert [(e["id"], e["status"]) for e in events if e["event"] == "case"] == [("c", "done"), ("d", "failed")]
    data_report = json.loads(report.read_text())
    assert [failure["case"] for failure in data_report["failed"]] == ["d"]
    assert "d.nii.gz" in data_report["failed"][0]["error"]
    assert {row["case"] for row in data_report["rows"]} == {"c"}
    assert [p.name for p in predictions.iterdir()] == ["c.nii.gz"]
