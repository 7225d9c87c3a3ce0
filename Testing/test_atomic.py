"""The one atomic write: folders it creates for outputs are removed again when nothing is published; a staged folder
is published whole, never replacing one that appeared meanwhile unless asked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from FateSAMLib.atomic import OutputFiles, check_outputs, staged_folder, write_file_atomically
from FateSAMLib.errors import Cancelled, InputError


def write_text(path: Path) -> None:
    path.write_text("content")


def test_a_cancelled_run_removes_the_folders_it_created(tmp_path: Path) -> None:
    with pytest.raises(Cancelled), OutputFiles(overwrite=False) as outputs:
        outputs.add(tmp_path / "new" / "deeper" / "a.txt", write_text)
        outputs.add(tmp_path / "new" / "b.txt", write_text)
        raise Cancelled("stopped")
    assert list(tmp_path.iterdir()) == []


def test_a_created_folder_that_gained_other_files_is_kept(tmp_path: Path) -> None:
    with pytest.raises(Cancelled), OutputFiles(overwrite=False) as outputs:
        outputs.add(tmp_path / "new" / "deeper" / "a.txt", write_text)
        (tmp_path / "new" / "someone else's.txt").write_text("theirs")
        raise Cancelled("stopped")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["someone else's.txt"]


def test_a_published_run_keeps_its_folders(tmp_path: Path) -> None:
    with OutputFiles(overwrite=False) as outputs:
        outputs.add(tmp_path / "new" / "a.txt", write_text)
    assert (tmp_path / "new" / "a.txt").read_text() == "content"
    with pytest.raises(Cancelled), OutputFiles(overwrite=False) as outputs:  # a later run did not create it
        outputs.add(tmp_path / "new" / "b.txt", write_text)
        raise Cancelled("stopped")
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.txt"]


def usual_folder_mode(tmp_path: Path) -> int:
    (tmp_path / "ordinary").mkdir()
    return stat.S_IMODE((tmp_path / "ordinary").stat().st_mode)


def test_a_staged_folder_is_published_whole_with_the_usual_mode(tmp_path: Path) -> None:
    with staged_folder(tmp_path / "deeper" / "set") as staging:
        (staging / "a.txt").write_text("a")
        assert not (tmp_path / "deeper" / "set").exists()
    assert (tmp_path / "deeper" / "set" / "a.txt").read_text() == "a"
    assert stat.S_IMODE((tmp_path / "deeper" / "set").stat().st_mode) == usual_folder_mode(tmp_path)
    assert sorted(p.name for p in (tmp_path / "deeper").iterdir()) == ["set"]


def test_a_failed_staged_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Cancelled), staged_folder(tmp_path / "set") as staging:
        (staging / "a.txt").write_text("a")
        raise Cancelled("stopped")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_appears_meanwhile_is_never_replaced_unless_asked(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    with pytest.raises(InputError, match="exists"), staged_folder(folder) as staging:
        (staging / "new.txt").write_text("new")
        folder.mkdir()  # an empty folder too: a plain rename would replace it
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    with pytest.raises(InputError, match="exists"), staged_folder(folder):
        pass
    (folder / "old.txt").write_text("old")
    with staged_folder(folder, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_path_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/r\xe9sultats"))
    for attempt in (
        lambda: check_outputs([folder / "labels.nii.gz"], overwrite=False),
        lambda: write_file_atomically(folder / "labels.nii.gz", lambda target: target.write_text("x")),
    ):
        with pytest.raises(InputError, match=r"r\\xe9sultats/labels.nii.gz: this path is not UTF-8 text"):
            attempt()
    assert list(tmp_path.iterdir()) == []
    write_file_atomically(tmp_path / "résultats_脑" / "labels.txt", lambda target: target.write_text("x"))
    assert (tmp_path / "résultats_脑" / "labels.txt").read_text() == "x"
