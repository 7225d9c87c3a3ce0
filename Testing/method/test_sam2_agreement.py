"""The engine against the installed sam2 package's own video predictor, under identical seeded weights and inputs.

FATE-SAM drives SAM2's video modules: a support slice with its mask is what ``SAM2VideoPredictor.add_new_mask``
makes a conditioning frame, and a query slice is a frame that the predictor propagates to. Both sides run here on
the same normalised frames, with the same random weights; the engine must compute what the predictor computes.

SAM2's hole filling needs its CUDA extension, which a CPU build of sam2 lacks (it then skips the step with a warning).
The predictor is given the engine's component counting instead (``holes.component_areas``, checked against scipy
below), so that both sides fill holes, as they both do on a GPU with the extension built.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths
from PIL import Image
from sam2.build_sam import build_sam2_video_predictor
from scipy import ndimage

from FateSAMLib.io.geometry import to_slices
from FateSAMLib.method.corrections import propagation_order
from FateSAMLib.method.encoder import SliceEncoder
from FateSAMLib.method.engine import EngineOptions, FateSamEngine, SupportStack
from FateSAMLib.method.holes import FILL_HOLE_AREA, component_areas, fill_small_holes
from FateSAMLib.method.normalization import masks_to_model_input, normalize_intensities, to_model_input
from FateSAMLib.method.tracking import SliceTracker
from FateSAMLib.models.loading import load_model
from FateSAMLib.progress import CancelToken

LABELS = [1, 2]


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    ours, theirs = ours.float(), theirs.float()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The engine's SAM2 and the sam2 package's video predictor with the same weights.

    The object-score head is scaled up (random weights give scores that hardly vary between slices); its bias is set
    per test by :func:`set_object_score_bias`, on both models alike.
    """
    loaded = load_model("sam2.1-tiny", random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", seed=0)
    head = object_score_layer(loaded.model)
    with torch.no_grad():
        head.weight.mul_(400.0)
        head.bias.zero_()
    predictor = build_sam2_video_predictor(
        loaded.spec.config, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={TEST_IMAGE_SIZE}"]
    )
    predictor.load_state_dict(loaded.model.state_dict())
    predictor.eval()
    assert predictor.fill_hole_area == FILL_HOLE_AREA
    return loaded, predictor


def object_score_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The last layer of SAM2's object-score head (present where its output is above 0)."""
    return model.sam_mask_decoder.pred_obj_score_head.layers[-1]


def set_object_score_bias(models, bias: float) -> None:
    """The same bias on the engine's and the predictor's object-score heads."""
    with torch.no_grad():
        for model in models:
            object_score_layer(model).bias.fill_(bias)


@pytest.fixture
def hole_filling_without_extension(monkeypatch):
    """The predictor counts components with the engine's function (its CUDA kernel cannot run on this machine)."""
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", lambda mask: (mask, component_areas(mask)))


def predictor_state(predictor, frames: torch.Tensor, height: int, width: int, folder) -> dict:
    """``init_state`` over as many frames as ``frames`` has, whose images are then exactly ``frames``.

    ``init_state`` only reads JPEG folders; the frames are the engine's own normalised model inputs instead, so that
    both sides see the same pixels.
    """
    for i in range(frames.shape[0]):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    state = predictor.init_state(str(folder))
    state["images"] = frames
    state["video_height"], state["video_width"] = height, width
    state["cached_features"] = {}
    return state


@pytest.fixture(scope="module")
def hippocampus():
    """The query (hippocampus_004) and the support slice of hippocampus_001 showing most of both labels."""

    def stacks(name: str) -> tuple[np.ndarray, np.ndarray]:
        image_path, labels_path = case_paths(HIPPOCAMPUS, name)
        image, labels = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(labels_path))
        return (
            to_slices(normalize_intensities(sitk.GetArrayFromImage(image)), image, "axial"),
            to_slices(sitk.GetArrayFromImage(labels), labels, "axial"),
        )

    query, _ = stacks("hippocampus_004")
    support_image, support_labels = stacks("hippocampus_001")
    both = [min((support_labels[i] == v).sum() for v in LABELS) for i in range(support_labels.shape[0])]
    best = int(np.argmax(both))
    return query, SupportStack(support_image[best : best + 1], support_labels[best : best + 1])


def test_component_areas_equal_scipy_8_connected_labelling():
    rng = np.random.default_rng(3)
    masks = rng.random((3, 1, 40, 52)) > 0.55
    areas = component_areas(torch.from_numpy(masks)).numpy()
    for n in range(masks.shape[0]):
        labels, _ = ndimage.label(masks[n, 0], structure=np.ones((3, 3)))
        expected = np.bincount(labels.ravel())[labels] * (labels > 0)
        np.testing.assert_array_equal(areas[n, 0], expected)


def test_only_background_regions_up_to_the_area_become_foreground():
    logits = torch.full((1, 1, 16, 16), 5.0)
    logits[0, 0, 2:4, 2:4] = -3.0  # a hole of 4 pixels
    logits[0, 0, 8:11, 8:11] = -3.0  # a hole of 9 pixels, above SAM2's 8
    logits[0, 0, :, 14:] = -3.0  # background touching the border, 32 pixels
    filled = fill_small_holes(logits)
    assert (filled[0, 0, 2:4, 2:4] == 0.1).all()
    assert (filled[0, 0, 8:11, 8:11] == -3.0).all()
    assert (filled[0, 0, :, 14:] == -3.0).all()
    assert torch.equal(fill_small_holes(logits, max_area=0), logits)


