"""``fatesam batch`` here: the outputs of ``fatesam segment``, supports encoded once, resume, failures."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from cohort_helpers import FAST, QUERIES, batch_args, finished_cohort, query_folder, read_summary, support_args
from conftest import HIPPOCAMPUS, case_paths, cut_short

from FateSAMLib.cli.main import main
from FateSAMLib.cohort.cases import find_cases
from FateSAMLib.cohort.runner import write_summary


@pytest.fixture
def cohort(tmp_path_factory):
    return finished_cohort(tmp_path_factory)


def test_each_output_equals_fatesam_segment_alone_and_the_supports_are_encoded_once(cohort, tmp_path):
    _, output_dir, code, _ = cohort
    assert code == 0
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    for name in QUERIES:
        alone = tmp_path / f"{name}.nii.gz"
        query = case_paths(HIPPOCAMPUS, name)[0]
        assert main(["segment", *support_args(), "--query", str(query), "--output", str(alone), *FAST]) == 0
        assert (output_dir / f"{name}.nii.gz").read_bytes() == alone.read_bytes()
    encoded = [summary[name]["support_slices_encoded"] for name in QUERIES]
    assert encoded[0] > 0 and encoded[1:] == [0, 0]  # the first case encodes the supports, the others reuse them
    # A support slice's memory is encoded once per worker, for the first case that retrieves it.
    memories = [summary[name]["support_memories_encoded"] for name in QUERIES]
    assert memories[0] > 0 and sum(memories) <= encoded[0]
    for name in QUERIES:
        record = summary[name]
        assert record["encoder_passes"] >= record["support_slices_encoded"] > -1
        assert len(record["doubtful_slices"]) == 10 and set(record["metrics"]) == {"1", "2"}
    assert set(summary["mean"]) == {"1", "2"} and summary["mean"]["1"]["cases"] == 3
    with open(output_dir / "summary.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["id"] for row in rows] == [*QUERIES, "mean"]
    assert float(rows[-1]["dice_1"]) == summary["mean"]["1"]["dice"]


def test_a_rerun_skips_every_case_and_a_deleted_output_is_redone_alone(cohort, tmp_path, capsys):
    _, finished, _, _ = cohort
    output_dir = tmp_path / "out"
    shutil.copytree(finished, output_dir)
    capsys.readouterr()
    assert main(batch_args(query_folder(tmp_path / "q"), output_dir, "--json-progress")) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not any(e["event"] == "warning" for e in events)  # no RANDOM WEIGHTS warning: the model was never loaded
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 0, "skipped": 3, "failed": 0}
    assert summary[QUERIES[0]]["metrics"] == read_summary(finished)[QUERIES[0]]["metrics"]  # kept from the first run

    (output_dir / f"{QUERIES[1]}.nii.gz").unlink()
    assert main(batch_args(tmp_path / "q", output_dir, "--json-progress")) == 0
    cases = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"case"' in line]
    assert [(e["id"], e["status"]) for e in cases] == [(QUERIES[1], "done")]
    assert read_summary(output_dir)["counts"] == {"done": 1, "skipped": 2, "failed": 0}
    redone = (output_dir / f"{QUERIES[1]}.nii.gz").read_bytes()
    assert redone == (finished / f"{QUERIES[1]}.nii.gz").read_bytes()


def test_a_damaged_query_is_recorded_with_its_message_and_the_others_go_on(cohort, tmp_path, capsys):
    _, finished, _, _ = cohort
    damaged = tmp_path / "damaged.nii.gz"
    shutil.copy(case_paths(HIPPOCAMPUS, QUERIES[2])[0], damaged)
    cut_short(damaged, 0.5)
    table = tmp_path / "cases.csv"
    table.write_text(
        "id,path\n"
        + "".join(f"{name},{case_paths(HIPPOCAMPUS, name)[0]}\n" for name in QUERIES[:2])
        + "broken,damaged.nii.gz\n"
    )
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    for name in (f"{QUERIES[0]}.nii.gz", "summary.json"):  # done earlier by the same supports and settings: skipped
        shutil.copy(finished / name, output_dir)
    assert main(batch_args(table, output_dir)) == 1
    assert "broken failed" in capsys.readouterr().err
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 1, "skipped": 1, "failed": 1}
    assert summary["broken"]["status"] == "failed" and "damaged.nii.gz" in summary["broken"]["error"]
    assert "truncated" in summary["broken"]["error"] or "cut short" in summary["broken"]["error"]
    assert not (output_dir / "broken.nii.gz").exists()
    assert (output_dir / f"{QUERIES[1]}.nii.gz").read_bytes() == (finished / f"{QUERIES[1]}.nii.gz").read_bytes()


def test_a_query_name_the_file_system_refuses_is_recorded_as_failed_and_the_others_go_on(cohort, tmp_path, capsys):
    _, finished, _, _ = cohort
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    for name in (f"{QUERIES[0]}.nii.gz", "summary.json"):  # done earlier by the same supports and settings: skipped
        shutil.copy(finished / name, output_dir)
    table = tmp_path / "cases.csv"
    long_name = "x" * 300 + ".nii.gz"  # more than the 255 bytes a file name may have: os.stat fails
    table.write_text(f"id,path\n{QUERIES[0]},{case_paths(HIPPOCAMPUS, QUERIES[0])[0]}\nlong,{long_name}\n")
    assert main(batch_args(table, output_dir)) == 1
    err = capsys.readouterr().err
    assert "long failed" in err and "Traceback" not in err
    summary = read_summary(output_dir)
    assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 1}
    assert "File name too long" in summary["long"]["error"] and long_name in summary["long"]["error"]
    assert sorted(path.name for path in output_dir.iterdir()) == [f"{QUERIES[0]}.nii.gz", "summary.csv", "summary.json"]


def test_the_summary_is_written_when_a_record_names_a_file_in_another_encoding(tmp_path):
    query = os.fsdecode(b"/scans/case\xff.nii.gz")  # as Python names a Latin-1 file name on a UTF-8 system
    error = f"{query}: its file name is not UTF-8; rename it."
    record = {"id": "case\ufffd", "query": query, "status": "failed", "error": error, "seconds": 0.1}
    write_summary(tmp_path, [record])
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["cases"] == [record]
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as stream:
        (row,) = csv.DictReader(stream)
    assert row["id"] == "case\ufffd" and row["error"] == error.replace("\udcff", "\\udcff")


def test_a_query_named_in_another_encoding_gets_an_id_that_is_text_and_keeps_its_path(tmp_path):
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / os.fsdecode(b"case\xff.nii.gz")).write_bytes(b"")
    (case,) = find_cases(folder)
    assert case.id == "case\ufffd" and case.query.exists()  # the reader refuses it, the batch records it


def test_a_query_whose_file_name_is_not_utf8_is_recorded_as_failed_on_every_run_and_the_others_go_on(
    cohort, tmp_path, capsys
):
    _, finished, _, _ = cohort
    queries = query_folder(tmp_path / "q", QUERIES[:1])
    os.symlink(case_paths(HIPPOCAMPUS, QUERIES[1])[0], os.fsencode(queries) + b"/case\xff.nii.gz")  # Latin-1 "ÿ"
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    for name in (f"{QUERIES[0]}.nii.gz", "summary.json"):  # done earlier by the same supports and settings: skipped
        shutil.copy(finished / name, output_dir)
    for _ in range(2):  # a rerun records it again, it does not die at it
        assert main(batch_args(queries, output_dir)) == 1
        err = capsys.readouterr().err
        assert "case\ufffd failed" in err and "not UTF-8" in err and "Traceback" not in err
        summary = read_summary(output_dir)
        assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 1}
        assert "not UTF-8" in summary["case\ufffd"]["error"] and "Rename" in summary["case\ufffd"]["error"]
        assert sorted(p.name for p in output_dir.iterdir()) == [f"{QUERIES[0]}.nii.gz", "summary.csv", "summary.json"]
