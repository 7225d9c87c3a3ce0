"""Whole Slicer runs without Qt, with the real engine (SAM2 with random weights) in a separate process: they succeed,
fail or are cancelled, and leave the scene and the temporary folder as they should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from engine_needed import needs_engine
from scene_helpers import (
    oblique_geometry,
    scene_fixture,  # noqa: F401 (a fixture)
    scene_snapshot,
    supports_fixture,  # noqa: F401 (a fixture)
)
from test_slicer_process import launched_worker, running, write_launcher

from FateSAMLib.errors import Cancelled, InputError, ModelError
from FateSAMLib.options import RunSettings
from FateSAMLib.segments import Segment
from FateSAMLib.slicer.plan import SupportPair
from FateSAMLib.slicer.run import SegmentationRun
from FateSAMLib.slicer.scene import (
    add_to_scene,
    array_to_volume,
    label_array_to_segmentation,
    segment_infos,
    segmentation_to_label_array,
)

REPO = Path(__file__).resolve().parents[2]
FAST = RunSettings(random_weights=True, image_size=128, device="cpu")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Run folders go into tmp_path (as with TMPDIR), so that tests see only their own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_bad_options_are_refused_before_anything_is_exported(scene, supports, private_tmp):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    for options, message in (({"top_k": 0}, "--top-k"), ({"window": (40, 400)}, "only with --normalization window")):
        with pytest.raises(InputError, match=message):  # as FateSAMLogic.createRun(..., **options) builds a run
            SegmentationRun(scene, target, pairs, options=RunSettings(**options)).start()
    assert list(private_tmp.iterdir()) == []


# Whole runs with the real engine in a separate process.


def small_supports(scene):
    """Two supports and a target with a bright ball and box, small enough for a CPU run in seconds."""
    segments = (Segment(1, "Ball", (0.9, 0.2, 0.2)), Segment(2, "Box", (0.2, 0.5, 0.9)))
    shape = (3, 32, 32)  # one labelled slice per support: five slice encodings in all
    k, j, i = np.indices(shape)
    labels = np.where((j - 12) ** 2 + (i - 12) ** 2 < 30, 1, np.where((abs(j - 22) < 4) & (abs(i - 22) < 4), 2, 0))
    labels[[0, -1]] = 0
    labels = labels.astype(np.uint8)
    geometries = [
        oblique_geometry((1.0, 1.0, 3.0)),
        oblique_geometry((1.1, 1.1, 2.5), angles=(0, 0, 40)),
        oblique_geometry((0.9, 0.9, 2.0), angles=(0, 10, 0)),
    ]
    volumes = []
    for index, geometry in enumerate(geometries):
        image = (labels * 400.0 + np.random.default_rng(index).normal(100, 10, shape)).astype(np.int16)
        volumes.append(add_to_scene(scene, array_to_volume(image, geometry, "target" if index == 2 else f"v{index}")))
    pairs = [
        SupportPair(volume, add_to_scene(scene, label_array_to_segmentation(labels, geometry, segments, f"s{index}")))
        for index, (volume, geometry) in enumerate(zip(volumes[:2], geometries[:2], strict=True))
    ]
    return volumes[2], pairs, segments


def finish(run: SegmentationRun, timeout_s: float = 240) -> list:
    events, deadline = [], time.monotonic() + timeout_s
    while not run.finished:
        assert time.monotonic() < deadline, "the run did not end in time"
        events += run.poll()
        time.sleep(0.05)
    return events


def succeeded(run: SegmentationRun) -> SegmentationRun:
    """``run`` started and followed to its end, which must be a success."""
    run.start()
    finish(run)
    assert run.state == "succeeded", run.error
    return run


@needs_engine
def test_a_whole_run_imports_a_named_coloured_result_and_cleans_up(scene):
    target, pairs, segments = small_supports(scene)
    before = {node_id for node_id, *_ in scene_snapshot(scene)}
    run = SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable)
    run.start()
    folder = run.folder
    assert folder.is_dir() and run.state == "running"
    events = finish(run)
    assert run.state == "succeeded", run.error
    assert not folder.exists()
    assert any(event.kind == "progress" for event in events) and run.fraction == 1.0
    assert any("RANDOM WEIGHTS" in warning for warning in run.warnings)
    result = run.result
    assert result.GetName() == "target FateSAM" and scene.IsNodePresent(result)
    assert [(i.name, i.color) for i in segment_infos(result)] == [(s.name, s.color) for s in segments]
    labels = segmentation_to_label_array(result, target, {i.segment_id: 1 for i in segment_infos(result)})
    assert labels.shape == (3, 32, 32)
    added = [scene.GetNodeByID(node_id) for node_id, *_ in scene_snapshot(scene) if node_id not in before]
    assert [node.GetID() for node in added if node.IsA("vtkMRMLSegmentationNode")] == [result.GetID()]
    scores = [doubtful.certainty for doubtful in run.doubtful_slices]
    assert scores and scores == sorted(scores)
    assert {label for doubtful in run.doubtful_slices for label in doubtful.labels} <= {"Ball", "Box"}


@needs_engine
def test_an_engine_error_leaves_the_scene_unchanged(scene):
    target, pairs, _ = small_supports(scene)
    before = scene_snapshot(scene)
    options = RunSettings(model="sam9-huge", random_weights=True)
    run = SegmentationRun(scene, target, pairs, options=options, python=sys.executable)
    run.start()
    folder = run.folder
    finish(run)
    assert run.state == "failed" and isinstance(run.error, ModelError)
    assert "sam2.1-tiny" in str(run.error)  # the message names the valid models
    assert scene_snapshot(scene) == before and not folder.exists()
    with pytest.raises(RuntimeError, match="starts once"):
        run.start()


@needs_engine
def test_cancel_ends_the_engine_and_leaves_the_scene_unchanged(scene):
    target, pairs, _ = small_supports(scene)
    before = scene_snapshot(scene)
    run = SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable)
    run.start()
    folder = run.folder
    run.cancel()
    finish(run, timeout_s=30)
    assert run.state == "cancelled" and isinstance(run.error, Cancelled)
    assert scene_snapshot(scene) == before and not folder.exists()
    with pytest.raises(Cancelled):
        run.run_blocking()


def test_input_errors_are_raised_at_start_and_leave_nothing(scene, supports):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    run = SegmentationRun(scene, target, pairs, segment_names=["Heart"], python=sys.executable)
    with pytest.raises(InputError, match="Heart"):
        run.start()
    assert run.state == "ready" and run.folder is None


def wait_for_progress(run: SegmentationRun, timeout_s: float = 120) -> None:
    """Poll until the engine has reported progress: it is then mid-run."""
    deadline = time.monotonic() + timeout_s
    while not any(event.kind == "progress" for event in run.poll()):
        assert time.monotonic() < deadline and not run.finished, "the engine reported no progress"
        time.sleep(0.05)


@needs_engine
def test_stop_mid_run_ends_the_engine_and_removes_the_folder(scene, private_tmp):
    """What the module does when it is closed, or the scene is, during a run."""
    target, pairs, _ = small_supports(scene)
    before = scene_snapshot(scene)
    run = SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable)
    run.start()
    folder, process = run.folder, run.process
    wait_for_progress(run)
    started = time.monotonic()
    run.stop(timeout_s=10)
    assert time.monotonic() - started < 12
    assert run.state == "cancelled" and isinstance(run.error, Cancelled) and run.poll() == []
    assert process.returncode is not None and not running(process.pid)
    assert not folder.exists() and list(private_tmp.iterdir()) == []
    assert scene_snapshot(scene) == before
    run.stop()  # a second stop (e.g. module cleanup after scene close) does nothing


SLOW_TO_STOP_ENGINE = """
import json, pathlib, signal, sys, time
output = pathlib.Path(sys.argv[sys.argv.index("--output") + 1])
def stop(signum, frame):  # the slice being segmented ends a second later, and is written into the run folder
    time.sleep(1.0)
    output.parent.mkdir(exist_ok=True)
    output.with_name("slice.partial").write_text("written after the cancel")
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
print(json.dumps({"event": "progress", "fraction": 0.1, "message": "Segmenting slice 1/3"}), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="the launcher is a POSIX script")
def test_stop_removes_the_folder_only_once_launcher_and_engine_have_ended(scene, private_tmp):
    """PythonSlicer starts the engine as its child (here in a session of its own): stop ends both, waits for the
    engine to finish writing, and only then removes the run folder."""
    pytest.importorskip("psutil", reason="without psutil (before the installation) the launcher's group is ended")
    engine = private_tmp / "engine.py"
    engine.write_text(SLOW_TO_STOP_ENGINE)
    target, pairs, _ = small_supports(scene)
    run = SegmentationRun(scene, target, pairs, options=FAST, python=write_launcher(private_tmp, engine))
    run.start()
    folder, launcher_pid = run.folder, run.process.pid
    engine_pid = launched_worker(launcher_pid)
    wait_for_progress(run)
    run.stop(timeout_s=10)
    assert run.state == "cancelled" and not running(launcher_pid) and not running(engine_pid)
    assert not folder.exists()  # the engine's last write went in before the folder was removed, not after


EXIT_DURING_A_RUN = """
import json, sys
from test_slicer_run import FAST, small_supports
from FateSAMLib.slicer.scene import register_segmentation_converters
from FateSAMLib.slicer.run import SegmentationRun
from scene_helpers import slicer
register_segmentation_converters()
scene = slicer.vtkMRMLScene()
target, pairs, _ = small_supports(scene)
run = SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable)
run.start()
print(json.dumps({"folder": str(run.folder), "pid": run.process.pid}), flush=True)
"""  # then Python exits with the run going, as Slicer does when closed


@needs_engine
def test_exiting_during_a_run_ends_the_engine_and_removes_the_folder(tmp_path):
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    testing = REPO / "Testing"
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(testing), str(testing / "slicer_adapter"), environment.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, "-c", EXIT_DURING_A_RUN], env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    started = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(started["folder"]).parent == tmp_path
    assert not Path(started["folder"]).exists() and list(tmp_path.iterdir()) == []
    assert not running(started["pid"])
