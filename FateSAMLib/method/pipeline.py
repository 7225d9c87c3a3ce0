"""From SimpleITK volumes to a label volume on the query's grid: orientation, normalisation, engine, confidence."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..io.geometry import SliceFrame, ijk_to_lps
from ..io.images import check_image, read_image
from ..io.labels import (
    labels_of_image,
    labels_on_grid,
    on_reference_grid,
    read_label_map,
    read_labels_on_grid,
    require_segments,
    write_label_map,
)
from ..measurements import segment_volumes
from ..models.devices import available_memory_bytes, not_enough_memory
from ..options import RunSettings
from ..progress import CancelToken, ProgressCallback, StageProgress, ignore_progress
from ..segments import MAX_LABEL_VALUE, Segment, segment_key
from ..summary import DoubtfulSlice, SegmentVolume, SliceConfidence, SliceProvenance
from .corrections import Corrections, changed_slices, check_slice_indices
from .engine import FateSamEngine, RunStats, SliceLogitsCallback, StackSegmentation, SupportStack
from .normalization import normalize_intensities
from .probabilities import ProbabilityCollector
from .provenance import slice_provenance

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


@dataclass
class SegmentationResult:
    """The label volume on the query's grid, its segments, what a reviewer needs to check it (certainty, the support
    slices each slice came from, the segments' volumes), the run's counts and, when asked for, the probabilities
    (:mod:`.probabilities`)."""

    labels: sitk.Image
    segments: list[Segment]
    frame: SliceFrame
    doubtful_slices: list[DoubtfulSlice]
    confidence: list[SliceConfidence]
    stats: RunStats
    provenance: list[SliceProvenance]
    volumes: list[SegmentVolume]
    probabilities: sitk.Image | None = None

    @property
    def slice_axis(self) -> str:
        return self.frame.axis

    def write(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the label volume to ``path`` (format by suffix; ``.seg.nrrd`` with the segments' names and
        colours), all or nothing; an existing file is replaced only with ``overwrite``."""
        return write_label_map(self.labels, path, self.segments, overwrite)


ImageInput = str | Path | sitk.Image
"""A volume given as a file (or DICOM folder) path, or as a SimpleITK image already in memory."""


def image_input(image: ImageInput, name: str) -> sitk.Image:
    """``image`` read from its path, or checked as a read one is when already in memory (``name`` in messages)."""
    return check_image(image, name) if isinstance(image, sitk.Image) else read_image(image)


def labels_input(
    labels: ImageInput, reference: sitk.Image, name: str, of: str, label_names: Mapping[int, str] | None = None
) -> tuple[sitk.Image, list[Segment]]:
    """Labels read from a path (label map or .seg.nrrd) or given as an image (``name`` in messages), checked and put
    on ``reference``'s grid; ``of`` names the reference in a mismatch message ("its image", "the query").
    ``label_names`` name a plain label map's values (see ``io.label_names``; a .seg.nrrd keeps its own names)."""
    if isinstance(labels, sitk.Image):
        label_map, segments = labels_of_image(labels, name, label_names)
        return on_reference_grid(label_map, reference, f"{name} does not match {of}"), segments
    return read_labels_on_grid(labels, reference, f"{labels} does not match {of}", label_names)


def load_support(
    image: ImageInput, labels: ImageInput, name: str = "the support", label_names: Mapping[int, str] | None = None
) -> SupportCase:
    """A support image and its label map (plain label map or Slicer .seg.nrrd; or SimpleITK images, ``name`` in
    messages), checked as the command line checks them: the labels on the image's grid, not empty. ``label_names``
    name a plain label map's values (see ``io.label_names``; a .seg.nrrd keeps its own names)."""
    volume = image_input(image, f"{name} image")
    if isinstance(labels, sitk.Image):
        label_map, segments = labels_input(labels, volume, f"{name} labels", "its image", label_names)
        require_segments(segments, f"{name} labels")
    else:
        label_map, segments = read_label_map(labels, volume, label_names)
    image_name = name if isinstance(image, sitk.Image) else Path(image).name
    return SupportCase(image=volume, labels=label_map, segments=segments, name=image_name)


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
    """Per slice and label, SAM2's scores and the certainty; the slices to review first (corrected ones never)."""
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
class PreparedQuery:
    """The query volume with its slice frame (made once, carried to the result) and a refine's corrections in the
    frame's stack layout (checked once; None for a plain run)."""

    image: sitk.Image
    frame: SliceFrame
    corrections: Corrections | None = None


