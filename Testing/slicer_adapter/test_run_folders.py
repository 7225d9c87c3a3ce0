"""Run folders: private to the user, removed, and removed at exit at the latest."""

from __future__ import annotations

import os
import stat

from FateSAMLib.slicer.folders import RunFolder
from FateSAMLib.slicer.run import stop_all_runs


def test_run_folder_is_private_to_the_user_and_removed(private_tmp):
    with RunFolder() as folder:
        (folder.path / "file").write_text("x")
        assert folder.path.is_dir() and folder.path.name.startswith("FateSAM-")
        assert folder.path.parent == private_tmp
        if os.name != "nt":
            assert stat.S_IMODE(folder.path.stat().st_mode) == 0o700  # exported patient images: owner only
    assert not folder.path.exists()


def test_folders_left_over_are_removed_by_the_exit_hook(private_tmp):
    leftover = RunFolder()
    (leftover.path / "query.nrrd").write_text("patient data")
    stop_all_runs()
    assert not leftover.path.exists() and list(private_tmp.iterdir()) == []
