"""``fatesam batch`` refuses, before any work (exit 1, one message, nothing written), what it could not do right:
ids that are no plain file name, unknown segments, DICOM SEG it could not write, and a resume with other supports
or settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cohort_helpers import QUERIES, support_args
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.cli.main import main


def refused(args: list[str], capsys) -> str:
    """Run ``fatesam`` (its model cannot load: see the ``no_model`` fixture); the one error line it printed."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "download" not in err.lower()  # refused before the model was loaded
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
