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
    """A query slice to review first: its index along ``axis``, its centre (LPS, mm), its lowest certainty, and
    the label that has it."""

    slice_index: int
    axis: str
    center_lps: list[float]
    score: float
    labels: list[str]


@dataclass(frozen=True)
class SegmentEntry:
    """A segment of the result: its label value, name and colour (RGB in [0, 1])."""

    value: int
    name: str
    color: list[float]


@dataclass(frozen=True)
class RunSummary:
    """What a run did and found: the engine's counts and seconds, the slice axis and segments, the model and
    settings it ran with, the slices to review first and the per-slice confidence. Its JSON keeps this order."""

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
    doubtful_slices: list[DoubtfulSlice] = field(default_factory=list)
    confidence: list[SliceConfidence] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary as the statistics JSON's object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object, source: str = "the statistics") -> RunSummary:
        """The summary of a statistics JSON object; InputError naming ``source`` when it does not fit the schema."""
        nested = {"segments": SegmentEntry, "doubtful_slices": DoubtfulSlice, "confidence": SliceConfidence}
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
