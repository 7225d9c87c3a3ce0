"""Where each query slice came from: the support slices retrieval gave it, closest first, for a reader to compare a
doubtful slice with the example it leaned on."""

from __future__ import annotations

import numpy as np

from ..segments import Segment
from ..summary import SliceProvenance, SupportSliceUsed
from .engine import Retrieved, SupportStack


def slice_provenance(
    retrieved: dict[int, list[Retrieved]],
    supports: list[SupportStack],
    names: list[str],
    centers: list[np.ndarray],
    segments: list[Segment],
) -> list[SliceProvenance]:
    """One entry per predicted query slice, by slice index; ``names`` and ``centers`` (S, 3 LPS) are the supports'."""

    def used(rank: int, entry: Retrieved) -> SupportSliceUsed:
        shown = supports[entry.support].labels[entry.slice_index]
        return SupportSliceUsed(
            rank=rank,
            support=entry.support,
            support_name=names[entry.support],
            slice_index=entry.slice_index,
            center_lps=[float(c) for c in centers[entry.support][entry.slice_index]],
            distance=entry.distance,
            segments=[s.name for s in segments if (shown == s.value).any()],
        )

    return [
        SliceProvenance(index, [used(rank, entry) for rank, entry in enumerate(retrieved[index], start=1)])
        for index in sorted(retrieved)
    ]
