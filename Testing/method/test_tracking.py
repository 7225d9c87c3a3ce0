"""Tracking a query stack: the memory bank keeps only the frames later slices can still look back at, and the two
propagation directions predicted together give the masks of one slice at a time."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.method.corrections import propagation_order, propagation_steps
from FateSAMLib.method.encoder import SliceEncoder
from FateSAMLib.method.engine import EngineOptions, FateSamEngine
from FateSAMLib.method.normalization import masks_to_model_input, to_model_input
from FateSAMLib.method.pipeline import load_support, prepare_query, segment_volume
from FateSAMLib.method.tracking import SliceQuery, SliceTracker
from FateSAMLib.progress import CancelToken


def test_memory_bank_stays_bounded_on_a_long_stack(tiny_model):
    rng = np.random.default_rng(0)
    slices = rng.random((2, 48, 48), dtype=np.float32)
    encoder = SliceEncoder(tiny_model.model, tiny_model.device, batch_size=2)
    features = encoder.encode(to_model_input(slices, tiny_model.image_size), CancelToken())
    support_levels, query_levels = features.slice_levels(0), features.slice_levels(1)
    masks = np.zeros((2, 48, 48), dtype=bool)
    masks[0, 10:30, 12:34] = True  # label 1 drawn, label 2 absent on this support slice
    num_slices = 120
    tracker = SliceTracker(tiny_model.model, encoder.geometry, tiny_model.device, num_slices)
    support = tracker.encode_support(support_levels, masks_to_model_input(masks, tiny_model.image_size))

    kept, predicted = [], set()
    order = propagation_order(num_slices)
    pending = {i for i, _ in order}
    for index, reverse in order:
        pending.discard(index)
        decoded = tracker.attend_and_decode([SliceQuery(index, query_levels, [support], reverse)])
        low_res = tiny_model.image_size // 4  # SAM2's low-resolution mask logits
        assert decoded.predictions[0].logits.shape == (2, 1, low_res, low_res)
        tracker.remember(decoded, pending)
        predicted.add(index)
        kept.append(len(tracker.predicted))
        # Every predicted frame a slice still to predict can attend to (recent memories, object pointers) is kept.
        within_reach = {i for i in predicted if any(abs(i - s) <= tracker.reach for s in pending)}
        assert within_reach <= set(tracker.predicted)
    # Frames within reach of the current slice and of the middle (where the second pass starts): about 4 x reach.
    assert max(kept) <= 4 * tracker.reach + 2
    assert max(kept) < num_slices / 2


def test_paired_directions_give_the_logits_of_one_slice_at_a_time(tiny_model):
    """The downward and upward passes predicted together (2 x labels objects per step) against the plain order."""
    query_path, labels_path = case_paths(HIPPOCAMPUS, "hippocampus_004")
    support = load_support(*case_paths(HIPPOCAMPUS, "hippocampus_001"))
    query = load_support(query_path, labels_path)
    runs = {}
    for paired in (True, False):
        logits: dict[int, torch.Tensor] = {}
        engine = FateSamEngine(tiny_model, EngineOptions(pair_directions=paired, encoder_batch_size=4))
        result = segment_volume(engine, [support], prepare_query(query.image), on_slice_logits=logits.__setitem__)
        runs[paired] = logits, sitk.GetArrayFromImage(result.labels)
    (paired_logits, paired_labels), (plain_logits, plain_labels) = runs[True], runs[False]
    num_slices = len(plain_logits)
    lag = SliceTracker(tiny_model.model, None, tiny_model.device, num_slices).pairing_lag
    assert len(propagation_steps(num_slices, pairing_lag=lag)) < num_slices  # some slices were predicted in pairs
    assert sorted(paired_logits) == sorted(plain_logits) == list(range(num_slices))
    for i in range(num_slices):
        scale = plain_logits[i].abs().max()
        assert float((paired_logits[i] - plain_logits[i]).abs().max() / scale) < 1e-5, i
    np.testing.assert_array_equal(paired_labels, plain_labels)
