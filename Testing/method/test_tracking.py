"""Tracking a long query stack: the memory bank keeps only the frames later slices can still look back at."""

from __future__ import annotations

import numpy as np

from FateSAMLib.method.corrections import propagation_order
from FateSAMLib.method.encoder import SliceEncoder
from FateSAMLib.method.normalization import masks_to_model_input, to_model_input
from FateSAMLib.method.tracking import SliceTracker
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
        prediction, out, feats = tracker.attend_and_decode(index, query_levels, [support], reverse)
        low_res = tiny_model.image_size // 4  # SAM2's low-resolution mask logits
        assert prediction.logits.shape == (2, 1, low_res, low_res)
        tracker.remember(index, out, feats, pending)
        predicted.add(index)
        kept.append(len(tracker.predicted))
        # Every predicted frame a slice still to predict can attend to (recent memories, object pointers) is kept.
        within_reach = {i for i in predicted if any(abs(i - s) <= tracker.reach for s in pending)}
        assert within_reach <= set(tracker.predicted)
    # Frames within reach of the current slice and of the middle (where the second pass starts): about 4 x reach.
    assert max(kept) <= 4 * tracker.reach + 2
    assert max(kept) < num_slices / 2
