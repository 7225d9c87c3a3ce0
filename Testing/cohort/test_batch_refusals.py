"""``fatesam batch`` refuses, before any work (exit 1, one message, nothing written), what it could not do right:
ids that are no plain file name, unknown segments, DICOM SEG it could not write, and a resume with other supports
or settings."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cohort_helpers import QUERIES, batch_args, finished_cohort, query_folder, support_args
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cli.main import main


def refused(args: list[str], capsys) -> str:
    """Run ``fatesam``, which must be refused before it loads the model (a model that cannot load, see the
    ``no_model`` fixture, or the random weights that would warn); the one error line it printed."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "download" not in err.lower() and "RANDOM WEIGHTS" not in err
    lines = [line for line in err.splitlines() if line.startswith("fatesam: error:")]
    assert len(lines) == 1, err
    return lines[0]


def batch(queries: Path, output_dir: Path, *extra: str) -> list[str]:
    """``fatesam batch`` with a model that cannot load (under ``no_model``): only a refusal can end it early."""
    return ["batch", *support_args(), "--queries", str(queries), "--output-dir", str(output_dir), *extra]


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize(
    ("ident", "problem"),
    [
        ("../../escaped", "path separator"),
        ("/abs/path", "path separator"),
        ("..", "starts with a dot"),
        ("NUL", "device name on Windows"),
        ("x" * 300, "300 bytes long"),
        ("tab\there", "control character"),
    ],
)
def test_a_csv_id_that_is_no_plain_file_name_is_refused_and_nothing_is_written(
    tmp_path, capsys, no_model, ident, problem
):
    query = case_paths(HIPPOCAMPUS, QUERIES[0])[0]
    table = tmp_path / "cases.csv"
    table.write_text(f'id,path\nfine,{query}\n"{ident}",{query}\n')
    before = listing(tmp_path)
    message = refused(batch(table, tmp_path / "work" / "out"), capsys)
    assert repr(ident) in message and problem in message and "'id' column" in message
    assert listing(tmp_path) == before  # no output folder, nothing beside or above it


def test_ids_that_differ_only_in_case_are_refused(tmp_path, capsys, no_model):
    queries = tmp_path / "queries"
    queries.mkdir()
    for name in ("Case1", "case1"):
        (queries / f"{name}.nii.gz").symlink_to(case_paths(HIPPOCAMPUS, QUERIES[0])[0])
    message = refused(batch(queries, tmp_path / "out"), capsys)
    assert "'Case1' and 'case1'" in message and "Rename one of them" in message
    assert not (tmp_path / "out").exists()


def test_an_unknown_segment_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "q.nii.gz").symlink_to(case_paths(HIPPOCAMPUS, QUERIES[0])[0])
    message = refused(batch(queries, tmp_path / "out", "--segments", "Label 1", "amygdala"), capsys)
    assert "No support has the segment 'amygdala'. The supports have: 1 (Label 1), 2 (Label 2)" in message
    assert not (tmp_path / "out").exists()


@pytest.fixture
def cohort(tmp_path_factory):
    return finished_cohort(tmp_path_factory)


def test_the_summary_records_the_supports_by_content_and_the_settings_that_change_the_masks(cohort):
    _, output_dir, _, _ = cohort
    run = json.loads((output_dir / "summary.json").read_text())["run"]
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    assert run["supports"] == [
        {"image": str(image), "image_sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
         "labels": str(labels), "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest()}
    ]  # fmt: skip
    assert run["settings"] == {
        "model": "sam2.1-tiny", "checkpoint": None, "random_weights": True, "image_size": TEST_IMAGE_SIZE,
        "top_k": 3, "slice_axis": "auto", "normalization": "percentile", "percentiles": [0.5, 99.5],
        "window": None, "segments": [], "format": ".nii.gz",
    }  # fmt: skip


def other_support() -> list[str]:
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_003")
    return ["--support", str(image), str(labels)]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--top-k", "5"], "top_k 3 (now 5)"),
        (["--normalization", "window", "--window", "40", "400"], 'normalization "percentile" (now "window")'),
        (["--segments", "1"], 'segments [] (now ["1"])'),
        (other_support, "other supports (files or content)"),
    ],
)
def test_a_rerun_with_other_supports_or_settings_is_refused_and_changes_nothing(
    cohort, tmp_path, capsys, extra, expected
):
    queries, finished, _, _ = cohort
    output_dir = tmp_path / "out"
    shutil.copytree(finished, output_dir)
    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    extra = extra() if callable(extra) else extra
    message = refused([*batch_args(queries, output_dir), *extra], capsys)
    assert f"{output_dir} holds 3 outputs ({', '.join(f'{q}.nii.gz' for q in QUERIES)}) of an earlier run" in message
    assert expected in message and "Pass --overwrite to segment every case again" in message
    assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before


def test_outputs_no_summary_describes_are_refused_and_overwrite_redoes_them_with_this_runs_settings(
    cohort, tmp_path, capsys
):
    _, finished, _, _ = cohort
    queries = query_folder(tmp_path / "q", QUERIES[:1])
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copy(finished / f"{QUERIES[0]}.nii.gz", output_dir)
    message = refused(batch_args(queries, output_dir, "--top-k", "5"), capsys)
    assert "that no summary.json of this FateSAM describes" in message and "--overwrite" in message
    assert [path.name for path in output_dir.iterdir()] == [f"{QUERIES[0]}.nii.gz"]

    assert main(batch_args(queries, output_dir, "--top-k", "5", "--overwrite")) == 0
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 0} and summary["run"]["settings"]["top_k"] == 5
    assert main(batch_args(queries, output_dir, "--top-k", "5")) == 0  # the same run again: a resume, all skipped
    assert json.loads((output_dir / "summary.json").read_text())["counts"]["skipped"] == 1


def test_an_earlier_summary_nested_too_deep_is_taken_as_no_summary(cohort, tmp_path, capsys):
    _, finished, _, _ = cohort
    queries = query_folder(tmp_path / "q", QUERIES[:1])
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copy(finished / f"{QUERIES[0]}.nii.gz", output_dir)
    (output_dir / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    message = refused(batch_args(queries, output_dir), capsys)
    assert "that no summary.json of this FateSAM describes" in message and "--overwrite" in message
    assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before
