"""The engine's per-slice provenance (``--stats-json``: the support slices each query slice was predicted from) read
back for the Slicer module (shown by :mod:`.support_view`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..summary import RunSummary
from .scene import lps_to_ras


@dataclass(frozen=True)
class SupportSliceRef:
    """A support slice a query slice was predicted from: its rank (1: closest), the support (index in the run's
    supports as exported, and its file name), its index along the slice axis, its centre (RAS, in the support volume's
    coordinates), its feature distance and the segments it shows."""

    rank: int
    support: int
    support_name: str
    slice_index: int
    center_ras: tuple[float, float, float]
    distance: float
    segments: tuple[str, ...]


def read_provenance(stats: RunSummary | None) -> dict[int, list[SupportSliceRef]]:
    """The ``provenance`` of the engine's statistics by query slice index, closest support first (empty when there
    are none); :class:`InputError` when it is malformed."""
    if stats is None:
        return {}
    try:
        return {
            int(entry.slice_index): [
                SupportSliceRef(
                    rank=int(used.rank),
                    support=int(used.support),
                    support_name=str(used.support_name),
                    slice_index=int(used.slice_index),
                    center_ras=lps_to_ras(used.center_lps),
                    distance=float(used.distance),
                    segments=tuple(str(name) for name in used.segments),
                )
                for used in sorted(entry.supports, key=lambda used: used.rank)
            ]
            for entry in stats.provenance
        }
    except (ValueError, TypeError, IndexError) as error:
        raise InputError(f"The engine's provenance is malformed ({error}); run again.") from error
