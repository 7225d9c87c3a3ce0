"""The one atomic write: folders it creates for outputs are removed again when nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from FateSAMLib.errors import Cancelled
from FateSAMLib.io.atomic import OutputFiles


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
