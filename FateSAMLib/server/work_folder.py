"""The private folder of a running server: everything it receives and computes, and nothing left once it stops.

Each server keeps its uploads, support sets, jobs' results and cached features in one folder of its own,
``fatesam-server-*`` (mode 0700) in a work root (``--work-dir``, default the system's temporary folder), and holds an
exclusive lock on the file ``running.lock`` in it while it runs. It deletes the folder when it stops; a server that
was killed (SIGKILL, a power cut) cannot, so every server removes at its start the folders in its work root that are
its user's and whose lock nobody holds: those of servers that no longer run. A folder is created under a temporary
name and renamed once locked, so that a starting server's folder is never taken for a dead one's. Standard library
only.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import IO

from ..errors import InputError

PREFIX = "fatesam-server-"
STARTING_PREFIX = ".fatesam-server-starting-"
LOCK_NAME = "running.lock"
STARTING_GRACE_S = 60.0
"""A folder still under its temporary name this long after it was made belongs to a server killed while starting."""


def _try_lock(stream: IO[bytes]) -> bool:
    """Take an exclusive lock on the open file ``stream`` without waiting; whether it was free."""
    try:
        if os.name == "nt":  # untested here
            import msvcrt

            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def prepare_root(root: Path | None) -> Path:
    """The work root ``root`` (None: the system's temporary folder), created (0700) when missing; InputError when it
    cannot be created or written."""
    if root is None:
        return Path(tempfile.gettempdir())
    root = Path(root).expanduser()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"Cannot create the work folder {root} ({error.strerror or error}); give --work-dir a folder this user "
            "can create and write."
        ) from None
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise InputError(f"{root} is not a folder this user can write; give --work-dir a folder this user can write.")
    return root


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link) owned by this process's user."""
    try:
        status = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(status.st_mode) and (not hasattr(os, "getuid") or status.st_uid == os.getuid())


def remove_leftovers(root: Path) -> list[Path]:
    """Remove the folders in ``root`` of this user's servers that no longer run; returns them."""
    removed = []
    for entry in root.iterdir():
        starting = entry.name.startswith(STARTING_PREFIX)
        if not (entry.name.startswith(PREFIX) or starting) or not _is_ours(entry):
            continue
        try:
            if starting and time.time() - entry.lstat().st_mtime < STARTING_GRACE_S:
                continue
            lock = open(entry / LOCK_NAME, "rb+")
        except FileNotFoundError:
            if not starting:
                continue  # no lock file: not a folder of this FateSAM's; left as it is
            lock = None
        except OSError:
            continue
        dead = lock is None or _try_lock(lock)
        if lock is not None:
            lock.close()  # before removing: an open file cannot be deleted on Windows
        if dead:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class WorkFolder:
    """This server's private folder in the work root, locked while it runs; :meth:`close` deletes it."""

    def __init__(self, root: Path | None) -> None:
        root = prepare_root(root)
        self.removed = remove_leftovers(root)
        starting = Path(tempfile.mkdtemp(prefix=STARTING_PREFIX, dir=root))  # mode 0700
        self._lock = os.fdopen(os.open(starting / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        if not _try_lock(self._lock):
            raise InputError(f"Cannot lock {starting / LOCK_NAME}; the work folder's file system needs file locks.")
        self.path = root / f"{PREFIX}{starting.name[len(STARTING_PREFIX) :]}"
        starting.rename(self.path)

    def close(self) -> None:
        """Let the lock go, then delete the folder and everything in it."""
        self._lock.close()  # first: an open file cannot be deleted on Windows
        shutil.rmtree(self.path, ignore_errors=True)
