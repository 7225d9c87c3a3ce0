"""The summary of one segmentation run: the schema of the statistics JSON (``--stats-json``, a server job's
``stats``), written by the engine's side and read by the clients (the Slicer module, remote runs) as one typed object
instead of dictionaries. Standard library only, so that every tier reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .json_input import parse_json

STATS_BYTES = 64 * 1024**2
"""The largest statistics JSON read (per slice and label confidence of a long volume is a few MB)."""


@dataclass(frozen=True)
class SliceConfidence:
    """How sure the engine is of one label on one query slice (``certainty`` in [0, 1]: for a predicted label,
    IoU x P(present); for an absent label, P(absent))."""

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


@dataclass(frozen=True)
class SegmentVolume:
    """One segment's size: its label value and name, its voxel count and its volume in mL (``measurements``)."""

    value: int
    name: str
    voxels: int
    volume_ml: float


@dataclass(frozen=True)
class SupportSliceUsed:
    """One retrieved support slice: its ``rank`` (1: closest), the support (index in the run's supports and file
    name), its index along the run's slice axis (stack order, as query slices are numbered), its centre (LPS, mm, in
    the support's space), its feature distance to the query slice, and the segments it shows."""

    rank: int
    support: int
    support_name: str
    slice_index: int
    center_lps: list[float]
    distance: float
    segments: list[str]


@dataclass(frozen=True)
class SliceProvenance:
    """The support slices a predicted query slice attended to (a corrected slice, copied, has no entry)."""

    slice_index: int
    supports: list[SupportSliceUsed]

    @classmethod
    def from_json(cls, slice_index: int, supports: list[dict[str, Any]]) -> SliceProvenance:
        """An entry of the statistics JSON's ``provenance``."""
        return cls(slice_index, [SupportSliceUsed(**used) for used in supports])


@dataclass(frozen=True)
class SegmentEntry:
    """A segment of the result: its label value, name and colour (RGB in [0, 1])."""

    value: int
    name: str
    color: list[float]


@dataclass(frozen=True)
class RunSummary:
    """What a run did and found: the engine's counts and seconds, the slice axis and segments, the model and
    settings it ran with, each segment's volume, the slices to review first, the per-slice confidence and each slice's
    provenance (the support slices it was predicted from). Its JSON keeps this order."""

    encoder_passes: int
    query_slices: int
    support_slices_encoded: int
    support_slices_retrievable: int
    labels: list[int]
    seconds: dict[str, float]
    corrected_slices: list[int]
    support_memories_encoded: int
    slice_axis: str
    segments: list[SegmentEntry]
    model: str
    image_size: int
    device: str
    random_weights: bool
    reuse_features: bool
    top_k: int
    threads: int | None = None  # the CPU threads torch ran with (None: statistics of an older FateSAM)
    volumes: list[SegmentVolume] = field(default_factory=list)
    doubtful_slices: list[DoubtfulSlice] = field(default_factory=list)
    confidence: list[SliceConfidence] = field(default_factory=list)
    provenance: list[SliceProvenance] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary as the statistics JSON's object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object, source: str = "the statistics") -> RunSummary:
        """The summary of a statistics JSON object; InputError naming ``source`` when it does not fit the schema."""
        nested = {
            "segments": SegmentEntry,
            "volumes": SegmentVolume,
            "doubtful_slices": DoubtfulSlice,
            "confidence": SliceConfidence,
            "provenance": SliceProvenance.from_json,
        }
        try:
            values = dict(data)  # type: ignore[call-overload]
            for name, kind in nested.items():
                values[name] = [kind(**entry) for entry in values.get(name, [])]
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise InputError(f"{source} are malformed ({error}); run again.") from None

    @classmethod
    def read(cls, path: str | Path) -> RunSummary:
        """The summary in a statistics JSON file (read within bounds); InputError when it is malformed."""
        what = f"The engine's statistics {path}"
        return cls.from_json(parse_json(Path(path), what, "run again.", max_bytes=STATS_BYTES), what)
