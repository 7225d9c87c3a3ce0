"""Review, correct, refine in the Slicer module without Qt: a real run keeps its engine output and fills the session's
feature cache, a slice edited with MRML calls is detected (exactly that one), the refine keeps it exactly and encodes
no slice, and the reviewed case joins the supports of a saved set."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from engine_needed import needs_engine
from scene_helpers import oblique_geometry, slicer
from test_slicer_run import FAST, finish, small_supports, succeeded

from FateSAMLib.errors import InputError
from FateSAMLib.options import SLICE_AXES
from FateSAMLib.segments import Segment
from FateSAMLib.slicer.review import (
    RefineRun,
    ReviewSession,
    changed_slices,
    reviewed_support,
    slice_array_axis,
)
from FateSAMLib.slicer.run import SegmentationRun, stop_all_runs
from FateSAMLib.slicer.scene import (
    BINARY_LABELMAP,
    ijk_to_ras,
    label_array_to_segmentation,
    register_segmentation_converters,
    segment_infos,
    segmentation_to_label_array,
)
from FateSAMLib.slicer.support_set import load_support_set, save_support_set


@pytest.fixture
def scene():
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.mark.parametrize("angles", [(0, 0, 0), (17, -8, 25), (0, 90, 0), (90, 0, 0), (60, 50, 40), (180, 0, 90)])
def test_the_slice_axis_is_the_array_axis_the_engine_slices(angles):
    sitk = pytest.importorskip("SimpleITK", reason="compared with the engine's reading (SimpleITK)")
    from FateSAMLib.io.geometry import anatomical_axes

    matrix = oblique_geometry((0.7, 1.3, 2.9), angles=angles)
    lps = np.diag([-1.0, -1.0, 1.0]) @ matrix[:3, :3]
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in np.linalg.norm(lps, axis=0)])
    image.SetDirection([float(v) for v in (lps / np.linalg.norm(lps, axis=0)).ravel()])
    anatomy, _ = anatomical_axes(image)
    for axis, lps_axis in zip(("sagittal", "coronal", "axial"), range(3), strict=True):
        assert axis in SLICE_AXES
        assert slice_array_axis(matrix, axis) == 2 - anatomy.index(lps_axis)


def test_changed_slices_along_any_axis():
    previous = np.zeros((3, 4, 5), np.uint16)
    for axis, index in itertools.product(range(3), range(3)):
        edited = previous.copy()
        edited[(slice(None),) * axis + (index,)] = 2
        assert changed_slices(edited, previous, axis) == [index]
    assert changed_slices(previous, previous, 1) == []
    with pytest.raises(InputError, match="run Apply again"):
        changed_slices(previous, previous[:2])


def edit_slice(result, target, axis: int, index: int, name: str) -> None:
    """What a reviewer does in Segment Editor: redraw segment ``name`` on one slice (a square), as its effects do."""
    segment_id = next(info.segment_id for info in segment_infos(result) if info.name == name)
    mask = segmentation_to_label_array(result, target, {segment_id: 1})
    where = [slice(None)] * 3
    where[axis] = index
    plane = np.zeros_like(mask[tuple(where)])
    plane[2:9, 3:10] = 1
    mask[tuple(where)] = plane
    drawn = label_array_to_segmentation(mask, ijk_to_ras(target), [Segment(1, name, (1.0, 1.0, 0.0))], "drawn")
    labelmap = drawn.GetSegmentation().GetNthSegment(0).GetRepresentation(BINARY_LABELMAP)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, result, segment_id, logic.MODE_REPLACE)


def labels_of(result, target) -> np.ndarray:
    values = {"Ball": 1, "Box": 2}
    return segmentation_to_label_array(result, target, {i.segment_id: values[i.name] for i in segment_infos(result)})


@needs_engine
def test_refine_keeps_the_edited_slice_and_encodes_nothing(scene, tmp_path):
    target, pairs, segments = small_supports(scene)
    session = ReviewSession()
    try:
        first = succeeded(SegmentationRun(scene, target, pairs, options=FAST, python=sys.executable, session=session))
        assert first.stats.encoder_passes > 0 and any(session.feature_cache.iterdir())
        result = first.result
        unedited = session.changes(result)
        assert unedited.slices == [] and unedited.per_segment == {"Ball": [], "Box": []}
        with pytest.raises(InputError, match="no edited slice"):
            RefineRun(scene, result, session, python=sys.executable)

        axis = slice_array_axis(ijk_to_ras(target), first.stats.slice_axis)
        edit_slice(result, target, axis, 1, "Ball")
        edited = labels_of(result, target)
        changes = session.changes(result)
        assert changes.slices == [1] and changes.per_segment == {"Ball": [1], "Box": []}
        assert changes.summary() == "1 edited slice (Ball: 1, Box: 0)"

        refine = RefineRun(scene, result, session, python=sys.executable)
        assert refine.changes == changes
        refine.start()
        finish(refine)
        assert refine.state == "succeeded", refine.error
        refined = refine.result
        assert refined is not result and scene.IsNodePresent(result)  # a new node; the edited one kept, hidden
        assert not result.GetDisplayNode().GetVisibility()
        assert [info.name for info in segment_infos(refined)] == ["Ball", "Box"]
        new = labels_of(refined, target)
        where = [slice(None)] * 3
        where[axis] = 1
        np.testing.assert_array_equal(new[tuple(where)], edited[tuple(where)])  # kept exactly
        assert refine.stats.encoder_passes == 0  # every feature from the session's cache
        assert refine.stats.corrected_slices == [1]
        assert [c.slice_index for c in refine.stats.confidence if c.corrected] == [1, 1]
        assert all(doubtful.slice_index != 1 for doubtful in refine.doubtful_slices)
        assert session.changes(refined).slices == []  # the refined result is kept too: refine it again

        support = reviewed_support(refined)
        assert (support.volume, support.segmentation) == (target, refined)
        cases = [(pair.volume, pair.segmentation) for pair in pairs] + [(support.volume, support.segmentation)]
        saved = save_support_set(tmp_path / "grown", "Grown", cases)
        loaded_set, loaded = load_support_set(slicer.vtkMRMLScene(), saved.folder)
        assert len(loaded) == 3 and [i.name for i in segment_infos(loaded[2][1])] == ["Ball", "Box"]
        folder = session.folder
    finally:
        session.close()
    assert not folder.exists()


def test_only_results_of_the_session_can_be_refined(scene):
    target, pairs, _ = small_supports(scene)
    session = ReviewSession()
    with pytest.raises(InputError, match="was not made by a FateSAM run in this session"):
        RefineRun(scene, pairs[0].segmentation, session)
    with pytest.raises(InputError, match="no reference volume"):
        reviewed_support(slicer.vtkMRMLSegmentationNode())
    folder = session.folder
    stop_all_runs()  # as when Slicer exits
    assert not folder.exists()
