"""Output files all or none: checked before a run, never replacing a file that appeared meanwhile, and a full disk
or an unwritable folder reported as one clear error with nothing left behind."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEGMENTS, oblique_labels
from test_cli import REPO, segment_args

from FateSAMLib.atomic import OutputFiles, check_output_location, json_writer, write_json_atomic
from FateSAMLib.cli.main import main
from FateSAMLib.errors import InputError, ResourceError
from FateSAMLib.io.labels import label_map_writer

WRITERS = {
    "label map": ("out.nii.gz", lambda path: label_map_writer(oblique_labels(), path, SEGMENTS), ".nii.gz"),
    "json": ("stats.json", lambda path: json_writer({"dice": 0.9}), ""),
}


@contextlib.contextmanager
def file_size_limit(limit: int):
    """A real "disk full" for this process: writes beyond ``limit`` bytes fail with EFBIG (SIGXFSZ ignored)."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_handler)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_file_that_appears_before_the_rename_is_kept(kind, tmp_path):
    name, writer, suffix = WRITERS[kind]
    path = tmp_path / name
    write = writer(path)

    def another_run_finishes_first(temporary: Path) -> None:
        write(temporary)
        path.write_bytes(b"the other run's result")

    with pytest.raises(InputError, match="exists; pass --overwrite"):
        with OutputFiles(overwrite=False) as outputs:
            outputs.add(path, another_run_finishes_first, suffix)
    assert path.read_bytes() == b"the other run's result"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_overwrite_replaces_and_files_get_ordinary_permissions(kind, tmp_path):
    name, writer, suffix = WRITERS[kind]
    path = tmp_path / name
    path.write_bytes(b"old")
    ordinary = tmp_path / "ordinary"
    ordinary.touch()  # mode 0666 minus the umask, as any program creates files
    with OutputFiles(overwrite=True) as outputs:
        outputs.add(path, writer(path), suffix)
    assert path.read_bytes() != b"old"
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)


def test_json_is_not_written_over_an_existing_file_unless_asked(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("mine")
    with pytest.raises(InputError, match="exists"):
        write_json_atomic(path, {"a": 1})
    assert path.read_text() == "mine"
    write_json_atomic(path, {"a": float("nan")}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": None}


def test_a_full_disk_leaves_neither_file(tmp_path):
    label_map, stats = tmp_path / "out.nii.gz", tmp_path / "stats.json"
    with pytest.raises(ResourceError, match="Could not write .*stats.json.*free space"):
        with file_size_limit(64 * 1024), OutputFiles(overwrite=False) as outputs:
            outputs.add(label_map, label_map_writer(oblique_labels(), label_map, SEGMENTS), ".nii.gz")
            outputs.add(stats, json_writer({"big": "x" * 1024 * 1024}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "where, expected",
    [
        (lambda tmp: tmp / "a-file" / "out.nii.gz", "is a file, not a folder"),
        (lambda tmp: tmp / "a-file" / "deeper" / "out.nii.gz", "is a file, not a folder"),
        (lambda tmp: tmp, "is a folder"),
        (lambda tmp: Path("/proc/fatesam-out.nii.gz"), "no file can be created in /proc"),
        (lambda tmp: tmp / "a-file", "exists; pass --overwrite"),
    ],
)
def test_unwritable_output_locations_are_refused(where, expected, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(InputError, match=expected):
        check_output_location(where(tmp_path), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # the probe file is gone


@pytest.mark.parametrize(
    "output, stats, expected",
    [
        ("a-file/out.nii.gz", None, "is a file, not a folder"),
        ("out.nii.gz", "a-file/stats.json", "is a file, not a folder"),
        ("folder.nii.gz", None, "is a folder"),
        ("/proc/fatesam.nii.gz", None, "no file can be created in /proc"),
        ("out.nii.gz", "out.nii.gz", "name the same file"),
    ],
)
def test_cli_refuses_unwritable_outputs_before_reading_anything(output, stats, expected, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "folder.nii.gz").mkdir()
    extra = ["--stats-json", str(tmp_path / stats)] if stats else []
    missing_query = tmp_path / "no-such-query.nii.gz"  # never read: the outputs are checked first
    assert main(segment_args(tmp_path / output, query=missing_query, extra=extra)) == 1
    err = capsys.readouterr().err
    assert "fatesam: error:" in err and expected in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder.nii.gz"]


def test_a_full_disk_skips_the_cache_then_fails_the_outputs_cleanly(tmp_path):
    """The whole CLI in a process whose files cannot grow beyond 512 bytes (a real write failure, no mock): the
    feature cache is warned about and skipped, the run goes on, and the outputs fail as one error leaving nothing."""
    output, stats, cache = tmp_path / "out.nii.gz", tmp_path / "stats.json", tmp_path / "cache"

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    extra = ["--stats-json", str(stats), "--feature-cache", str(cache), "--top-k", "1000", "--json-progress"]
    completed = subprocess.run(
        [sys.executable, "-m", "FateSAMLib.cli", *segment_args(output, extra=extra)],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=limit_file_size,
        timeout=600,
    )
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("feature cache" in w and "goes on without it" in w for w in warnings)
    assert any("--top-k 1000 is more than the" in w for w in warnings)
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "ResourceError"
    assert "Could not write" in events[-1]["message"] and "free space" in events[-1]["message"]
    assert list(tmp_path.iterdir()) == []  # the cache folder too: the atomic write removes the folders it made
