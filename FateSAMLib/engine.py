"""The FATE-SAM method on stacks of slices: encode once, retrieve supports, track the query volume middle-out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError
from .features import SliceEncoder, StackFeatures
from .normalization import logits_to_slice, masks_to_model_input, to_model_input
from .progress import CancelToken, ProgressCallback, StageProgress, ignore_progress
from .retrieval import SupportSliceRef, rank_support_slices
from .tracking import Memory, SlicePrediction, SliceTracker

STAGES = ("encode", "retrieval", "memory_encoding", "attention_decoding")


@dataclass
class SupportStack:
    """One support volume in the common frame: intensities in [0, 1] and labels, both (S, H, W)."""

    image: np.ndarray
    labels: np.ndarray


@dataclass
class EngineOptions:
    """Method settings. ``reuse_features=False`` is the reference code's naive re-encoding, kept for comparison."""

    top_k: int = 3
    reuse_features: bool = True
    encoder_batch_size: int = 1


@dataclass
class StackSegmentation:
    """Labels of the query stack (S, H, W) and, per slice and label, SAM2's object score and predicted IoU."""

    labels: np.ndarray
    object_scores: np.ndarray  # (S, L)
    ious: np.ndarray  # (S, L)
    label_values: list[int]
    stats: dict = field(default_factory=dict)


class StageClock:
    """Accumulates wall-clock seconds per stage (synchronising CUDA so that the times are real)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {stage: 0.0 for stage in STAGES}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start


def propagation_order(num_slices: int) -> list[tuple[int, bool]]:
    """(slice, reverse) in FATE-SAM's order: the middle slice, down to the first, then up from the middle to the last."""
    start = num_slices // 2
    return [(i, True) for i in range(start, -1, -1)] + [(i, False) for i in range(start + 1, num_slices)]


def _candidates(supports: list[SupportStack], label_values: list[int]) -> list[SupportSliceRef]:
    refs = []
    for s, support in enumerate(supports):
        has_label = np.isin(support.labels, label_values).reshape(support.labels.shape[0], -1).any(axis=1)
        refs.extend(SupportSliceRef(s, int(i)) for i in np.flatnonzero(has_label))
    if not refs:
        raise InputError("No support slice contains any of the requested labels; check the support label maps.")
    return refs


def _assemble_labels(logits: torch.Tensor, label_values: list[int]) -> np.ndarray:
    """(L, H, W) logits -> label map: the label with the highest logit where it is above 0, else background."""
    best, index = logits.max(dim=0)
    values = torch.tensor(label_values, dtype=torch.int64)
    labels = torch.where(best > 0, values[index], torch.zeros_like(index))
    return labels.numpy()


class FateSamEngine:
    """Runs FATE-SAM with one SAM2 model on a query stack and its support stacks."""

    def __init__(self, model: torch.nn.Module, device: torch.device, image_size: int, options: EngineOptions) -> None:
        self.model = model
        self.device = device
        self.image_size = image_size
        self.options = options

    def segment(
        self,
        query: np.ndarray,
        supports: list[SupportStack],
        label_values: list[int],
        progress: ProgressCallback = ignore_progress,
        cancel: CancelToken | None = None,
    ) -> StackSegmentation:
        """Segment ``query`` (S, H, W, intensities in [0, 1]) with the labels ``label_values`` of ``supports``."""
        cancel = cancel or CancelToken()
        clock = StageClock(self.device)
        encoder = SliceEncoder(self.model, self.device, self.options.encoder_batch_size)
        candidates = _candidates(supports, label_values)

        query_inputs = to_model_input(query, self.image_size)
        with clock.stage("encode"):
            support_features = [
                encoder.encode_stack(
                    to_model_input(support.image, self.image_size),
                    StageProgress(progress, 0.4 * s / (len(supports) + 1), 0.4 * (s + 1) / (len(supports) + 1)),
                    cancel,
                    f"support {s + 1}",
                )
                for s, support in enumerate(supports)
            ]
            query_features = encoder.encode_stack(
                query_inputs, StageProgress(progress, 0.4 * len(supports) / (len(supports) + 1), 0.4), cancel, "query"
            )
        support_passes = encoder.passes - query.shape[0]

        tracker = SliceTracker(self.model, encoder.geometry, self.device, query.shape[0])
        support_memories: dict[SupportSliceRef, Memory] = {}
        num_slices, height, width = query.shape
        labels = np.zeros(query.shape, dtype=np.int64)
        object_scores = np.zeros((num_slices, len(label_values)), dtype=np.float32)
        ious = np.zeros((num_slices, len(label_values)), dtype=np.float32)
        order = propagation_order(num_slices)
        start = num_slices // 2
        for step, (index, reverse) in enumerate(order):
            cancel.raise_if_cancelled()
            with clock.stage("retrieval"):
                retrieved = rank_support_slices(
                    query_features, index, support_features, candidates, self.options.top_k
                )
            memories = [
                self._support_memory(ref, supports, support_features, label_values, tracker, encoder, clock,
                                     support_memories)
                for ref in retrieved
            ]
            query_levels = (
                query_features.slice_levels(index)
                if self.options.reuse_features
                else encoder.encode_one(query_inputs[index])
            )
            with clock.stage("attention_decoding"):
                prediction, current_out, feats = tracker.attend_and_decode(index, query_levels, memories, reverse)
            with clock.stage("memory_encoding"):
                tracker.remember(index, current_out, feats, keep_near=start if reverse else index)
            labels[index] = self._slice_labels(prediction, label_values, height, width)
            object_scores[index] = prediction.object_scores.cpu().numpy()
            ious[index] = prediction.ious.cpu().numpy()
            progress(0.4 + 0.6 * (step + 1) / num_slices, f"Segmenting slice {step + 1}/{num_slices}")

        stats = {
            "encoder_passes": encoder.passes,
            "query_slices": int(num_slices),
            "support_slices_encoded": int(support_passes),
            "support_slices_retrievable": len(candidates),
            "labels": list(label_values),
            "seconds": dict(clock.seconds),
        }
        return StackSegmentation(labels, object_scores, ious, list(label_values), stats)

    def _support_memory(
        self,
        ref: SupportSliceRef,
        supports: list[SupportStack],
        support_features: list[StackFeatures],
        label_values: list[int],
        tracker: SliceTracker,
        encoder: SliceEncoder,
        clock: StageClock,
        cache: dict[SupportSliceRef, Memory],
    ) -> Memory:
        """A support slice's conditioning memory, from the cache when features are reused."""
        if self.options.reuse_features and ref in cache:
            return cache[ref]
        if self.options.reuse_features:
            levels = support_features[ref.support].slice_levels(ref.slice)
        else:
            support = supports[ref.support]
            with clock.stage("encode"):
                levels = encoder.encode_one(to_model_input(support.image[ref.slice : ref.slice + 1], self.image_size)[0])
        slice_labels = supports[ref.support].labels[ref.slice]
        masks = masks_to_model_input(np.stack([slice_labels == value for value in label_values]), self.image_size)
        with clock.stage("memory_encoding"):
            memory = tracker.encode_support(levels, masks)
        if self.options.reuse_features:
            cache[ref] = memory
        return memory

    def _slice_labels(self, prediction: SlicePrediction, label_values: list[int], height: int, width: int) -> np.ndarray:
        logits = logits_to_slice(prediction.logits[:, 0].float(), height, width).cpu()
        return _assemble_labels(logits, label_values)
