"""A command's whole process tree, ended on every platform: the launcher (``PythonSlicer``) and what it started.

``PythonSlicer`` is a launcher that starts the real Python as its child, and that child may start its own (a sam2
build under pip): ending the launcher alone leaves them running, and a process-group signal misses any that runs in a
session or group of its own. With psutil (one of the engine's requirements, installed with it) the tree is every
descendant of the launcher, recorded before it is signalled, and it has ended only once each of them has. Before
psutil is installed (the first installation's pip steps), the launcher's process group stands for the tree on POSIX
(the command runs in a session of its own) and ``taskkill /T`` ends it on Windows.

On POSIX a cancel sends SIGTERM (the engine stops within one slice) and a kill SIGKILL. On Windows both end the
processes at once: a process started without a console (``CREATE_NO_WINDOW``) cannot receive CTRL_BREAK.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
from types import ModuleType


def _psutil() -> ModuleType | None:
    """psutil when it is installed (it may be installed while Slicer runs, by the module's installation)."""
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


class ProcessTree:
    """The processes of one command started by :class:`subprocess.Popen` (a session of its own on POSIX)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        self._members: dict[int, object] = {}  # pid -> psutil.Process, as recorded while the launcher ran

    def record(self) -> int:
        """Add the launcher's current descendants to the tree (psutil only); returns how many processes it has."""
        psutil = _psutil()
        if psutil is None:
            return 0
        try:
            root = psutil.Process(self._process.pid)
            found = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            found = []
        for member in found:
            self._members.setdefault(member.pid, member)
        return len(self._members)

    def signal(self, kill: bool) -> None:
        """Ask every process of the tree to stop (SIGTERM), or end them (``kill``: SIGKILL); never raises."""
        psutil = _psutil()
        if psutil is not None:
            self.record()
            for member in list(self._members.values()):
                try:
                    member.kill() if kill else member.terminate()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass  # it ended in the meantime
            return
        if os.name == "nt":  # no console to send CTRL_BREAK to: end the tree at once (taskkill walks it from the root)
            if self._process.poll() is None:
                command = ["taskkill", "/T", "/F", "/PID", str(self._process.pid)]
                subprocess.run(command, capture_output=True, check=False)
            return
        try:  # the group outlives its launcher while a process of it runs
            os.killpg(self._process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group has ended

    def alive(self) -> bool:
        """Whether the launcher, or a recorded process of its tree, still runs (a zombie does not)."""
        if self._process.poll() is None:
            return True
        psutil = _psutil()
        if psutil is None:
            return False
        for member in self._members.values():
            try:
                if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                    return True
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return False
