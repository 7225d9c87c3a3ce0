"""The FATE-SAM method on stacks of slices: encode once, retrieve supports, track the query volume middle-out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..options import RunSettings
from ..progress import CancelToken, ProgressCallback, StageProgress, ignore_progress
from .encoder import FeatureCache, SliceEncoder, StackFeatures
from .normalization import logits_to_slice, masks_to_model_input, to_model_input
from .retrieval import top_k_slices
from .tracking import Memory, SliceTracker

STAGES = ("encode", "retrieval", "memory_encoding", "attention_decoding")


@dataclass
class SupportStack:
    """One support volume in the common frame: intensities in [0, 1] and labels, both (S, H, W)."""

    image: np.ndarray
    labels: np.ndarray


# In the reference code each retrieved support slice is encoded twice per query slice: once when its mask is added as a
# prompt and once more for its memory, because SAM2's video predictor keeps the features of the latest frame only.
REFERENCE_ENCODINGS_PER_SUPPORT = 2


@dataclass
class EngineOptions:
    """Method settings. ``reuse_features=False`` repeats the reference code's encoder passes, kept for comparison.

    The reference encodes every query and support slice once for retrieval, then, for every query slice, the query
    slice again and each retrieved support slice ``REFERENCE_ENCODINGS_PER_SUPPORT`` times; the masks are the same.
    ``memory_dtype`` is how mask memories are kept (None: bf16 on CUDA as SAM2 keeps them, float32 elsewhere).
    """

    top_k: int = RunSettings.top_k
    reuse_features: bool = RunSettings.reuse_features
    encoder_batch_size: int = 1
    memory_dtype: torch.dtype | None = None

    @classmethod
    def from_settings(cls, settings: RunSettings, sized_batch: int) -> EngineOptions:
        """The engine's part of a run's settings; ``sized_batch`` is the encoder batch when the settings leave it."""
        return cls(
            top_k=settings.top_k,
            reuse_features=settings.reuse_features,
            encoder_batch_size=settings.encoder_batch_size or sized_batch,
        )


SliceLogitsCallback = Callable[[int, torch.Tensor], None]
"""Called with a query slice's index and its (L, H, W) mask logits at the slice's size, once it is predicted."""


@dataclass
class StackSegmentation:
    """Labels of the query stack (S, H, W) and, per slice and label, SAM2's object score and predicted IoU."""

    labels: np.ndarray
    object_scores: np.ndarray  # (S, L)
    ious: np.ndarray  # (S, L)
    label_values: list[int]
    stats: dict = field(default_factory=dict)


class StageClock:
    """Accumulates wall-clock seconds per stage (synchronising CUDA so that the times are real).

    ``stages`` are listed from the start (with 0 s); other names are added when first timed.
    """

    def __init__(self, device: torch.device, stages: tuple[str, ...] = STAGES) -> None:
        self.device = device
        self.seconds: dict[str, float] = {stage: 0.0 for stage in stages}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def propagation_order(num_slices: int) -> list[tuple[int, bool]]:
    """(slice, reverse) in FATE-SAM's order: from the middle slice down to the first, then up to the last."""
    start = num_slices // 2
    return [(i, True) for i in range(start, -1, -1)] + [(i, False) for i in range(start + 1, num_slices)]


