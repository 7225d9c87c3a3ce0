"""What a reader gets besides the labels, on real data (tiny SAM2, random weights): each slice's provenance, the
segments' volumes and the probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import ABDOMEN, HIPPOCAMPUS, case_paths, oblique_labels

from FateSAMLib.io.geometry import SliceFrame, ijk_to_lps, slice_centers, to_slices
from FateSAMLib.method.encoder import SliceEncoder, StackFeatures
from FateSAMLib.method.engine import EngineOptions, FateSamEngine, RunStats, StackSegmentation, support_candidates
from FateSAMLib.method.normalization import to_model_input
from FateSAMLib.method.pipeline import load_support, prepare_inputs, prepare_query, segment_volume
from FateSAMLib.method.probabilities import PRESENT_FROM, ProbabilityCollector, quantized_probabilities
from FateSAMLib.method.retrieval import feature_distances
from FateSAMLib.progress import CancelToken

CASES = {
    "hippocampus": (HIPPOCAMPUS, ("hippocampus_001", "hippocampus_003"), "hippocampus_004"),
    "abdomen": (ABDOMEN, ("chaos_t2_01",), "chaos_t2_02"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request, tiny_model):
    """(supports, query, result) of one run with probabilities, per data set."""
    folder, support_names, query_name = CASES[request.param]
    supports = [load_support(*case_paths(folder, name)) for name in support_names]
    query = load_support(*case_paths(folder, query_name)).image
    engine = FateSamEngine(tiny_model, EngineOptions(top_k=3))
    return supports, query, segment_volume(engine, supports, prepare_query(query), probabilities=True)


def test_provenance_names_real_support_slices_that_show_the_segments(run):
    supports, query, result = run
    prepared = prepare_inputs(supports, prepare_query(query))
    assert [entry.slice_index for entry in result.provenance] == list(range(prepared.query.shape[0]))
    names = {s.value: s.name for s in result.segments}
    for entry in result.provenance:
        assert [used.rank for used in entry.supports] == [1, 2, 3]
        assert [used.distance for used in entry.supports] == sorted(used.distance for used in entry.supports)
        for used in entry.supports:
            case = supports[used.support]
            assert used.support_name == case.name
            shown = prepared.supports[used.support].labels[used.slice_index]
            assert used.segments and used.segments == [names[v] for v in sorted(names) if (shown == v).any()]
            centre = slice_centers(case.image, result.slice_axis)[used.slice_index]
            np.testing.assert_allclose(used.center_lps, centre)
            # the centre is a real point of that slice in the support's own space
            index = case.image.TransformPhysicalPointToContinuousIndex(used.center_lps)
            assert all(-0.5 <= i <= n - 0.5 for i, n in zip(index, case.image.GetSize(), strict=True))


def test_provenance_matches_the_retrieval_recomputed_from_the_encoder(run, tiny_model):
    supports, query, result = run
    prepared = prepare_inputs(supports, prepare_query(query))
    refs = support_candidates(prepared.supports, prepared.label_values)
    encoder = SliceEncoder(tiny_model.model, tiny_model.device, 4)

    def encode(slices01: np.ndarray):
        return encoder.encode(to_model_input(slices01, tiny_model.image_size), CancelToken())

    owners = sorted({s for s, _ in refs})  # refs list each support's slices together, in support order
    candidates = StackFeatures.concatenate(
        [encode(prepared.supports[s].image[[i for o, i in refs if o == s]]) for s in owners]
    )
    checked = [0, prepared.query.shape[0] // 2, prepared.query.shape[0] - 1]
    query_features = encode(prepared.query[checked])
    for row, index in enumerate(checked):
        distances = feature_distances(query_features.slice_levels(row), candidates).numpy()
        nearest = np.argsort(distances, kind="stable")[:3]
        entry = result.provenance[index]
        assert [(used.support, used.slice_index) for used in entry.supports] == [refs[r] for r in nearest]
        np.testing.assert_allclose([used.distance for used in entry.supports], distances[nearest], rtol=1e-4)


def test_volumes_are_voxel_counts_times_the_voxel_volume(run):
    _, query, result = run
    labels = sitk.GetArrayFromImage(result.labels)
    voxel_mm3 = float(np.prod(query.GetSpacing()))
    assert [v.name for v in result.volumes] == [s.name for s in result.segments]
    for volume in result.volumes:
        assert volume.voxels == int((labels == volume.value).sum()) > 0
        assert volume.volume_ml == pytest.approx(volume.voxels * voxel_mm3 / 1000, rel=1e-9)
    assert abs(np.linalg.det(ijk_to_lps(query)[:3, :3])) == pytest.approx(voxel_mm3)


def test_thresholded_probabilities_give_the_label_map_where_labels_do_not_overlap(run):
    _, query, result = run
    probabilities = result.probabilities
    assert probabilities.GetSize() == query.GetSize()
    assert probabilities.GetNumberOfComponentsPerPixel() == len(result.segments)
    assert probabilities.GetPixelID() == sitk.sitkVectorUInt8
    np.testing.assert_allclose(probabilities.GetSpacing(), query.GetSpacing())
    np.testing.assert_allclose(probabilities.GetOrigin(), query.GetOrigin())
    np.testing.assert_allclose(probabilities.GetDirection(), query.GetDirection())
    values = sitk.GetArrayFromImage(probabilities)  # (z, y, x, segments)
    present = values >= PRESENT_FROM
    labels = sitk.GetArrayFromImage(result.labels)
    single = present.sum(axis=-1) <= 1
    expected = np.where(present.any(axis=-1), np.array([s.value for s in result.segments])[values.argmax(axis=-1)], 0)
    np.testing.assert_array_equal(labels[single], expected[single])
    assert single.any() and present.any()
    # where labels overlap, the label map takes the highest logit: its probability is the highest there too
    component = {s.value: j for j, s in enumerate(result.segments)}
    overlap = ~single
    chosen = np.take_along_axis(values[overlap], np.vectorize(component.get)(labels[overlap])[:, None], axis=-1)
    np.testing.assert_array_equal(chosen[:, 0], values[overlap].max(axis=-1))
    assert len(np.unique(values)) > 20  # graded probabilities, not a copy of the masks


def test_probabilities_of_corrected_slices_are_their_labels_and_quantisation_keeps_the_sign():
    logits = torch.tensor([[[-1e-9, 0.0, 1e-9, 30.0, -30.0]]])
    assert quantized_probabilities(logits).tolist() == [[[127, 127, 128, 255, 0]]]
    reference = oblique_labels()
    stack = to_slices(sitk.GetArrayFromImage(reference), reference, "axial")  # values 0, 2 and 7
    stats = RunStats(0, stack.shape[0], 0, 0, [2, 7], {}, corrected_slices=[1])
    result = StackSegmentation(stack, np.zeros((stack.shape[0], 2)), np.zeros((stack.shape[0], 2)), [2, 7], stats)
    collector = ProbabilityCollector(stack.shape, 2)
    for index in set(range(stack.shape[0])) - {1}:
        collector(index, torch.stack([torch.from_numpy(np.where(stack[index] == v, 5.0, -5.0)) for v in (2, 7)]))
    image = collector.on_grid(result, reference, SliceFrame.of(reference, "axial"))
    values = sitk.GetArrayFromImage(image)
    labels = sitk.GetArrayFromImage(reference)
    assert image.GetSize() == reference.GetSize() and image.GetDirection() == reference.GetDirection()
    np.testing.assert_array_equal(values[..., 0] >= PRESENT_FROM, labels == 2)
    np.testing.assert_array_equal(values[..., 1] >= PRESENT_FROM, labels == 7)
    corrected = to_slices(values[..., 0], reference, "axial")[1]
    assert set(np.unique(corrected)) <= {0, 255}
