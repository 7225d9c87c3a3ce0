"""The private temporary folders of runs, registered so that none outlives the Python process."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_LIVE_FOLDERS: set[Path] = set()


class RunFolder:
    """A temporary folder for one run's files, private to the user (mode 0700), removed by :meth:`remove` (or on
    leaving a ``with`` block), and at the latest when the Python process exits
    (:func:`~FateSAMLib.slicer.run.stop_all_runs`)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="FateSAM-"))  # mkdtemp creates it readable by its owner only
        _LIVE_FOLDERS.add(self.path)

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        _LIVE_FOLDERS.discard(self.path)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def remove_all_folders() -> None:
    """Remove every run folder still there (called by :func:`~FateSAMLib.slicer.run.stop_all_runs` at exit)."""
    for folder in list(_LIVE_FOLDERS):
        shutil.rmtree(folder, ignore_errors=True)
        _LIVE_FOLDERS.discard(folder)
