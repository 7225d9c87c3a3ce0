"""Run folders: private to the user, removed, and removed at exit at the latest."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from FateSAMLib.slicer.folders import RunFolder


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Run folders go into tmp_path (as with TMPDIR), so that tests see only their own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_run_folder_is_private_to_the_user_and_removed(private_tmp):
    with RunFolder() as folder:
        (folder.path / "file").write_text("x")
        assert folder.path.is_dir() and folder.path.name.startswith("FateSAM-")
        assert folder.path.parent == private_tmp
        if os.name != "nt":
            assert stat.S_IMODE(folder.path.stat().st_mode) == 0o700  # exported patient images: owner only
    assert not folder.path.exists()


def test_folders_left_over_are_removed_by_the_exit_hook(private_tmp):
    run = pytest.importorskip(
        "FateSAMLib.slicer.run", reason="runs need the slicer-core wheel (pip install slicer-core)"
    )
    leftover = RunFolder()
    (leftover.path / "query.nrrd").write_text("patient data")
    run.stop_all_runs()
    assert not leftover.path.exists() and list(private_tmp.iterdir()) == []
