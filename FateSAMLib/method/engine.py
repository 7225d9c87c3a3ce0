"""The FATE-SAM method on stacks of slices: encode once, retrieve supports, track the query volume middle-out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..errors import InputError
from ..models.loading import LoadedModel
from ..options import RunSettings
from ..progress import CancelToken, Eta, ProgressCallback, StageProgress, ignore_progress
from .corrections import CORRECTED_PER_SIDE, Corrections, nearest_corrected, propagation_steps
from .encoder import FeatureCache, SliceEncoder, StackFeatures
from .normalization import logits_to_slice, masks_to_model_input, to_model_input
from .retrieval import top_k_slices
from .tracking import Memory, SliceQuery, SliceTracker

STAGES = ("encode", "retrieval", "memory_encoding", "attention_decoding")


@dataclass
class SupportStack:
    """One support volume in the common frame: intensities in [0, 1] and labels, both (S, H, W)."""

    image: np.ndarray
    labels: np.ndarray


# In the reference code each retrieved support slice is encoded twice per query slice: once when its mask is added as a
# prompt and once more for its memory, because SAM2's video predictor keeps the features of the latest frame only.
REFERENCE_ENCODINGS_PER_SUPPORT = 2
# What a corrected slice reports as SAM2's object score (the score SAM2 gives a mask used as output: +-10).
CORRECTED_OBJECT_SCORE = 10.0


@dataclass
class EngineOptions:
    """Method settings. ``reuse_features=False`` repeats the reference code's encoder passes, kept for comparison.

    The reference encodes every query and support slice once for retrieval, then, for every query slice, the query
    slice again and each retrieved support slice ``REFERENCE_ENCODINGS_PER_SUPPORT`` times; the masks are the same.
    ``memory_dtype`` is how mask memories are kept (None: bf16 on CUDA as SAM2 keeps them, float32 elsewhere).
    ``corrected_per_side``: how many corrected slices on each side a query slice attends to (None: all of them; the
    benchmark compares the two). ``pair_directions``: once the downward pass is far enough ahead, predict its slices
    together with the upward pass's (same masks; fewer, larger batches); False: one slice at a time, for comparison.
    """

    top_k: int = RunSettings.top_k
    reuse_features: bool = RunSettings.reuse_features
    encoder_batch_size: int = 1
    memory_dtype: torch.dtype | None = None
    corrected_per_side: int | None = CORRECTED_PER_SIDE
    pair_directions: bool = True

    @classmethod
    def from_settings(cls, settings: RunSettings, sized_batch: int) -> EngineOptions:
        """The engine's part of a run's settings; ``sized_batch`` is the encoder batch when the settings leave it."""
        return cls(
            top_k=settings.top_k,
            reuse_features=settings.reuse_features,
            encoder_batch_size=settings.encoder_batch_size or sized_batch,
        )


@dataclass(frozen=True)
class Retrieved:
    """A support slice a query slice was predicted from: its support, its index in that support's stack, and its
    feature distance to the query slice (the retrieval's, see ``retrieval.feature_distances``)."""

    support: int
    slice_index: int
    distance: float


SliceLogitsCallback = Callable[[int, torch.Tensor], None]
"""Called with a query slice's index and its (L, H, W) mask logits at the slice's size, once it is predicted."""


@dataclass(frozen=True)
class RunStats:
    """What one engine run did: image-encoder passes, slice counts, the labels and the seconds of each stage."""

    encoder_passes: int
    query_slices: int
    support_slices_encoded: int
    support_slices_retrievable: int  # candidate support slices: those that show one of the labels
    labels: list[int]
    seconds: dict[str, float]
    corrected_slices: list[int] = field(default_factory=list)  # copied from the corrections, not predicted
    support_memories_encoded: int = 0  # support slices' conditioning memories encoded (not loaded from the cache)


@dataclass
class StackSegmentation:
    """Labels of the query stack (S, H, W) and, per slice and label, SAM2's object score and predicted IoU."""

    labels: np.ndarray
    object_scores: np.ndarray  # (S, L)
    ious: np.ndarray  # (S, L)
    label_values: list[int]
    stats: RunStats
    retrieved: dict[int, list[Retrieved]] = field(default_factory=dict)  # per predicted slice, closest first


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


class EncodingPolicy(Protocol):
    """How a run obtains image-encoder features. The masks do not depend on it, only the encoder passes do."""

    keeps_support_memories: bool
    """Whether a support slice's memory, once encoded, serves every later query slice that retrieves it."""

    def support_features(
        self, run: EngineRun, support: SupportStack, slices: list[int], progress: ProgressCallback, label: str
    ) -> StackFeatures:
        """Features of the candidate ``slices`` of one support, in order."""

    def query_features(self, run: EngineRun, indices: list[int]) -> StackFeatures:
        """Features of the query slices ``indices`` (one encoder batch), in order, used for retrieval."""

    def query_levels(self, run: EngineRun, index: int, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features query slice ``index`` is decoded with; ``encoded`` are those of its batch (used for retrieval)."""

    def support_levels(self, run: EngineRun, row: int) -> list[torch.Tensor]:
        """Features the memory of candidate ``row`` (an entry of ``run.refs``) is encoded from."""

    def support_memory(self, run: EngineRun, row: int, masks: torch.Tensor) -> Memory:
        """The conditioning memory of candidate ``row`` with its ``masks`` (L, 1, size, size)."""


class ReuseFeatures:
    """Every slice through the image encoder once: support features kept (or loaded from a disk cache), support
    memories encoded once and kept for the run (and in the cache, for later runs with the same supports)."""

    keeps_support_memories = True

    def __init__(self, feature_cache: FeatureCache | None = None) -> None:
        self.feature_cache = feature_cache

    def support_features(
        self, run: EngineRun, support: SupportStack, slices: list[int], progress: ProgressCallback, label: str
    ) -> StackFeatures:
        slices01 = support.image[slices]
        features = self.feature_cache.load(slices01, run.device) if self.feature_cache else None
        if features is None:
            features = run.encode(slices01, progress, label)
            if self.feature_cache:
                self.feature_cache.save(slices01, features)
        return features

    def query_features(self, run: EngineRun, indices: list[int]) -> StackFeatures:
        """From the disk cache where a slice's features are there (a refine run encodes no slice), else encoded
        (and cached)."""
        if self.feature_cache is None:
            return run.encode(run.query[indices])
        cached = {i: self.feature_cache.load(run.query[i : i + 1], run.device) for i in indices}
        missing = [i for i in indices if cached[i] is None]
        if missing:
            encoded = run.encode(run.query[missing])
            for row, i in enumerate(missing):
                cached[i] = encoded.select([row])
                self.feature_cache.save(run.query[i : i + 1], cached[i])
        return StackFeatures.concatenate([cached[i] for i in indices])

    def query_levels(self, run: EngineRun, index: int, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        return encoded

    def support_levels(self, run: EngineRun, row: int) -> list[torch.Tensor]:
        return run.support_features.slice_levels(row)

    def support_memory(self, run: EngineRun, row: int, masks: torch.Tensor) -> Memory:
        """From the cache when this slice and masks were encoded before with this model, else encoded (and cached)."""
        if self.feature_cache is None:
            return run.encode_support_memory(row, masks)
        owner, index = run.refs[row]
        slice01 = run.supports[owner].image[index : index + 1]
        dtype = run.ensure_tracker().memory_dtype
        memory = self.feature_cache.load_memory(slice01, masks, dtype, run.device)
        if memory is None:
            memory = run.encode_support_memory(row, masks)
            self.feature_cache.save_memory(slice01, masks, dtype, memory)
        return memory


class ReferenceEncoding:
    """The reference code's encoder passes, kept for comparison (same masks, slower).

    Every support slice is encoded for retrieval (not only the candidates); then, for every query slice, the query
    slice again and each retrieved support slice ``REFERENCE_ENCODINGS_PER_SUPPORT`` times, its memory encoded anew.
    """

    keeps_support_memories = False

    def support_features(
        self, run: EngineRun, support: SupportStack, slices: list[int], progress: ProgressCallback, label: str
    ) -> StackFeatures:
        return run.encode(support.image, progress, label).select(slices)

    def query_features(self, run: EngineRun, indices: list[int]) -> StackFeatures:
        return run.encode(run.query[indices])

    def query_levels(self, run: EngineRun, index: int, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        with run.clock.stage("encode"):
            return run.encode(run.query[index : index + 1]).slice_levels(0)

    def support_levels(self, run: EngineRun, row: int) -> list[torch.Tensor]:
        owner, index = run.refs[row]
        with run.clock.stage("encode"):
            for _ in range(REFERENCE_ENCODINGS_PER_SUPPORT):
                levels = run.encode(run.supports[owner].image[index : index + 1]).slice_levels(0)
        return levels

    def support_memory(self, run: EngineRun, row: int, masks: torch.Tensor) -> Memory:
        return run.encode_support_memory(row, masks)


class EngineRun:
    """One segmentation of a query stack: the state its steps share, from the support features to the labels.

    It holds the image encoder (and its pass count), the stage clock, the candidate support slices (``refs``), their
    features, the support memories encoded so far, the tracker and the outputs; ``policy`` says how features are
    obtained.
    """

    def __init__(
        self,
        engine: FateSamEngine,
        policy: EncodingPolicy,
        query: np.ndarray,
        supports: list[SupportStack],
        label_values: list[int],
        cancel: CancelToken,
        on_slice_logits: SliceLogitsCallback | None = None,
        corrections: Corrections | None = None,
    ) -> None:
        self.model, self.device, self.image_size, self.options = (
            engine.model,
            engine.device,
            engine.image_size,
            engine.options,
        )
        self.policy = policy
        self.query, self.supports, self.label_values = query, supports, list(label_values)
        self.cancel = cancel
        self.on_slice_logits = on_slice_logits
        self.clock = StageClock(self.device)
        self.encoder = SliceEncoder(self.model, self.device, self.options.encoder_batch_size)
        self.refs = support_candidates(supports, self.label_values)
        self.support_features = StackFeatures(levels=[])
        self.memories: dict[int, Memory] = {}
        self.support_memories_encoded = 0
        self.corrections = corrections
        self.corrected_memories: dict[int, Memory] = {}
        self.tracker: SliceTracker | None = None
        num_slices, num_labels = query.shape[0], len(self.label_values)
        self.labels = np.zeros(query.shape, dtype=np.int64)
        self.object_scores = np.zeros((num_slices, num_labels), dtype=np.float32)
        self.ious = np.zeros((num_slices, num_labels), dtype=np.float32)
        self.retrieved: dict[int, list[Retrieved]] = {}

    def encode(self, slices01: np.ndarray, progress: ProgressCallback | None = None, label: str = "") -> StackFeatures:
        """Encoder features of (S, H, W) slices with intensities in [0, 1], counted in the encoder's passes."""
        return self.encoder.encode(to_model_input(slices01, self.image_size), self.cancel, progress, label)

    def segment(self, progress: ProgressCallback) -> StackSegmentation:
        """Encode the candidate support slices, then track the query slices in encoder batches.

        Without corrections the slices are tracked middle-out; with them, outwards from the corrected slices, which are
        copied to the output and become conditioning memories. Query slices are encoded in the order they are tracked
        and dropped once predicted, so memory stays bounded.
        """
        with self.clock.stage("encode"):
            self.support_features = self._encode_supports(StageProgress(progress, 0, 0.3))
        support_passes = self.encoder.passes
        num_slices = self.query.shape[0]
        corrected = self.corrections.slices if self.corrections else []
        lag = self.ensure_tracker().pairing_lag if self.options.pair_directions else None
        steps = propagation_steps(num_slices, corrected, lag)
        order = [item for step in steps for item in step]
        pending = {i for i, _ in order}
        batch = self.options.encoder_batch_size
        for first in range(0, len(corrected), batch):
            self._encode_corrected(corrected[first : first + batch])
        encoded: dict[int, list[torch.Tensor]] = {}
        done = len(corrected)
        eta = Eta(len(order))
        for first in range(0, len(order), batch):
            chunk = [i for i, _ in order[first : first + batch]]
            with self.clock.stage("encode"):
                features = self.policy.query_features(self, chunk)
            encoded.update((index, features.slice_levels(row)) for row, index in enumerate(chunk))
            while steps and all(i in encoded for i, _ in steps[0]):
                step = steps.pop(0)
                pending.difference_update(i for i, _ in step)
                self._predict(step, [encoded.pop(i) for i, _ in step], pending)
                done += len(step)
                eta_text = eta.text(done - len(corrected))
                progress(0.3 + 0.7 * done / num_slices, f"Segmenting slice {done}/{num_slices}, {eta_text}")
        stats = RunStats(
            encoder_passes=self.encoder.passes,
            query_slices=int(num_slices),
            support_slices_encoded=int(support_passes),
            support_slices_retrievable=len(self.refs),
            labels=list(self.label_values),
            seconds=dict(self.clock.seconds),
            corrected_slices=list(corrected),
            support_memories_encoded=self.support_memories_encoded,
        )
        return StackSegmentation(
            self.labels, self.object_scores, self.ious, list(self.label_values), stats, dict(self.retrieved)
        )

    def ensure_tracker(self) -> SliceTracker:
        """The run's tracker (it encodes memories and predicts slices), made on first use."""
        if self.tracker is None:
            num_slices = self.query.shape[0]
            self.tracker = SliceTracker(
                self.model, self.encoder.geometry, self.device, num_slices, self.options.memory_dtype
            )
        return self.tracker

    def _encode_corrected(self, indices: list[int]) -> None:
        """Corrected slices: their masks copied to the output and encoded as conditioning memories, as supports are."""
        with self.clock.stage("encode"):
            features = self.policy.query_features(self, indices)
        tracker = self.ensure_tracker()
        for row, index in enumerate(indices):
            labels = self.corrections.labels[index]
            masks = masks_to_model_input(np.stack([labels == v for v in self.label_values]), self.image_size)
            with self.clock.stage("memory_encoding"):
                self.corrected_memories[index] = tracker.encode_support(features.slice_levels(row), masks)
            self.labels[index] = labels
            present = np.array([(labels == v).any() for v in self.label_values])
            self.object_scores[index] = np.where(present, CORRECTED_OBJECT_SCORE, -CORRECTED_OBJECT_SCORE)
            self.ious[index] = 1.0

    def _encode_supports(self, progress: ProgressCallback) -> StackFeatures:
        """Features of the candidate support slices, one row per entry of ``refs``."""
        parts = []
        for s, support in enumerate(self.supports):
            slices = [i for owner, i in self.refs if owner == s]
            if slices:
                stage = StageProgress(progress, s / len(self.supports), (s + 1) / len(self.supports))
                parts.append(self.policy.support_features(self, support, slices, stage, f"support {s + 1}"))
        return StackFeatures.concatenate(parts)

    def _predict(self, step: list[tuple[int, bool]], encoded: list[list[torch.Tensor]], pending: set[int]) -> None:
        """Retrieve, attend and decode the query slices of one step (together), keep their outputs and remember their
        masks. ``step``: (slice, reverse) of each; ``encoded``: their encoder levels, used for retrieval."""
        self.cancel.raise_if_cancelled()
        tracker = self.ensure_tracker()
        queries = []
        for (index, reverse), levels in zip(step, encoded, strict=True):
            with self.clock.stage("retrieval"):
                retrieved = top_k_slices(levels, self.support_features, self.options.top_k)
            self.retrieved[index] = [Retrieved(*self.refs[row], distance) for row, distance in retrieved]
            support_memories = [self._support_memory(row) for row, _ in retrieved]
            attended = nearest_corrected(index, list(self.corrected_memories), self.options.corrected_per_side)
            corrected = {c: self.corrected_memories[c] for c in attended}
            levels = self.policy.query_levels(self, index, levels)
            queries.append(SliceQuery(index, levels, support_memories, reverse, corrected))
        with self.clock.stage("attention_decoding"):
            decoded = tracker.attend_and_decode(queries)
        with self.clock.stage("memory_encoding"):
            tracker.remember(decoded, pending)
        _, height, width = self.query.shape
        for index, prediction in zip(decoded.frames, decoded.predictions, strict=True):
            logits = logits_to_slice(prediction.logits[:, 0], height, width).cpu()
            if self.on_slice_logits is not None:
                self.on_slice_logits(index, logits)
            self.labels[index] = _assemble_labels(logits, self.label_values)
            self.object_scores[index] = prediction.object_scores.cpu().numpy()
            self.ious[index] = prediction.ious.cpu().numpy()

    def _support_memory(self, row: int) -> Memory:
        """The conditioning memory of candidate ``row``: kept from an earlier slice, or encoded now."""
        if row in self.memories:
            return self.memories[row]
        owner, index = self.refs[row]
        support = self.supports[owner]
        masks = masks_to_model_input(np.stack([support.labels[index] == v for v in self.label_values]), self.image_size)
        memory = self.policy.support_memory(self, row, masks)
        if self.policy.keeps_support_memories:
            self.memories[row] = memory
        return memory

    def encode_support_memory(self, row: int, masks: torch.Tensor) -> Memory:
        """Encode the conditioning memory of candidate ``row`` with its ``masks`` (counted in the run's stats)."""
        levels = self.policy.support_levels(self, row)
        with self.clock.stage("memory_encoding"):
            memory = self.ensure_tracker().encode_support(levels, masks)
        self.support_memories_encoded += 1
        return memory


class FateSamEngine:
    """Runs FATE-SAM with one loaded SAM2 model on a query stack and its support stacks."""

    def __init__(self, loaded: LoadedModel, options: EngineOptions, feature_cache: FeatureCache | None = None) -> None:
        self.model = loaded.model
        self.device = loaded.device
        self.image_size = loaded.image_size
        self.options = options
        self.feature_cache = feature_cache

    @property
    def encoding(self) -> EncodingPolicy:
        """How runs obtain features: once each (``options.reuse_features``), else as the reference code does."""
        return ReuseFeatures(self.feature_cache) if self.options.reuse_features else ReferenceEncoding()

    def encode_queries(self, stacks: list[np.ndarray], cancel: CancelToken | None = None) -> int:
        """Encode the slices of several query stacks ((S, H, W), intensities in [0, 1]) in shared encoder batches into
        the feature cache, so that their runs encode none of them: fuller batches where queries are short (a cohort
        worker on a GPU). Slices already cached are skipped; returns how many were encoded. Needs a feature cache."""
        if self.feature_cache is None:
            raise ValueError("encode_queries fills the feature cache: give the engine one")
        slices = [stack[i : i + 1] for stack in stacks for i in range(stack.shape[0])]
        missing = [slice01 for slice01 in slices if self.feature_cache.load(slice01, self.device) is None]
        encoder = SliceEncoder(self.model, self.device, self.options.encoder_batch_size)
        for first in range(0, len(missing), encoder.batch_size):
            chunk = missing[first : first + encoder.batch_size]
            images = torch.cat([to_model_input(slice01, self.image_size) for slice01 in chunk])  # sizes may differ
            features = encoder.encode(images, cancel or CancelToken())
            for row, slice01 in enumerate(chunk):
                self.feature_cache.save(slice01, features.select([row]))
        return len(missing)

    def segment(
        self,
        query: np.ndarray,
        supports: list[SupportStack],
        label_values: list[int],
        progress: ProgressCallback = ignore_progress,
        cancel: CancelToken | None = None,
        on_slice_logits: SliceLogitsCallback | None = None,
        corrections: Corrections | None = None,
    ) -> StackSegmentation:
        """Segment ``query`` (S, H, W, intensities in [0, 1]) with the labels ``label_values`` of ``supports``.

        Only support slices that show a label are encoded (once; from the disk cache when one is set). Query slices
        are encoded in batches in the order they are tracked and dropped once predicted, so memory stays bounded.
        ``on_slice_logits`` receives each predicted slice's logits at the slice's size (to inspect them; nothing keeps
        them). ``corrections`` are slices a reviewer vouches for: copied unchanged, and memories for the others.
        """
        run = EngineRun(
            self, self.encoding, query, supports, label_values, cancel or CancelToken(), on_slice_logits, corrections
        )
        return run.segment(progress)
