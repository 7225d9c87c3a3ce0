"""Progress a person can read: on a terminal (a real pseudo-terminal of 80 columns here) one status line that never
wraps and shows the time left while slices are segmented; in a log file or pipe, plain lines, not one per slice."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import write_small_case

from FateSAMLib.cli.reporting import Reporter

REPO = Path(__file__).resolve().parents[2]
COLUMNS = 80


def run_on_a_terminal(command: list[str], columns: int = COLUMNS) -> tuple[int, str, str]:
    """Run ``command`` with stderr on a new pseudo-terminal ``columns`` wide (stdout a pipe, as with ``> file``);
    (exit code, what the terminal got, stdout)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    process = subprocess.Popen(command, stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, env=environment)
    os.close(terminal)
    received = bytearray()
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    stdout = process.stdout.read().decode()
    return process.wait(timeout=300), received.decode(errors="replace"), stdout


def screen_lines(text: str) -> list[str]:
    """What each rewrite of the status line, and each line, put on the terminal."""
    return [part for part in re.split(r"[\r\n]+", text) if part.strip()]


def test_the_status_line_is_cut_to_the_terminals_width():
    program = (
        "from FateSAMLib.cli.reporting import Reporter; r = Reporter(json_lines=False); "
        "r.progress(0.5, 'Downloading ' + 'x' * 200); r.progress(1.0, 'short'); r.done('out')"
    )
    code, seen, stdout = run_on_a_terminal([sys.executable, "-c", program])
    assert code == 0 and stdout == "out\n"
    lines = screen_lines(seen)
    assert lines[0].startswith("[ 50.0%] Downloading xxx") and len(lines[0]) == COLUMNS - 1
    assert lines[1].rstrip() == "[100.0%] short" and len(lines[1]) == COLUMNS - 1  # the longer line is wiped
    assert seen.count("\n") == 1  # one status line, ended once


def test_segment_on_an_80_column_terminal_never_wraps_and_shows_the_time_left(tmp_path):
    paths = write_small_case(tmp_path)
    command = [sys.executable, "-m", "FateSAMLib.cli", "segment", "--support", str(paths["support"])]
    command += [str(paths["labels"]), "--query", str(paths["query"]), "--output", str(tmp_path / "out.nii.gz")]
    command += ["--random-weights", "--image-size", "64", "--device", "cpu"]
    code, seen, stdout = run_on_a_terminal(command)
    assert code == 0, seen
    assert stdout == f"{tmp_path / 'out.nii.gz'}\n"
    status = [line for line in screen_lines(seen) if line.startswith("[")]  # warnings are whole lines, wrapped
    assert status and all(len(line) < COLUMNS for line in status), [line for line in status if len(line) >= COLUMNS]
    slices = [line for line in status if "Segmenting slice" in line]
    assert slices and all(re.search(r"ETA (--|\d+m\d\ds)", line) for line in slices)
    assert re.search(r"Segmenting slice 5/5, ETA 0m00s", seen)


def test_without_a_terminal_progress_is_plain_lines_and_not_one_per_update():
    stderr = io.StringIO()
    reporter = Reporter(json_lines=False, stderr=stderr, stdout=io.StringIO())
    for k in range(1, 101):
        reporter.progress(k / 100, f"Segmenting slice {k}/100")
    assert "\r" not in stderr.getvalue()
    assert stderr.getvalue().splitlines() == ["[  1.0%] Segmenting slice 1/100", "[100.0%] Segmenting slice 100/100"]
