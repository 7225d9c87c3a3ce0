"""From SimpleITK volumes to a label volume on the query's grid: orientation, normalisation, engine, confidence."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..io.geometry import choose_slice_axis, ijk_to_lps, slice_centers, to_slices
from ..io.images import read_image
from ..io.labels import labels_on_grid, read_label_map
from ..measurements import SegmentVolume, segment_volumes
from ..models.devices import available_memory_bytes, not_enough_memory
from ..options import RunSettings
from ..progress import CancelToken, ProgressCallback, StageProgress, ignore_progress
from ..segments import MAX_LABEL_VALUE, Segment, segment_key
from .corrections import Corrections, changed_slices, check_slice_indices
from .engine import FateSamEngine, RunStats, SliceLogitsCallback, StackSegmentation, SupportStack
from .normalization import normalize_intensities
from .probabilities import ProbabilityCollector
from .provenance import SliceProvenance, slice_provenance

DOUBTFUL_SLICES_LISTED = 10


@dataclass
class SupportCase:
    """One labelled example: its image, its label map on the same grid, and the segments that label map holds."""

    image: sitk.Image
    labels: sitk.Image
    segments: list[Segment]
    name: str = ""


@dataclass(frozen=True)
class Normalization:
    """Intensity rule applied to query and supports alike: percentile clipping, or a fixed (level, width) window."""

    percentiles: tuple[float, float] = RunSettings.percentiles
    window: tuple[float, float] | None = None

    @classmethod
    def from_settings(cls, settings: RunSettings) -> Normalization:
        """The rule the settings ask for: their window with window normalisation, else their percentiles."""
        if settings.normalization == "window":
            return cls(window=settings.window)
        return cls(percentiles=settings.percentiles)

    def apply(self, array: np.ndarray) -> np.ndarray:
        return normalize_intensities(array, percentiles=self.percentiles, window=self.window)


@dataclass(frozen=True)
class SliceConfidence:
    """How sure the engine is of one label on one query slice (``certainty`` in [0, 1], see ``_slice_confidence``)."""

    slice_index: int
    label: int
    name: str
    object_score: float  # SAM2's object-score logit: > 0, the label is present
    iou: float  # SAM2's predicted IoU of the mask
    certainty: float
    corrected: bool = False  # a slice the reviewer corrected: copied, not predicted


@dataclass(frozen=True)
class DoubtfulSlice:
    """A query slice to review first: its index along ``axis``, its centre (LPS, mm), its certainty (the lowest of
    its labels'), and the label that has it."""

    slice_index: int
    axis: str
    center_lps: list[float]
    certainty: float
    labels: list[str]


@dataclass
class SegmentationResult:
    """The label volume on the query's grid, its segments, what a reviewer needs to check it (certainty, the support
    slices each slice came from, the segments' volumes), the run's counts and, when asked for, the probabilities
    (:mod:`.probabilities`)."""

    labels: sitk.Image
    segments: list[Segment]
    slice_axis: str
    doubtful_slices: list[DoubtfulSlice]
    confidence: list[SliceConfidence]
    stats: RunStats
    provenance: list[SliceProvenance]
    volumes: list[SegmentVolume]
    probabilities: sitk.Image | None = None


def load_support(
    image_path: str | Path, labels_path: str | Path, label_names: dict[int, str] | None = None
) -> SupportCase:
    """Read a support image and its label map (plain label map or Slicer .seg.nrrd) and check they match.

    ``label_names`` name a plain label map's values (see ``io.label_names``; a .seg.nrrd keeps its own names)."""
    image = read_image(image_path)
    labels, segments = read_label_map(labels_path, image, label_names)
    return SupportCase(image=image, labels=labels, segments=segments, name=Path(image_path).name)


def _free_value(wanted: int, used: set[int]) -> int:
    """``wanted`` if no other segment has it, else the next free value, wrapping round to 1 after 65535."""
    candidates = itertools.chain(range(wanted, MAX_LABEL_VALUE + 1), range(1, wanted))
    free = next((value for value in candidates if value not in used), None)
    if free is None:
        raise InputError(
            f"The supports name more than {MAX_LABEL_VALUE} different segments, more than a 16-bit label map can "
            "hold; choose fewer segments with --segments."
        )
    return free


def merge_segments(cases: list[SupportCase]) -> tuple[list[Segment], list[dict[int, int]]]:
    """One list of segments across supports, matched by name (:func:`~FateSAMLib.segments.segment_key`).

    Returns the merged segments (value and colour of the first support that has the name; a value already taken by
    another name gets the next free value in 1..65535) and, per support, the map from its own label values to merged
    values.
    """
    merged: dict[str, Segment] = {}
    used_values: set[int] = set()
    remaps: list[dict[int, int]] = []
    for case in cases:
        remap = {}
        for segment in case.segments:
            key = segment_key(segment.name)
            if key not in merged:
                value = _free_value(segment.value, used_values)
                merged[key] = Segment(value=value, name=segment.name, color=segment.color)
                used_values.add(value)
            remap[segment.value] = merged[key].value
        remaps.append(remap)
    return sorted(merged.values(), key=lambda s: s.value), remaps


def select_segments(segments: list[Segment], wanted: list[str] | None) -> list[Segment]:
    """The segments named (or numbered) in ``wanted``, all of them when ``wanted`` is empty."""
    if not wanted:
        return segments
    chosen = []
    for item in wanted:
        match = [s for s in segments if segment_key(s.name) == segment_key(item) or str(s.value) == item.strip()]
        if not match:
            available = ", ".join(f"{s.value} ({s.name})" for s in segments)
            raise InputError(
                f"No support has the segment '{item}'. The supports have: {available}. "
                "Pick one of these, or add a support that contains it."
            )
        chosen.extend(s for s in match if s not in chosen)
    return sorted(chosen, key=lambda s: s.value)


def _remapped(labels: np.ndarray, remap: dict[int, int]) -> np.ndarray:
    out = np.zeros(labels.shape, dtype=np.int64)
    for old, new in remap.items():
        out[labels == old] = new
    return out


def feature_bytes_per_slice(image_size: int, device: torch.device) -> int:
    """Memory of one slice's cached encoder features: SAM2 keeps 4 * size^2 values over its three levels."""
    return 4 * image_size * image_size * (2 if device.type == "cuda" else 4)


def check_memory(num_slices: int, image_size: int, device: torch.device) -> None:
    """Refuse to start a run whose cached features alone would not fit in the memory free for this process."""
    needed = num_slices * feature_bytes_per_slice(image_size, device) + 2 * 1024**3
    if needed > available_memory_bytes(device):
        raise not_enough_memory(
            f"{num_slices} slices at input size {image_size} need about {needed / 1024**3:.1f} GB", device
        )


def _slice_confidence(result: StackSegmentation) -> np.ndarray:
    """(S, L) certainty in [0, 1]: for a predicted label, IoU x P(present); for an absent label, P(absent)."""
    present_prob = 1.0 / (1.0 + np.exp(-result.object_scores))
    present = np.stack(
        [(result.labels == value).reshape(result.labels.shape[0], -1).any(axis=1) for value in result.label_values],
        axis=1,
    )
    return np.where(present, result.ious * present_prob, 1.0 - present_prob)


def _review_lists(
    result: StackSegmentation, segments: list[Segment], centers: np.ndarray, axis: str
) -> tuple[list[SliceConfidence], list[DoubtfulSlice]]:
    certainty = _slice_confidence(result)
    names = [s.name for s in segments]
    corrected = set(result.stats.corrected_slices)
    confidence = [
        SliceConfidence(
            slice_index=int(i),
            label=int(value),
            name=names[j],
            object_score=float(result.object_scores[i, j]),
            iou=float(result.ious[i, j]),
            certainty=float(certainty[i, j]),
            corrected=i in corrected,
        )
        for i in range(certainty.shape[0])
        for j, value in enumerate(result.label_values)
    ]
    doubtful = [
        DoubtfulSlice(
            slice_index=int(i),
            axis=axis,
            center_lps=[float(c) for c in centers[i]],
            certainty=float(certainty[i].min()),
            labels=[names[j] for j in np.argsort(certainty[i])[:1]],
        )
        for i in [i for i in np.argsort(certainty.min(axis=1), kind="stable") if i not in corrected][
            :DOUBTFUL_SLICES_LISTED
        ]
    ]
    return confidence, doubtful


@dataclass
class PreparedInputs:
    """Query and supports in one frame and one intensity rule, sliced along one axis, with the chosen segments."""

    query: np.ndarray  # (S, H, W) intensities in [0, 1]
    supports: list[SupportStack]
    segments: list[Segment]
    slice_axis: str
    support_names: list[str]
    support_centers: list[np.ndarray]  # per support, (S, 3) LPS centre of each of its slices

    @property
    def label_values(self) -> list[int]:
        return [s.value for s in self.segments]


def prepare_inputs(
    supports: list[SupportCase],
    query: sitk.Image,
    segments: list[str] | None = None,
    slice_axis: str = "auto",
    normalization: Normalization = Normalization(),
) -> PreparedInputs:
    """Merge and pick the segments, choose the slice axis, normalise and reorient query and supports alike."""
    if not supports:
        raise InputError("At least one support (image + labels) is needed; pass --support IMAGE LABELS.")
    merged, remaps = merge_segments(supports)
    chosen = select_segments(merged, segments)
    axis = choose_slice_axis(query, slice_axis)

    query_stack = to_slices(normalization.apply(sitk.GetArrayFromImage(query)), query, axis)
    stacks = []
    for case, remap in zip(supports, remaps, strict=True):
        labels = _remapped(sitk.GetArrayFromImage(case.labels), remap)
        stacks.append(
            SupportStack(
                image=to_slices(normalization.apply(sitk.GetArrayFromImage(case.image)), case.image, axis),
                labels=to_slices(labels, case.labels, axis),
            )
        )
    missing = [s.name for s in chosen if not any((stack.labels == s.value).any() for stack in stacks)]
    if missing:
        raise InputError(f"The segments {missing} are empty in every support; choose segments that are drawn.")
    centers = [slice_centers(case.image, axis) for case in supports]
    return PreparedInputs(query_stack, stacks, chosen, axis, [case.name for case in supports], centers)


def result_on_query_grid(result: StackSegmentation, prepared: PreparedInputs, query: sitk.Image) -> SegmentationResult:
    """The engine's labels back on the query's voxel grid, with the confidence and review lists, the provenance of
    each slice and the segments' volumes."""
    axis = prepared.slice_axis
    label_image = labels_on_grid(result.labels, query, axis)
    confidence, doubtful = _review_lists(result, prepared.segments, slice_centers(query, axis), axis)
    provenance = slice_provenance(
        result.retrieved, prepared.supports, prepared.support_names, prepared.support_centers, prepared.segments
    )
    volumes = segment_volumes(sitk.GetArrayViewFromImage(label_image), ijk_to_lps(query), prepared.segments)
    return SegmentationResult(
        label_image, prepared.segments, axis, doubtful, confidence, result.stats, provenance, volumes
    )


@dataclass
class CorrectionInput:
    """A reviewer's corrections on the query's grid: ``labels``, vouched for on ``slices`` (indices along the run's
    slice axis); ``slices=None``: the slices where ``labels`` differ from ``previous`` (the result they corrected)."""

    labels: sitk.Image
    slices: list[int] | None = None
    previous: sitk.Image | None = None

    def on_stack(self, query: sitk.Image, axis: str) -> Corrections | None:
        """The corrections in the run's stack layout (None when no slice is corrected: a plain run)."""
        labels = to_slices(sitk.GetArrayFromImage(self.labels), query, axis)
        if self.slices is None:
            if self.previous is None:
                raise InputError(
                    "--corrected-slices auto needs the result the corrections were made on: pass it with --previous."
                )
            slices = changed_slices(labels, to_slices(sitk.GetArrayFromImage(self.previous), query, axis))
        else:
            slices = check_slice_indices(self.slices, labels.shape[0], axis)
        return Corrections(labels, slices) if slices else None


def segment_volume(
    engine: FateSamEngine,
    supports: list[SupportCase],
    query: sitk.Image,
    segments: list[str] | None = None,
    slice_axis: str = "auto",
    normalization: Normalization = Normalization(),
    progress: ProgressCallback = ignore_progress,
    cancel: CancelToken | None = None,
    corrections: CorrectionInput | None = None,
    on_slice_logits: SliceLogitsCallback | None = None,
    probabilities: bool = False,
) -> SegmentationResult:
    """Segment ``query`` from ``supports``; the returned label volume lies exactly on the query's voxel grid.

    With ``corrections``, the corrected slices come back exactly as given and the others are predicted from them too.
    ``on_slice_logits`` sees each predicted slice's logits (stack layout; see :class:`FateSamEngine`).
    ``probabilities``: also return each segment's probabilities on the query's grid (:mod:`.probabilities`).
    """
    prepared = prepare_inputs(supports, query, segments, slice_axis, normalization)
    stack_corrections = corrections.on_stack(query, prepared.slice_axis) if corrections else None
    # Support features stay for the whole run; query slices are encoded a batch at a time and dropped.
    kept_slices = sum(s.image.shape[0] for s in prepared.supports) + engine.options.encoder_batch_size
    check_memory(kept_slices, engine.image_size, engine.device)
    collector = ProbabilityCollector(prepared.query.shape, len(prepared.segments)) if probabilities else None
    watchers = [watch for watch in (collector, on_slice_logits) if watch is not None]

    def watch_logits(index: int, logits: torch.Tensor) -> None:
        for watch in watchers:
            watch(index, logits)

    result = engine.segment(
        prepared.query,
        prepared.supports,
        prepared.label_values,
        StageProgress(progress, 0.0, 0.98),
        cancel,
        watch_logits if watchers else None,
        stack_corrections,
    )
    segmentation = result_on_query_grid(result, prepared, query)
    if collector is not None:
        segmentation.probabilities = collector.on_grid(result, query, prepared.slice_axis)
    return segmentation
