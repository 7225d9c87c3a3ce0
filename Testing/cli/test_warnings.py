"""One warning channel: the library warns through the ``FateSAMLib`` logger, the command's reporter shows each
warning once (a line on stderr, or one JSON event), and only the warnings of its own command's thread."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import SimpleITK as sitk
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cli.main import main
from FateSAMLib.cli.reporting import Reporter
from FateSAMLib.models.loading import RANDOM_WEIGHTS_WARNING

REPO = Path(__file__).resolve().parents[2]


def short_segment_args(folder: Path, output: Path) -> list[str]:
    """A short run with random weights (warned about): 3 query slices, a support of 4, cropped from real MRIs."""
    (image, labels), (query, _) = case_paths(HIPPOCAMPUS, "hippocampus_001"), case_paths(HIPPOCAMPUS, "hippocampus_004")
    files = []
    for path, slices in ((image, slice(14, 18)), (labels, slice(14, 18)), (query, slice(15, 18))):
        files.append(folder / f"short_{len(files)}.nii.gz")
        sitk.WriteImage(sitk.ReadImage(str(path))[:, :, slices], str(files[-1]))
    args = ["segment", "--support", str(files[0]), str(files[1]), "--query", str(files[2]), "--output", str(output)]
    return args + ["--random-weights", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def test_the_random_weights_warning_is_shown_exactly_once_on_stderr(tmp_path):
    # A process of its own, so that Python's warning display and logging's defaults are those a user gets.
    output = tmp_path / "out.nrrd"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "FateSAMLib.cli", *short_segment_args(tmp_path, output)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.lower().count("random weights") == 1, completed.stderr
    assert f"WARNING: {RANDOM_WEIGHTS_WARNING}\n" in completed.stderr
    assert "Warning:" not in completed.stderr and output.exists()


def test_the_random_weights_warning_is_one_json_event(tmp_path, capsys):
    output = tmp_path / "out.nrrd"
    assert main([*short_segment_args(tmp_path, output), "--json-progress"]) == 0
    out, err = capsys.readouterr()
    warnings = [event for event in map(json.loads, out.splitlines()) if event["event"] == "warning"]
    assert warnings == [{"event": "warning", "message": RANDOM_WEIGHTS_WARNING}]
    assert "random weights" not in err.lower() and output.exists()


def test_a_reporter_shows_the_library_warnings_of_its_own_thread_only():
    logger = logging.getLogger("FateSAMLib.method.engine")
    mine, theirs = io.StringIO(), io.StringIO()
    subscribed, logged = threading.Event(), threading.Event()

    def other_command() -> None:
        with Reporter(json_lines=True, stdout=theirs).library_warnings():
            subscribed.set()
            logged.wait(timeout=10)
            logger.warning("theirs")

    thread = threading.Thread(target=other_command)
    thread.start()
    assert subscribed.wait(timeout=10)
    with Reporter(json_lines=True, stdout=mine).library_warnings():
        logger.warning("mine")
        logged.set()
        thread.join(timeout=10)
    logger.warning("after the command: nobody's")
    assert [json.loads(line)["message"] for line in mine.getvalue().splitlines()] == ["mine"]
    assert [json.loads(line)["message"] for line in theirs.getvalue().splitlines()] == ["theirs"]
