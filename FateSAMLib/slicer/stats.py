"""The engine's statistics of a run (:class:`~FateSAMLib.summary.RunSummary`), read in the Slicer module: the slices
to review first, in RAS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..summary import RunSummary
from .scene import lps_to_ras


@dataclass(frozen=True)
class DoubtfulSlice:
    """A result slice worth reviewing first: where it is (RAS, mm), how confident the model was, which labels."""

    slice_index: int
    axis: str
    center_ras: tuple[float, float, float]
    certainty: float
    labels: tuple[str, ...]


def read_run_stats(stats_path: Path) -> RunSummary | None:
    """The engine's statistics of a run (None when it wrote none); :class:`InputError` when they are malformed."""
    return RunSummary.read(stats_path) if Path(stats_path).is_file() else None


def read_doubtful_slices(stats_path: Path, stats: RunSummary | None = None) -> list[DoubtfulSlice]:
    """The ``doubtful_slices`` of the engine's statistics, lowest certainty first, with centres converted LPS -> RAS.

    ``stats``: the statistics when they were read already (:func:`read_run_stats`), so they are not read again.
    """
    stats = read_run_stats(stats_path) if stats is None else stats
    if stats is None:
        return []
    try:
        slices = [
            DoubtfulSlice(
                slice_index=int(entry.slice_index),
                axis=str(entry.axis),
                center_ras=lps_to_ras(entry.center_lps),
                certainty=float(entry.certainty),
                labels=tuple(str(label) for label in entry.labels),
            )
            for entry in stats.doubtful_slices
        ]
    except (ValueError, TypeError, IndexError) as error:
        raise InputError(f"The engine's statistics {stats_path} are malformed ({error}); run again.") from error
    return sorted(slices, key=lambda doubtful: doubtful.certainty)