def prepare_query(
    query: ImageInput, slice_axis: str = "auto", corrections: CorrectionInput | None = None
) -> PreparedQuery:
    """Read (or check) the query, make its slice frame and check the corrections against it: every check a query
    needs, before any model work."""
    image = image_input(query, "the query")
    frame = SliceFrame.of(image, slice_axis)
    return PreparedQuery(image, frame, corrections.on_stack(image, frame) if corrections else None)


@dataclass
class PreparedInputs:
    """Query and supports in one frame and one intensity rule, sliced along one axis, with the chosen segments."""

    query: np.ndarray  # (S, H, W) intensities in [0, 1]
    supports: list[SupportStack]
    segments: list[Segment]
    frame: SliceFrame
    support_names: list[str]
    support_centers: list[np.ndarray]  # per support, (S, 3) LPS centre of each of its slices

    @property
    def label_values(self) -> list[int]:
        return [s.value for s in self.segments]


def query_stack(query: PreparedQuery, normalization: Normalization) -> np.ndarray:
    """The query's normalised slices (S, H, W) in its frame."""
    return query.frame.to_slices(normalization.apply(sitk.GetArrayFromImage(query.image)))


def prepare_inputs(
    supports: list[SupportCase],
    query: PreparedQuery,
    segments: list[str] | None = None,
    normalization: Normalization = Normalization(),
) -> PreparedInputs:
    """Merge and pick the segments, normalise and reorient query and supports alike (along the query frame's axis)."""
    if not supports:
        raise InputError("At least one support (image + labels) is needed; pass --support IMAGE LABELS.")
    merged, remaps = merge_segments(supports)
    chosen = select_segments(merged, segments)
    frame = query.frame

    stack = query_stack(query, normalization)
    stacks = []
    for case, remap in zip(supports, remaps, strict=True):
        support_frame = SliceFrame.of(case.image, frame.axis)  # the labels lie on the image's grid exactly
        labels = _remapped(sitk.GetArrayFromImage(case.labels), remap)
        stacks.append(
            SupportStack(
                image=support_frame.to_slices(normalization.apply(sitk.GetArrayFromImage(case.image))),
                labels=support_frame.to_slices(labels),
            )
        )
    missing = [s.name for s in chosen if not any((stack.labels == s.value).any() for stack in stacks)]
    if missing:
        raise InputError(f"The segments {missing} are empty in every support; choose segments that are drawn.")
    centers = [SliceFrame.of(case.image, frame.axis).slice_centers() for case in supports]
    return PreparedInputs(stack, stacks, chosen, frame, [case.name for case in supports], centers)


def result_on_query_grid(result: StackSegmentation, prepared: PreparedInputs, query: sitk.Image) -> SegmentationResult:
    """The engine's labels back on the query's voxel grid, with the confidence and review lists, the provenance of
    each slice and the segments' volumes."""
    frame = prepared.frame
    label_image = labels_on_grid(result.labels, query, frame)
    confidence, doubtful = _review_lists(result, prepared.segments, frame.slice_centers(), frame.axis)
    provenance = slice_provenance(
        result.retrieved, prepared.supports, prepared.support_names, prepared.support_centers, prepared.segments
    )
    volumes = segment_volumes(sitk.GetArrayViewFromImage(label_image), ijk_to_lps(query), prepared.segments)
    return SegmentationResult(
        label_image, prepared.segments, frame, doubtful, confidence, result.stats, provenance, volumes
    )


