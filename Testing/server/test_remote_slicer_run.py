"""The Slicer module's remote run (Qt-free logic, real MRML scene) against a real server: result, cancel and a
refine of an edited result."""

from __future__ import annotations

import time

import numpy as np
import pytest
from server_helpers import TOKEN, running_server, wait_for

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is needed for scene tests")

from FateSAMLib.errors import InputError  # noqa: E402
from FateSAMLib.options import RunSettings  # noqa: E402
from FateSAMLib.segments import Segment  # noqa: E402
from FateSAMLib.server.users import SINGLE_USER  # noqa: E402
from FateSAMLib.slicer.plan import SupportPair  # noqa: E402
from FateSAMLib.slicer.remote_run import RemoteRefineRun, RemoteSegmentationRun  # noqa: E402
from FateSAMLib.slicer.review import ReviewSession, slice_array_axis  # noqa: E402
from FateSAMLib.slicer.scene import (  # noqa: E402
    add_to_scene,
    array_to_volume,
    ijk_to_ras,
    label_array_to_segmentation,
    register_segmentation_converters,
    replace_segments,
    segment_infos,
    segmentation_to_label_array,
)

SEGMENTS = (Segment(1, "Ball", (0.9, 0.2, 0.2)), Segment(2, "Box", (0.2, 0.5, 0.9)))


def scene_with_supports(slices: int = 3):
    """A scene with a target and one support (a bright ball and box), small enough for seconds on a CPU."""
    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    shape = (slices, 32, 32)
    _, j, i = np.indices(shape)
    labels = np.where((j - 12) ** 2 + (i - 12) ** 2 < 30, 1, np.where((abs(j - 22) < 4) & (abs(i - 22) < 4), 2, 0))
    labels[[0, -1]] = 0
    geometry = np.diag([1.0, 1.0, 3.0, 1.0])
    volumes = [
        add_to_scene(scene, array_to_volume((labels * 400.0 + 100).astype(np.int16), geometry, name))
        for name in ("support", "target")
    ]
    segmentation = label_array_to_segmentation(labels.astype(np.uint8), geometry, list(SEGMENTS), "support labels")
    return scene, volumes[1], [SupportPair(volumes[0], add_to_scene(scene, segmentation))]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_server(work_dir=tmp_path_factory.mktemp("server")) as server:
        yield server


def test_a_remote_run_imports_the_servers_result_and_leaves_no_folder(served):
    scene, target, supports = scene_with_supports()
    run = RemoteSegmentationRun(scene, target, supports, served.url, TOKEN, options=RunSettings(top_k=2))
    run.start()
    folder = run.folder
    wait_for(lambda: run.poll() is not None and run.finished, 240, "the remote run", interval_s=0.05)
    assert run.state == "succeeded", run.error
    assert not folder.exists() and run.fraction == 1.0 and run.process is None
    assert [(info.name, info.color) for info in segment_infos(run.result)] == [(s.name, s.color) for s in SEGMENTS]
    assert run.result.GetName() == "target FateSAM" and any("RANDOM WEIGHTS" in w for w in run.warnings)
    assert run.doubtful_slices and len(served.service.store) == 1
    assert served.service.queue.counts() == {}  # the downloaded job was deleted from the server


def test_cancel_stops_the_job_on_the_server_and_leaves_the_scene_unchanged(served):
    scene, target, supports = scene_with_supports(slices=16)
    nodes = scene.GetNumberOfNodes()
    run = RemoteSegmentationRun(scene, target, supports, served.url, TOKEN, interval_s=0.1)
    run.start()
    wait_for(lambda: run.poll() is not None and "Segmenting slice" in run.message, 240, "the job to segment")
    job_id = run._job.job_id
    run.cancel()
    started = time.monotonic()
    wait_for(lambda: run.poll() is not None and run.finished, 30, "the cancel")
    assert run.state == "cancelled" and time.monotonic() - started < 15
    assert served.service.queue.get(job_id, SINGLE_USER).state == "cancelled"
    assert scene.GetNumberOfNodes() == nodes and run.result is None


def test_a_bad_server_address_or_token_fails_cleanly(served):
    scene, target, supports = scene_with_supports()
    with pytest.raises(InputError, match="not an http"):
        RemoteSegmentationRun(scene, target, supports, "gpu-box:8765", TOKEN)
    run = RemoteSegmentationRun(scene, target, supports, served.url, "wrong")
    run.start()
    wait_for(lambda: run.poll() is not None and run.finished, 30, "the refusal")
    assert run.state == "failed" and "Check the token" in str(run.error) and run.folder is None


def labels_of(result, target) -> np.ndarray:
    """The result as a label array on the target's grid, valued as SEGMENTS by name."""
    values = {segment.name: segment.value for segment in SEGMENTS}
    return segmentation_to_label_array(result, target, {i.segment_id: values[i.name] for i in segment_infos(result)})


def test_a_remote_refine_keeps_the_edited_slice_and_encodes_nothing_on_the_server(served):
    scene, target, supports = scene_with_supports()
    session = ReviewSession()
    try:
        first = RemoteSegmentationRun(scene, target, supports, served.url, TOKEN, session=session, interval_s=0.05)
        first.start()
        wait_for(lambda: first.poll() is not None and first.finished, 240, "the remote run", interval_s=0.05)
        assert first.state == "succeeded", first.error
        result = first.result
        axis = slice_array_axis(ijk_to_ras(target), first.stats.slice_axis)
        edited = np.moveaxis(labels_of(result, target), axis, 0)  # a view: edits go into the array
        edited[1] = 0
        edited[1, 4:12, 6:14] = 1
        edited = np.moveaxis(edited, 0, axis)
        replace_segments(result, label_array_to_segmentation(edited, ijk_to_ras(target), list(SEGMENTS), "edits"))

        refine = RemoteRefineRun(scene, result, session, served.url, TOKEN, interval_s=0.05)
        assert refine.changes.slices == [1]
        refine.start()
        wait_for(lambda: refine.poll() is not None and refine.finished, 240, "the remote refine", interval_s=0.05)
        assert refine.state == "succeeded", refine.error
        refined = np.moveaxis(labels_of(refine.result, target), axis, 0)
        np.testing.assert_array_equal(refined[1], np.moveaxis(edited, axis, 0)[1])  # kept exactly
        assert refine.stats.corrected_slices == [1] and refine.stats.encoder_passes == 0
        assert not result.GetDisplayNode().GetVisibility() and refine.folder is None
        assert session.changes(refine.result).slices == []  # kept in the session: refine it again
        folder = session.folder
    finally:
        session.close()
    assert not folder.exists()
