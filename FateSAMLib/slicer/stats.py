"""The engine's statistics of a run, read in the Slicer module: the slices to review first, in RAS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..json_input import parse_json
from .scene import lps_to_ras

STATS_BYTES = 64 * 1024**2
"""The largest statistics JSON read (per slice and label confidence of a long volume is a few MB)."""


@dataclass(frozen=True)
class DoubtfulSlice:
    """A result slice worth reviewing first: where it is (RAS, mm), how confident the model was, which labels."""

    slice_index: int
    axis: str
    center_ras: tuple[float, float, float]
    certainty: float
    labels: tuple[str, ...]


def read_run_stats(stats_path: Path) -> dict:
    """The engine's stats JSON (``{}`` when it wrote none); :class:`InputError` when it is not a JSON object."""
    if not Path(stats_path).is_file():
        return {}
    stats = parse_json(Path(stats_path), f"The engine's statistics {stats_path}", "run again.", max_bytes=STATS_BYTES)
    if not isinstance(stats, dict):
        raise InputError(f"The engine's statistics {stats_path} are not a JSON object; run again.")
    return stats


def read_doubtful_slices(stats_path: Path, stats: dict | None = None) -> list[DoubtfulSlice]:
    """The ``doubtful_slices`` of the engine's stats JSON, lowest certainty first, with centres converted LPS -> RAS.

    ``stats``: the file's content when it was read already (:func:`read_run_stats`), so it is not read again.
    """
    stats = read_run_stats(stats_path) if stats is None else stats
    try:
        entries = stats.get("doubtful_slices", [])
        slices = [
            DoubtfulSlice(
                slice_index=int(entry["slice_index"]),
                axis=str(entry["axis"]),
                center_ras=lps_to_ras(entry["center_lps"]),
                certainty=float(entry["certainty"]),
                labels=tuple(str(label) for label in entry.get("labels", [])),
            )
            for entry in entries
        ]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise InputError(f"The engine's statistics {stats_path} are malformed ({error}); run again.") from error
    return sorted(slices, key=lambda doubtful: doubtful.certainty)
