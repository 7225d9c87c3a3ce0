"""Segment measurements: voxel count and volume (mL) of each segment of a label map, on its own grid.

The one rule the engine (SimpleITK images) and the Slicer module (MRML nodes) measure with: a segment's volume is its
voxel count times the volume of one voxel, the absolute determinant of the grid's index-to-physical matrix (spacing
times direction, in mm), divided by 1000 (1 mL = 1000 mm^3). Standard library only (top tier): it takes the arrays
its callers hold (numpy's, whose ``==`` and ``sum`` it uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .segments import Segment
from .summary import SegmentVolume

MM3_PER_ML = 1000.0


def voxel_volume_ml(index_to_physical: Any) -> float:
    """The volume of one voxel in mL, from a 3x3 or 4x4 index-to-physical matrix in mm (LPS or RAS alike)."""
    (a, b, c), (d, e, f), (g, h, i) = ([float(index_to_physical[r][k]) for k in range(3)] for r in range(3))
    return abs(a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)) / MM3_PER_ML


def segment_volumes(labels: Any, index_to_physical: Any, segments: Sequence[Segment]) -> list[SegmentVolume]:
    """Voxel count and volume of each of ``segments`` (by label value) in the label array ``labels``."""
    voxel_ml = voxel_volume_ml(index_to_physical)
    counts = [int((labels == segment.value).sum()) for segment in segments]
    return [SegmentVolume(s.value, s.name, n, n * voxel_ml) for s, n in zip(segments, counts, strict=True)]
