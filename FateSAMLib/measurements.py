"""Segment measurements: voxel count and volume (mL) of each segment of a label map, on its own grid.

numpy only, so that the engine (SimpleITK images) and the Slicer module (MRML nodes) measure with the same rule: a
segment's volume is its voxel count times the volume of one voxel, the absolute determinant of the grid's
index-to-physical matrix (spacing times direction, in mm), divided by 1000 (1 mL = 1000 mm^3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .segments import Segment
from .summary import SegmentVolume

MM3_PER_ML = 1000.0


def voxel_volume_ml(index_to_physical: np.ndarray) -> float:
    """The volume of one voxel in mL, from a 3x3 or 4x4 index-to-physical matrix in mm (LPS or RAS alike)."""
    matrix = np.asarray(index_to_physical, dtype=float)[:3, :3]
    return float(abs(np.linalg.det(matrix))) / MM3_PER_ML


def segment_volumes(
    labels: np.ndarray, index_to_physical: np.ndarray, segments: Sequence[Segment]
) -> list[SegmentVolume]:
    """Voxel count and volume of each of ``segments`` (by label value) in the label array ``labels``."""
    voxel_ml = voxel_volume_ml(index_to_physical)
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    count_of = {int(value): int(count) for value, count in zip(values, counts, strict=True)}
    return [
        SegmentVolume(s.value, s.name, count_of.get(s.value, 0), count_of.get(s.value, 0) * voxel_ml) for s in segments
    ]
