"""Which segments a Slicer run transfers: the supports' segments matched across them by name (by
:func:`~FateSAMLib.segments.segment_key`, as the command line matches them) and valued 1..N."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import slicer

from ..errors import InputError
from ..segments import Segment, segment_key
from .scene import segment_infos


@dataclass(frozen=True)
class SupportPair:
    """A labelled example: a volume and the segmentation drawn on it."""

    volume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode


@dataclass(frozen=True)
class SupportSegments:
    """The segments of the supports, matched across them by name once (by :func:`segment_key`), first-seen order.

    Per name key: the first spelling, the first colour and the first terminology found (the result gets them).
    """

    names: dict[str, str]
    colors: dict[str, tuple[float, float, float]]
    terminologies: dict[str, str]

    @classmethod
    def of(cls, segmentations: Sequence[slicer.vtkMRMLSegmentationNode]) -> SupportSegments:
        """The segments found in ``segmentations``."""
        names: dict[str, str] = {}
        colors: dict[str, tuple[float, float, float]] = {}
        terminologies: dict[str, str] = {}
        for segmentation in segmentations:
            for info in segment_infos(segmentation):
                key = segment_key(info.name)
                names.setdefault(key, info.name)
                colors.setdefault(key, info.color)
                if info.terminology:
                    terminologies.setdefault(key, info.terminology)
        return cls(names, colors, terminologies)

    def plan(self, names: Sequence[str] | None = None) -> list[Segment]:
        """One segment per wanted name (default: every name), valued 1..N, named and coloured as first found.

        Raises :class:`InputError` naming the supports' segments when a wanted name is in no support.
        """
        wanted: dict[str, str] = {}  # key -> the first spelling asked for
        for name in names if names is not None else self.names.values():
            wanted.setdefault(segment_key(name), name)
        missing = [name for key, name in wanted.items() if key not in self.names]
        if missing:
            raise InputError(
                f"No support has a segment named {', '.join(repr(name) for name in missing)}; "
                f"choose among {', '.join(self.names.values()) or '(none)'}."
            )
        if not wanted:
            raise InputError("No segment to transfer: check at least one segment (the supports need named segments).")
        return [Segment(value, self.names[key], self.colors[key]) for value, key in enumerate(wanted, start=1)]


def segment_names(segmentations: Sequence[slicer.vtkMRMLSegmentationNode]) -> list[str]:
    """The segment names found across segmentations, matched by :func:`segment_key`, first spelling and order."""
    return list(SupportSegments.of(segmentations).names.values())


def plan_segments(supports: Sequence[SupportPair], names: Sequence[str] | None = None) -> list[Segment]:
    """The segments of a run on ``supports`` (see :meth:`SupportSegments.plan`)."""
    return SupportSegments.of([pair.segmentation for pair in supports]).plan(names)
