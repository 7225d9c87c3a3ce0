"""A Slicer run without Qt: segment planning by name, export to a temporary folder, import of the result, and
whole runs of the real engine (SAM2 with random weights) that succeed, fail or are cancelled."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scene_helpers import KIDNEY, LIVER, SPLEEN, make_case, oblique_geometry, scene_snapshot, slicer, vtk_matrix
from test_segments import SAME_NAMES
from test_slicer_process import running

from FateSAMLib.errors import Cancelled, InputError, ModelError
from FateSAMLib.io.images import read_image
from FateSAMLib.io.labels import read_label_map, read_labels
from FateSAMLib.options import RunSettings
from FateSAMLib.segments import Segment
from FateSAMLib.slicer.apply_result import KeptSegments
from FateSAMLib.slicer.run import (
    DoubtfulSlice,
    RunFolder,
    SegmentationRun,
    SupportPair,
    display_result,
    export_inputs,
    import_result,
    jump_to,
    plan_segments,
    read_doubtful_slices,
    segment_names,
    stop_all_runs,
)
from FateSAMLib.slicer.scene import (
    add_to_scene,
    array_to_volume,
    label_array_to_segmentation,
    register_segmentation_converters,
    save_segmentation,
    segment_infos,
    segmentation_to_label_array,
)

REPO = Path(__file__).resolve().parents[2]

TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^"
)
FAST = RunSettings(random_weights=True, image_size=128, device="cpu")


@pytest.fixture
def scene():
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture
def supports(scene):
    """Two supports whose segment names differ in case and in which segments they have."""
    first = make_case(scene, "A", segments=(LIVER, SPLEEN))
    lower_spleen = Segment(SPLEEN.value, "spleen", (0.0, 1.0, 0.0))
    geometry = oblique_geometry(angles=(5, 0, -20))
    second = make_case(scene, "B", shape=(8, 12, 10), geometry=geometry, seed=1, segments=(lower_spleen, KIDNEY))
    second[1].GetSegmentation().GetNthSegment(0).SetTerminology(TERMINOLOGY)
    return [SupportPair(first[0], first[1]), SupportPair(second[0], second[1])], [first[2], second[2]]


def label_values(seg_nrrd) -> dict[str, int]:
    slicerio = pytest.importorskip("slicerio")
    return {segment["name"]: segment["labelValue"] for segment in slicerio.read_segmentation(str(seg_nrrd))["segments"]}


def test_segment_names_and_plan_match_names_case_insensitively(supports):
    pairs, _ = supports
    assert segment_names([pair.segmentation for pair in pairs]) == ["Liver", "Spleen", "Left kidney"]
    planned = plan_segments(pairs)
    assert planned == [
        Segment(1, "Liver", LIVER.color),
        Segment(2, "Spleen", SPLEEN.color),
        Segment(3, "Left kidney", KIDNEY.color),
    ]
    assert [s.name for s in plan_segments(pairs, ["LEFT KIDNEY", "spleen"])] == ["Left kidney", "Spleen"]
    with pytest.raises(InputError, match="No support has a segment named 'Heart'.*Liver, Spleen, Left kidney"):
        plan_segments(pairs, ["Heart"])
    with pytest.raises(InputError, match="at least one segment"):
        plan_segments(pairs, [])


def test_names_match_by_the_rule_of_the_command_line(scene, tmp_path):
    """The spellings the command line takes for one structure (Testing/test_segments.py) are one segment here too."""
    livers, strasses = SAME_NAMES
    pairs = []
    for index, names in enumerate(zip(livers, strasses, strict=True)):
        segments = (Segment(LIVER.value, names[0], LIVER.color), Segment(SPLEEN.value, names[1], SPLEEN.color))
        volume, segmentation, _ = make_case(scene, f"S{index}", segments=segments, seed=index)
        pairs.append(SupportPair(volume, segmentation))
    assert segment_names([pair.segmentation for pair in pairs]) == ["Liver", "Straße"]
    for wanted in (*livers, *strasses):
        assert len(plan_segments(pairs, [wanted])) == 1
    assert [s.name for s in plan_segments(pairs, ["STRASSE", " LIVER "])] == ["Straße", "Liver"]
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs))
    read = [[(s.value, s.name) for s in read_labels(labels)[1]] for _, labels in inputs.supports]
    assert read == [[(1, "Liver"), (2, "Straße")]] * len(livers)  # as the engine reads them


def test_export_assigns_label_values_by_name_and_leaves_the_scene_alone(scene, supports, tmp_path):
    pairs, labels = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), oblique_geometry(), "target"))
    before = scene_snapshot(scene)
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs))
    assert scene_snapshot(scene) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "query.nrrd",
        "support-1.nrrd",
        "support-1.seg.nrrd",
        "support-2.nrrd",
        "support-2.seg.nrrd",
    ]
    assert label_values(inputs.supports[0][1]) == {"Liver": 1, "Spleen": 2}
    assert label_values(inputs.supports[1][1]) == {"Spleen": 2, "Left kidney": 3}  # "spleen" joins "Spleen"
    slicerio = pytest.importorskip("slicerio")
    second = slicerio.read_segmentation(str(inputs.supports[1][1]))["voxels"].transpose(2, 1, 0)
    expected = np.select([labels[1] == SPLEEN.value, labels[1] == KIDNEY.value], [2, 3], 0)
    np.testing.assert_array_equal(second, expected)
    assert (inputs.output.parent, inputs.stats.parent) == (tmp_path, tmp_path) and not inputs.output.exists()
    # The engine reads the exported pair back as the same labels, named, on the support image's grid.
    image, segments = read_label_map(inputs.supports[1][1], read_image(inputs.supports[1][0]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    assert [(segment.value, segment.name) for segment in segments] == [(2, "Spleen"), (3, "Left kidney")]


def test_a_support_without_the_chosen_segments_is_left_out(scene, supports, tmp_path):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    inputs = export_inputs(tmp_path, target, pairs, plan_segments(pairs, ["Liver"]))
    assert len(inputs.supports) == 1 and "none of the chosen segments" in inputs.warnings[0]
    empty = pairs[0].segmentation.GetSegmentation().AddEmptySegment("", "Heart")
    assert empty
    planned = plan_segments(pairs, ["Liver", "Heart"])
    inputs = export_inputs(tmp_path / "empty", target, pairs, planned)
    assert label_values(inputs.supports[0][1]) == {"Liver": 1}  # an empty segment is not exported
    with pytest.raises(InputError, match="None of the supports"):
        export_inputs(tmp_path / "only-empty", target, pairs, plan_segments(pairs, ["Heart"]))
    with pytest.raises(InputError, match="None of the supports"):
        export_inputs(tmp_path / "x", target, pairs, [Segment(1, "Heart", (1, 0, 0))])
    with pytest.raises(InputError, match="No support"):
        export_inputs(tmp_path, target, [], plan_segments(pairs))


def test_doubtful_slices_are_converted_to_ras_and_sorted(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(
        json.dumps(
            {
                "doubtful_slices": [
                    {"slice_index": 7, "axis": "axial", "center_lps": [1, 2, 3], "certainty": 0.6, "labels": ["Liver"]},
                    {"slice_index": 2, "axis": "axial", "center_lps": [-4, 5, -6], "certainty": 0.1, "labels": []},
                ]
            }
        )
    )
    slices = read_doubtful_slices(stats)
    assert [s.slice_index for s in slices] == [2, 7]
    assert slices[0].center_ras == (4.0, -5.0, -6.0) and slices[1].center_ras == (-1.0, -2.0, 3.0)
    assert slices[1].labels == ("Liver",)
    assert read_doubtful_slices(tmp_path / "missing.json") == []
    stats.write_text(json.dumps({"doubtful_slices": [{"slice_index": 1}]}))
    with pytest.raises(InputError, match="malformed"):
        read_doubtful_slices(stats)


def result_file(tmp_path, target_shape, geometry):
    """A result .seg.nrrd on the target grid, as the engine writes it (names and colours, values 1 and 2)."""
    labels = np.zeros(target_shape, np.uint8)
    labels[1:3, 2:5, 2:6] = 1
    labels[3:5, 5:8, 1:4] = 2
    segments = [Segment(1, "Liver", LIVER.color), Segment(2, "Spleen", SPLEEN.color)]
    node = label_array_to_segmentation(labels, geometry, segments, "r")
    return save_segmentation(node, tmp_path / "result.seg.nrrd"), labels


def test_import_creates_a_new_named_node_with_terminology_on_the_target(scene, supports, tmp_path):
    pairs, _ = supports
    geometry = oblique_geometry()
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), geometry, "target"))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    target.SetAndObserveTransformNodeID(transform.GetID())
    path, labels = result_file(tmp_path, (6, 9, 8), geometry)
    first = import_result(scene, path, target, terminologies={"SPLEEN": TERMINOLOGY})
    second = import_result(scene, path, target)
    assert first.GetName() == "target FateSAM" and second.GetName() != first.GetName()
    infos = segment_infos(first)
    assert [(i.name, i.color) for i in infos] == [("Liver", LIVER.color), ("Spleen", SPLEEN.color)]
    assert infos[1].terminology == TERMINOLOGY and infos[0].terminology != TERMINOLOGY
    assert first.GetNodeReference(first.GetReferenceImageGeometryReferenceRole()) is target
    assert first.GetTransformNodeID() == transform.GetID()
    values = {info.segment_id: index for index, info in enumerate(infos, start=1)}
    np.testing.assert_array_equal(segmentation_to_label_array(first, target, values), labels)


def test_import_into_a_picked_node_replaces_its_segments_with_consent(scene, supports, tmp_path):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), np.eye(4), "target"))
    picked = pairs[0].segmentation
    count = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    path, _ = result_file(tmp_path, (6, 9, 8), np.eye(4))
    keeping = KeptSegments(replace_edited=True)  # the picked node's segments are the user's: replaced if consented
    assert import_result(scene, path, target, output_node=picked, keeping=keeping) is picked
    assert [info.name for info in segment_infos(picked)] == ["Liver", "Spleen"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    scene.RemoveNode(target)
    with pytest.raises(InputError, match="removed from the scene"):
        import_result(scene, path, target)


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
    leftover = RunFolder()
    (leftover.path / "query.nrrd").write_text("patient data")
    stop_all_runs()
    assert not leftover.path.exists() and list(private_tmp.iterdir()) == []


def test_bad_options_are_refused_before_anything_is_exported(scene, supports, private_tmp):
    pairs, _ = supports
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), np.eye(4), "target"))
    for options, message in (({"top_k": 0}, "--top-k"), ({"window": (40, 400)}, "only with --normalization window")):
        with pytest.raises(InputError, match=message):  # as FateSAMLogic.createRun(..., **options) builds a run
            SegmentationRun(scene, target, pairs, options=RunSettings(**options)).start()
    assert list(private_tmp.iterdir()) == []


def test_jump_to_a_doubtful_slice_goes_through_the_targets_transform(scene):
    target = add_to_scene(scene, array_to_volume(np.zeros((4, 5, 6), np.int16), oblique_geometry(), "target"))
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetLayoutName("Red")
    matrix = oblique_geometry((1, 1, 1), (25.0, -40.0, 12.5), (0, 30, 90))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    transform.SetMatrixTransformToParent(vtk_matrix(matrix))
    target.SetAndObserveTransformNodeID(transform.GetID())
    doubtful = DoubtfulSlice(2, "axial", (3.0, -4.0, 5.0), 0.1, ("Liver",))
    expected = (matrix @ np.array([*doubtful.center_ras, 1.0]))[:3]
    np.testing.assert_allclose(jump_to(scene, target, doubtful.center_ras), expected, atol=1e-9)
    slice_to_ras = slice_node.GetSliceToRAS()
    np.testing.assert_allclose([slice_to_ras.GetElement(row, 3) for row in range(3)], expected, atol=1e-6)


def test_showing_the_result_never_raises_and_keeps_it(scene, tmp_path):
    target = add_to_scene(scene, array_to_volume(np.zeros((6, 9, 8), np.int16), np.eye(4), "target"))
    path, _ = result_file(tmp_path, (6, 9, 8), np.eye(4))
    shown = import_result(scene, path, target)
    assert display_result(shown) == []
    assert shown.GetDisplayNode().GetVisibility() and shown.GetSegmentation().ContainsRepresentation("Closed surface")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    surface_rule = next(
        rule
        for rule in factory.GetConverterRules()
        if rule.GetClassName() == "vtkBinaryLabelmapToClosedSurfaceConversionRule"
    )
    factory.UnregisterConverterRule(surface_rule)  # a 3D surface that cannot be built
    try:
        unshown = import_result(scene, path, target)
        warnings = display_result(unshown)
    finally:
        register_segmentation_converters()
    assert len(warnings) == 1 and "its 3D surface could not be built" in warnings[0]
    assert f"'{unshown.GetName()}' was imported" in warnings[0] and scene.IsNodePresent(unshown)
    assert [info.name for info in segment_infos(unshown)] == ["Liver", "Spleen"]
    orphan = slicer.vtkMRMLSegmentationNode()  # e.g. the scene was closed meanwhile
    assert "no display node" in display_result(orphan)[0]


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
