"""Refining a result from corrected slices: corrected slices kept exactly, the others predicted from them too."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, case_paths
from test_engine import reoriented

from FateSAMLib.errors import InputError
from FateSAMLib.io.geometry import SliceFrame, from_slices, to_slices
from FateSAMLib.method.encoder import FeatureCache
from FateSAMLib.method.engine import EngineOptions, FateSamEngine
from FateSAMLib.method.pipeline import CorrectionInput, load_support, prepare_query, segment_volume

AXIS = "axial"


@pytest.fixture(scope="module")
def cases():
    support = load_support(*case_paths(HIPPOCAMPUS, "hippocampus_001"))
    query = load_support(*case_paths(HIPPOCAMPUS, "hippocampus_004")).image
    return support, query


def redrawn(result: sitk.Image, index: int) -> tuple[sitk.Image, np.ndarray]:
    """``result`` with slice ``index`` (along the run's axis) redrawn by a reviewer, and that slice as drawn."""
    stack = to_slices(sitk.GetArrayFromImage(result), result, AXIS)
    stack[index] = 0
    stack[index, 10:20, 8:18] = 2
    stack[index, 25:30, 5:9] = 1
    image = sitk.GetImageFromArray(from_slices(stack, result, AXIS))
    image.CopyInformation(result)
    return image, stack[index].copy()


def stack_of(image: sitk.Image) -> np.ndarray:
    return to_slices(sitk.GetArrayFromImage(image), image, AXIS)


@pytest.mark.parametrize("turn", [False, True], ids=["as-stored", "permuted-and-flipped"])
def test_corrected_slices_come_back_exactly_as_given(tiny_model, cases, turn):
    support, query = cases
    query = reoriented(query) if turn else query
    engine = FateSamEngine(tiny_model, EngineOptions(encoder_batch_size=4))
    first = segment_volume(engine, [support], prepare_query(query, AXIS))
    corrections, drawn = redrawn(first.labels, 5)
    refined = segment_volume(engine, [support], prepare_query(query, AXIS, CorrectionInput(corrections, [5])))
    np.testing.assert_array_equal(stack_of(refined.labels)[5], drawn)
    assert refined.labels.GetDirection() == query.GetDirection() and refined.labels.GetOrigin() == query.GetOrigin()
    assert refined.stats.corrected_slices == [5]
    assert [c.corrected for c in refined.confidence if c.slice_index == 5] == [True, True]
    assert 5 not in [d.slice_index for d in refined.doubtful_slices]


def test_attending_to_every_corrected_slice_keeps_them_exact_too(tiny_model, cases):
    support, query = cases
    engine = FateSamEngine(tiny_model, EngineOptions(encoder_batch_size=4, corrected_per_side=None))
    first = segment_volume(engine, [support], prepare_query(query, AXIS))
    once, drawn_once = redrawn(first.labels, 5)
    twice, drawn_twice = redrawn(once, 20)
    refined = segment_volume(engine, [support], prepare_query(query, AXIS, CorrectionInput(twice, [5, 20])))
    np.testing.assert_array_equal(stack_of(refined.labels)[5], drawn_once)
    np.testing.assert_array_equal(stack_of(refined.labels)[20], drawn_twice)
    assert refined.stats.corrected_slices == [5, 20]


def test_auto_finds_exactly_the_edited_slices(tiny_model, cases):
    support, query = cases
    engine = FateSamEngine(tiny_model, EngineOptions(encoder_batch_size=4))
    first = segment_volume(engine, [support], prepare_query(query, AXIS))
    unchanged = CorrectionInput(first.labels, slices=None, previous=first.labels)
    assert unchanged.on_stack(query, SliceFrame.of(query, AXIS)) is None  # nothing edited: a plain run
    again = segment_volume(engine, [support], prepare_query(query, AXIS, unchanged))
    assert np.array_equal(sitk.GetArrayFromImage(again.labels), sitk.GetArrayFromImage(first.labels))
    one_edit = CorrectionInput(redrawn(first.labels, 7)[0], slices=None, previous=first.labels)
    assert one_edit.on_stack(query, SliceFrame.of(query, AXIS)).slices == [7]
    with pytest.raises(InputError, match="needs the result the corrections were made on"):
        CorrectionInput(first.labels).on_stack(query, SliceFrame.of(query, AXIS))
    with pytest.raises(InputError, match=r"\[99\] are outside the query's"):
        CorrectionInput(first.labels, slices=[3, 99]).on_stack(query, SliceFrame.of(query, AXIS))


def test_a_refine_run_encodes_no_slice_and_recomputes_the_corrected_slices_neighbours(tiny_model, cases, tmp_path):
    support, query = cases
    cache = FeatureCache(tmp_path / "features", model_key="sam2.1-tiny/random-0/128")
    engine = FateSamEngine(tiny_model, EngineOptions(encoder_batch_size=4), cache)
    first_logits, refine_logits = {}, {}

    def run(logits, corrections=None):
        def keep(index, values):
            logits[index] = values.numpy()

        return segment_volume(engine, [support], prepare_query(query, AXIS, corrections), on_slice_logits=keep)

    first = run(first_logits)
    assert first.stats.encoder_passes == first.stats.query_slices + first.stats.support_slices_encoded
    corrections, drawn = redrawn(first.labels, 20)
    refined = run(refine_logits, CorrectionInput(corrections, [20]))
    assert refined.stats.encoder_passes == 0  # query and support features all from the cache
    assert refined.stats.support_memories_encoded == 0  # and the support memories
    num_slices = first.stats.query_slices
    assert sorted(refine_logits) == [i for i in range(num_slices) if i != 20]  # every other slice predicted
    for neighbour in (19, 21):
        assert not np.allclose(refine_logits[neighbour], first_logits[neighbour])
    out = stack_of(refined.labels)
    np.testing.assert_array_equal(out[20], drawn)
    # Predicted slices are not left empty by accident where the first run found the labels.
    found_before = (stack_of(first.labels) > 0).reshape(num_slices, -1).any(axis=1)
    found_now = (out > 0).reshape(num_slices, -1).any(axis=1)
    assert found_now[found_before].mean() > 0.5