def support_candidates(supports: list[SupportStack], label_values: list[int]) -> list[tuple[int, int]]:
    """(support, slice) of every support slice that shows at least one of the labels: the only ones retrieval ranks."""
    refs = []
    for s, support in enumerate(supports):
        has_label = np.isin(support.labels, label_values).reshape(support.labels.shape[0], -1).any(axis=1)
        refs.extend((s, int(i)) for i in np.flatnonzero(has_label))
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

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        image_size: int,
        options: EngineOptions,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.image_size = image_size
        self.options = options
        self.feature_cache = feature_cache
        if device.type == "cuda":
            # TF32 for the float32 parts (bf16 autocast covers the rest), as SAM2's own examples set it.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def segment(
        self,
        query: np.ndarray,
        supports: list[SupportStack],
        label_values: list[int],
        progress: ProgressCallback = ignore_progress,
        cancel: CancelToken | None = None,
        on_slice_logits: SliceLogitsCallback | None = None,
    ) -> StackSegmentation:
        """Segment ``query`` (S, H, W, intensities in [0, 1]) with the labels ``label_values`` of ``supports``.

        Only support slices that show a label are encoded (once; from the disk cache when one is set). Query slices
        are encoded in batches in the order they are tracked and dropped once predicted, so memory stays bounded.
        ``on_slice_logits`` receives each slice's logits at the slice's size (to inspect them; nothing keeps them).
        """
        cancel = cancel or CancelToken()
        clock = StageClock(self.device)
        encoder = SliceEncoder(self.model, self.device, self.options.encoder_batch_size)
        refs = support_candidates(supports, label_values)
        with clock.stage("encode"):
            support_features = self._encode_supports(supports, refs, encoder, StageProgress(progress, 0, 0.3), cancel)
        support_passes = encoder.passes
        tracker: SliceTracker | None = None
        memories: dict[int, Memory] = {}

        num_slices, height, width = query.shape
        labels = np.zeros(query.shape, dtype=np.int64)
        object_scores = np.zeros((num_slices, len(label_values)), dtype=np.float32)
        ious = np.zeros((num_slices, len(label_values)), dtype=np.float32)
        order = propagation_order(num_slices)
        batch = self.options.encoder_batch_size
        done = 0
        for first in range(0, num_slices, batch):
            chunk = order[first : first + batch]
            with clock.stage("encode"):
                chunk_features = encoder.encode(to_model_input(query[[i for i, _ in chunk]], self.image_size), cancel)
            tracker = tracker or SliceTracker(
                self.model, encoder.geometry, self.device, num_slices, self.options.memory_dtype
            )
            for row, (index, reverse) in enumerate(chunk):
                cancel.raise_if_cancelled()
                query_levels = chunk_features.slice_levels(row)
                with clock.stage("retrieval"):
                    retrieved = top_k_slices(query_levels, support_features, self.options.top_k)
                support_memories = [
                    self._support_memory(
                        r, refs, supports, support_features, label_values, tracker, encoder, clock, memories
                    )
                    for r in retrieved
                ]
                if not self.options.reuse_features:
                    with clock.stage("encode"):
                        query_levels = encoder.encode(
                            to_model_input(query[index : index + 1], self.image_size), cancel
                        ).slice_levels(0)
                with clock.stage("attention_decoding"):
                    prediction, current_out, feats = tracker.attend_and_decode(
                        index, query_levels, support_memories, reverse
                    )
                with clock.stage("memory_encoding"):
                    tracker.remember(index, current_out, feats, keep_near=num_slices // 2 if reverse else index)
                logits = logits_to_slice(prediction.logits[:, 0], height, width).cpu()
                if on_slice_logits is not None:
                    on_slice_logits(index, logits)
                labels[index] = _assemble_labels(logits, label_values)
                object_scores[index] = prediction.object_scores.cpu().numpy()
                ious[index] = prediction.ious.cpu().numpy()
                done += 1
                progress(0.3 + 0.7 * done / num_slices, f"Segmenting slice {done}/{num_slices}")

        stats = {
            "encoder_passes": encoder.passes,
            "query_slices": int(num_slices),
            "support_slices_encoded": int(support_passes),
            "support_slices_retrievable": len(refs),
            "labels": list(label_values),
            "seconds": dict(clock.seconds),
        }
        return StackSegmentation(labels, object_scores, ious, list(label_values), stats)

    def _encode_supports(
        self,
        supports: list[SupportStack],
        refs: list[tuple[int, int]],
        encoder: SliceEncoder,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> StackFeatures:
        """Features of the candidate support slices, one row per entry of ``refs``.

        In naive mode every support slice is encoded, as the reference's retrieval does, and the candidates kept.
        """
        parts = []
        for s, support in enumerate(supports):
            slices = [i for owner, i in refs if owner == s]
            if not slices:
                continue
            stage = StageProgress(progress, s / len(supports), (s + 1) / len(supports))
            if not self.options.reuse_features:
                inputs = to_model_input(support.image, self.image_size)
                parts.append(encoder.encode(inputs, cancel, stage, f"support {s + 1}").select(slices))
                continue
            slices01 = support.image[slices]
            features = self.feature_cache.load(slices01, self.device) if self.feature_cache else None
            if features is None:
                features = encoder.encode(to_model_input(slices01, self.image_size), cancel, stage, f"support {s + 1}")
                if self.feature_cache:
                    self.feature_cache.save(slices01, features)
            parts.append(features)
        return StackFeatures.concatenate(parts)

    def _support_memory(
        self,
        row: int,
        refs: list[tuple[int, int]],
        supports: list[SupportStack],
        support_features: StackFeatures,
        label_values: list[int],
        tracker: SliceTracker,
        encoder: SliceEncoder,
        clock: StageClock,
        cache: dict[int, Memory],
    ) -> Memory:
        """The conditioning memory of candidate ``row``: from the cache, or re-encoded each time in naive mode."""
        if row in cache:
            return cache[row]
        owner, index = refs[row]
        support = supports[owner]
        if self.options.reuse_features:
            levels = support_features.slice_levels(row)
        else:
            with clock.stage("encode"):
                inputs = to_model_input(support.image[index : index + 1], self.image_size)
                for _ in range(REFERENCE_ENCODINGS_PER_SUPPORT):
                    levels = encoder.encode(inputs, CancelToken()).slice_levels(0)
        masks = masks_to_model_input(np.stack([support.labels[index] == v for v in label_values]), self.image_size)
        with clock.stage("memory_encoding"):
            memory = tracker.encode_support(levels, masks)
        if self.options.reuse_features:
            cache[row] = memory
        return memory
