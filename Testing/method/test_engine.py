"""The FATE-SAM engine on real hippocampus volumes with the tiny SAM2 architecture (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.errors import Cancelled, InputError
from FateSAMLib.method import encoder
from FateSAMLib.method.encoder import FeatureCache
from FateSAMLib.method.engine import EngineOptions, FateSamEngine
from FateSAMLib.method.pipeline import (
    load_support,
    merge_segments,
    prepare_query,
    segment_volume,
    select_segments,
)
from FateSAMLib.progress import CancelToken
from FateSAMLib.segments import Segment


def make_engine(loaded, **options) -> FateSamEngine:
    return FateSamEngine(loaded, EngineOptions(**options))


@pytest.fixture(scope="module")
def hippocampus_cases():
    supports = [load_support(*case_paths(HIPPOCAMPUS, name)) for name in ("hippocampus_001", "hippocampus_003")]
    query = load_support(*case_paths(HIPPOCAMPUS, "hippocampus_004"))
    return supports, query


def reoriented(image: sitk.Image) -> sitk.Image:
    """The same anatomy with its voxel axes permuted (x<->z) and the new x flipped, direction and origin to match."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    swapped = np.ascontiguousarray(np.transpose(array, (2, 1, 0))[:, :, ::-1])  # new (z, y, x) = (x, y, z flipped)
    out = sitk.GetImageFromArray(swapped)
    size = image.GetSize()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    # new voxel axes: i' = old k (flipped), j' = old j, k' = old i
    new_direction = np.stack([-direction[:, 2], direction[:, 1], direction[:, 0]], axis=1)
    out.SetSpacing((spacing[2], spacing[1], spacing[0]))
    out.SetDirection(tuple(new_direction.ravel()))
    out.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, size[2] - 1)))
    return out


def labelled_slices(case) -> int:
    labels = sitk.GetArrayFromImage(case.labels)
    return int((labels.reshape(labels.shape[0], -1) > 0).any(axis=1).sum())


def test_output_lies_on_the_query_grid_and_encodes_each_slice_once(tiny_model, hippocampus_cases):
    supports, query = hippocampus_cases
    fractions = []
    result = segment_volume(
        make_engine(tiny_model), supports, prepare_query(query.image), progress=lambda f, m: fractions.append(f)
    )
    labels = result.labels
    assert labels.GetSize() == query.image.GetSize()
    assert labels.GetSpacing() == query.image.GetSpacing()
    assert labels.GetOrigin() == query.image.GetOrigin()
    assert labels.GetDirection() == query.image.GetDirection()
    assert set(np.unique(sitk.GetArrayFromImage(labels))) <= {0, 1, 2}
    stats = result.stats
    # Only support slices that show a label can be retrieved, so only those are encoded (axial: the array's first axis).
    distinct_support_slices = sum(labelled_slices(case) for case in supports)
    assert stats.query_slices == query.image.GetSize()[2]
    assert stats.support_slices_encoded == distinct_support_slices
    assert stats.encoder_passes == stats.query_slices + distinct_support_slices
    assert stats.labels == [1, 2]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.98)
    assert len(result.confidence) == stats.query_slices * 2
    assert len(result.doubtful_slices) == 10
    assert result.doubtful_slices[0].certainty <= result.doubtful_slices[-1].certainty


def test_cached_and_naive_modes_give_identical_masks(tiny_model, hippocampus_cases):
    supports, query = hippocampus_cases
    cached = segment_volume(make_engine(tiny_model), supports[:1], prepare_query(query.image))
    naive = segment_volume(make_engine(tiny_model, reuse_features=False), supports[:1], prepare_query(query.image))
    assert np.array_equal(sitk.GetArrayFromImage(cached.labels), sitk.GetArrayFromImage(naive.labels))
    # The naive mode repeats the reference's encoder passes: every query and support slice once for retrieval, then
    # per query slice the query slice again and each of its top-k support slices twice.
    slices = cached.stats.query_slices
    support_slices = sitk.GetArrayFromImage(supports[0].image).shape[0]
    assert cached.stats.support_slices_retrievable >= 3
    assert naive.stats.encoder_passes == slices + support_slices + slices * (1 + 2 * 3)
    assert cached.stats.encoder_passes == slices + cached.stats.support_slices_encoded