def test_support_memory_equals_the_video_predictors_conditioning_frame(
    models, hippocampus, hole_filling_without_extension, tmp_path
):
    loaded, predictor = models
    _, support = hippocampus
    masks = np.stack([support.labels[0] == v for v in LABELS] + [np.zeros_like(support.labels[0], dtype=bool)])
    # A third object drawn with small holes, so that filling them matters; the zero mask above is an absent label.
    dotted = np.zeros_like(masks[0])
    dotted[4:34, 4:34] = True
    dotted[10:13, 10:13] = False  # about 5 low-resolution pixels: a hole SAM2 fills
    dotted[18:30, 18:30] = False  # about 80 low-resolution pixels: kept
    masks = np.concatenate([masks, dotted[None]])
    height, width = masks.shape[1:]

    frame = to_model_input(support.image, TEST_IMAGE_SIZE)
    encoder = SliceEncoder(loaded.model, loaded.device, batch_size=1)
    levels = encoder.encode(frame, CancelToken()).slice_levels(0)
    tracker = SliceTracker(loaded.model, encoder.geometry, loaded.device, num_query_slices=1)
    ours = tracker.encode_support(levels, masks_to_model_input(masks, TEST_IMAGE_SIZE))

    captured = []
    original = predictor._encode_new_memory

    def recording(**kwargs):
        result = original(**kwargs)
        captured.append(result[0])
        return result

    predictor._encode_new_memory = recording
    try:
        state = predictor_state(predictor, frame, height, width, tmp_path)
        for obj_id, mask in enumerate(masks):
            predictor.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=torch.from_numpy(mask))
        predictor.propagate_in_video_preflight(state)
    finally:
        del predictor._encode_new_memory

    assert len(captured) == len(masks)
    theirs_float = torch.cat(captured)
    theirs = [state["output_dict_per_obj"][i]["cond_frame_outputs"][0] for i in range(len(masks))]
    # The small hole was filled (SAM2's logit for filled holes) and the large one kept.
    assert (theirs[3]["pred_masks"] == 0.1).any() and (theirs[3]["pred_masks"] < 0).any()
    assert relative_error(ours["maskmem_features"], theirs_float) < 1e-5
    assert relative_error(ours["obj_ptr"], torch.cat([t["obj_ptr"] for t in theirs])) < 1e-5
    assert relative_error(ours["maskmem_pos_enc"][0], theirs[0]["maskmem_pos_enc"][0][:1]) < 1e-6
    # SAM2 stores the features as bf16: the engine's, rounded the same way, are the predictor's stored ones.
    stored = torch.cat([t["maskmem_features"] for t in theirs])
    assert stored.dtype == torch.bfloat16
    assert relative_error(ours["maskmem_features"].to(torch.bfloat16), stored) < 1e-2


def test_engine_logits_equal_the_video_predictor_propagating_from_the_middle(
    models, hippocampus, hole_filling_without_extension, tmp_path
):
    """One support slice and top-k 1, so retrieval has one answer; frames 0..N-1 are the query, frame N the support.

    The predictor propagates from the middle slice to the first, then from the slice after the middle to the last,
    as the engine does; with the same bf16 storage of memories as the predictor, the logits agree.
    """
    loaded, predictor = models
    query, support = hippocampus
    num_slices, height, width = query.shape
    engine_logits: dict[int, torch.Tensor] = {}
    options = EngineOptions(top_k=1, encoder_batch_size=1, memory_dtype=torch.bfloat16)
    engine = FateSamEngine(loaded, options)
    # Centre the object scores on zero, so that some slices see the labels present and others absent.
    probe = engine.segment(query, [support], LABELS)
    set_object_score_bias((loaded.model, predictor), -float(np.median(probe.object_scores)))
    result = engine.segment(query, [support], LABELS, on_slice_logits=lambda i, x: engine_logits.__setitem__(i, x))
    assert sorted(engine_logits) == list(range(num_slices))

    frames = torch.cat([to_model_input(query, TEST_IMAGE_SIZE), to_model_input(support.image, TEST_IMAGE_SIZE)])
    state = predictor_state(predictor, frames, height, width, tmp_path)
    for obj_id, value in enumerate(LABELS):
        predictor.add_new_mask(state, num_slices, obj_id, torch.from_numpy(support.labels[0] == value))
    theirs: dict[int, torch.Tensor] = {}
    middle = num_slices // 2
    for start, reverse in ((middle, True), (middle + 1, False)):
        for frame_idx, _, masks in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
            if frame_idx < num_slices:
                theirs[frame_idx] = masks[:, 0]
    assert [i for i, _ in propagation_order(num_slices)] == [*range(middle, -1, -1), *range(middle + 1, num_slices)]

    worst = max(relative_error(engine_logits[i], theirs[i]) for i in range(num_slices))
    assert worst < 1e-4, worst
    # Both present and absent labels occur, so the comparison is not trivially between empty (or full) masks.
    assert (result.object_scores > 0).any() and (result.object_scores < 0).any()
    present = np.stack([(result.labels == v).reshape(num_slices, -1).any(axis=1) for v in LABELS])
    assert present.any() and not present.all()
    # The predictor's masks (logits above 0) are the engine's, voxel for voxel, for every label.
    for i in range(num_slices):
        assert torch.equal(engine_logits[i] > 0, theirs[i] > 0)