def _slice_numbers(values: Sequence[int | str]) -> list[int] | None:
    """Slice numbers from ``--corrected-slices`` values; None for ``auto``."""
    if [str(value) for value in values] == ["auto"]:
        return None
    try:
        return [
            value if isinstance(value, int) and not isinstance(value, bool) else int(str(value)) for value in values
        ]
    except ValueError:
        shown = " ".join(str(value) for value in values)
        raise InputError(
            f"--corrected-slices takes 'auto' or slice numbers (got {shown}); e.g. --corrected-slices 12 13."
        ) from None


@dataclass
class CorrectionInput:
    """A reviewer's corrections of the query (a file or an image): ``labels``, vouched for on ``slices`` (indices
    along the run's slice axis); ``slices=None``: the slices where ``labels`` differ from ``previous`` (the result
    they corrected)."""

    labels: ImageInput
    slices: list[int] | None = None
    previous: ImageInput | None = None

    @classmethod
    def from_options(
        cls, labels: ImageInput | None, slices: Sequence[int | str] | None, previous: ImageInput | None
    ) -> CorrectionInput | None:
        """The corrections ``--corrections``, ``--corrected-slices`` (numbers, or ``["auto"]``) and ``--previous``
        give (as the command line and a server job take them); None for a plain run. InputError when they do not
        go together."""
        if labels is None:
            if slices or previous is not None:
                raise InputError(
                    "--corrected-slices and --previous refine a result: pass the edited labels with --corrections."
                )
            return None
        if not slices:
            raise InputError(
                "--corrections needs --corrected-slices: the slice numbers, or auto with --previous RESULT."
            )
        numbers = _slice_numbers(slices)
        if numbers is None and previous is None:
            raise InputError(
                "--corrected-slices auto needs the result the corrections were made on: pass --previous RESULT."
            )
        return cls(labels, numbers, previous if numbers is None else None)

    def on_stack(self, query: sitk.Image, frame: SliceFrame) -> Corrections | None:
        """The corrections read onto the query's grid (checked as a support's labels are) in the stack layout of its
        ``frame`` (None when no slice is corrected: a plain run); InputError for slice numbers outside the stack."""
        if self.slices is None and self.previous is None:
            raise InputError(
                "--corrected-slices auto needs the result the corrections were made on: pass it with --previous."
            )
        labels = self._stack(self.labels, "the corrections", query, frame)
        if self.slices is None:
            slices = changed_slices(labels, self._stack(self.previous, "the previous result", query, frame))
        else:
            slices = check_slice_indices(self.slices, labels.shape[0], frame.axis)
        return Corrections(labels, slices) if slices else None

    @staticmethod
    def _stack(labels: ImageInput, name: str, query: sitk.Image, frame: SliceFrame) -> np.ndarray:
        on_grid, _ = labels_input(labels, query, name, "the query")
        return frame.to_slices(sitk.GetArrayFromImage(on_grid))


def segment_volume(
    engine: FateSamEngine,
    supports: list[SupportCase],
    query: PreparedQuery,
    segments: list[str] | None = None,
    normalization: Normalization = Normalization(),
    progress: ProgressCallback = ignore_progress,
    cancel: CancelToken | None = None,
    on_slice_logits: SliceLogitsCallback | None = None,
    probabilities: bool = False,
) -> SegmentationResult:
    """Segment ``query`` from ``supports``; the returned label volume lies exactly on the query's voxel grid.

    With the query's corrections, the corrected slices come back exactly as given and the others are predicted from
    them too. ``on_slice_logits`` sees each predicted slice's logits (stack layout; see :class:`FateSamEngine`).
    ``probabilities``: also return each segment's probabilities on the query's grid (:mod:`.probabilities`).
    """
    prepared = prepare_inputs(supports, query, segments, normalization)
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
        query.corrections,
    )
    segmentation = result_on_query_grid(result, prepared, query.image)
    if collector is not None:
        segmentation.probabilities = collector.on_grid(result, query.image, prepared.frame)
    return segmentation