def test_feature_cache_makes_a_second_run_encode_nothing(tiny_model, hippocampus_cases, tmp_path):
    supports, query = hippocampus_cases
    cache = FeatureCache(tmp_path / "features", model_key="sam2.1-tiny/random-0/128")
    engine = FateSamEngine(tiny_model, EngineOptions(), cache)
    first = segment_volume(engine, supports, prepare_query(query.image))
    second = segment_volume(engine, supports, prepare_query(query.image))
    assert first.stats.encoder_passes == first.stats.query_slices + first.stats.support_slices_encoded
    assert second.stats.encoder_passes == 0  # support and query slices both cached by content
    assert second.stats.support_memories_encoded == 0  # and the support slices' memories
    assert 0 < first.stats.support_memories_encoded <= first.stats.support_slices_retrievable
    # One file per support (its candidate slices), per query slice and per support memory.
    files = len(list((tmp_path / "features").glob("*.pt")))
    assert files == len(supports) + first.stats.query_slices + first.stats.support_memories_encoded
    assert np.array_equal(sitk.GetArrayFromImage(first.labels), sitk.GetArrayFromImage(second.labels))


def test_cache_entries_that_do_not_read_as_ours_are_recomputed(tiny_model, hippocampus_cases, tmp_path, monkeypatch):
    supports, query = hippocampus_cases
    folder = tmp_path / "features"
    engine = FateSamEngine(tiny_model, EngineOptions(), FeatureCache(folder, model_key="sam2.1-tiny/random-0/128"))
    prepared = prepare_query(query.image)
    first = segment_volume(engine, supports[:1], prepared)
    files = sorted(folder.glob("*.pt"))
    foreign = [{"weights": torch.zeros(3)}, [torch.zeros(2, 3)], torch.zeros(4)]  # valid torch files, not our entries
    for index, path in enumerate(files):
        torch.save(foreign[index % len(foreign)], path)
    files[0].write_bytes(b"not a torch file")
    second = segment_volume(engine, supports[:1], prepared)
    assert second.stats.encoder_passes == first.stats.encoder_passes  # every entry ignored and encoded again
    assert second.stats.support_memories_encoded == first.stats.support_memories_encoded
    assert np.array_equal(sitk.GetArrayFromImage(first.labels), sitk.GetArrayFromImage(second.labels))
    assert (
        segment_volume(engine, supports[:1], prepare_query(query.image)).stats.encoder_passes == 0
    )  # written again, as ours
    monkeypatch.setattr(encoder, "__version__", "another version")  # another FateSAM: other keys, nothing reused
    assert (
        segment_volume(engine, supports[:1], prepare_query(query.image)).stats.encoder_passes
        == first.stats.encoder_passes
    )


def test_reoriented_query_gives_the_same_labels_in_physical_space(tiny_model, hippocampus_cases):
    supports, query = hippocampus_cases
    engine = make_engine(tiny_model)
    original = segment_volume(engine, supports[:1], prepare_query(query.image)).labels
    turned = segment_volume(engine, supports[:1], prepare_query(reoriented(query.image))).labels
    assert turned.GetDirection() != original.GetDirection()
    back = sitk.Resample(turned, original, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))


def test_cancel_stops_within_a_slice_and_returns_nothing(tiny_model, hippocampus_cases):
    supports, query = hippocampus_cases
    cancel = CancelToken()
    messages = []

    def progress(fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("Segmenting slice 2/"):
            cancel.cancel()

    with pytest.raises(Cancelled):
        segment_volume(
            make_engine(tiny_model), supports[:1], prepare_query(query.image), progress=progress, cancel=cancel
        )
    assert messages[-1].startswith("Segmenting slice 2/")


def test_segments_are_matched_by_name_and_values_kept():
    a = load_like([Segment(1, "Liver", (1, 0, 0)), Segment(4, "Spleen", (0, 1, 0))])
    b = load_like([Segment(1, "spleen", (0, 0, 1)), Segment(7, "Kidney", (0, 0, 1))])
    merged, remaps = merge_segments([a, b])
    assert [(s.value, s.name) for s in merged] == [(1, "Liver"), (4, "Spleen"), (7, "Kidney")]
    assert remaps == [{1: 1, 4: 4}, {1: 4, 7: 7}]
    assert [s.name for s in select_segments(merged, ["kidney", "1"])] == ["Liver", "Kidney"]
    with pytest.raises(InputError, match="No support has the segment 'Heart'"):
        select_segments(merged, ["Heart"])


def load_like(segments: list[Segment]):
    from FateSAMLib.method.pipeline import SupportCase

    empty = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    return SupportCase(image=empty, labels=empty, segments=segments)


def test_a_segment_empty_in_every_support_is_refused(tiny_model, hippocampus_cases):
    supports, query = hippocampus_cases
    case = supports[0]
    with_ghost = type(case)(case.image, case.labels, [*case.segments, Segment(9, "Ghost", (1, 1, 1))])
    with pytest.raises(InputError, match="empty in every support"):
        segment_volume(make_engine(tiny_model), [with_ghost], prepare_query(query.image), segments=["Ghost"])
