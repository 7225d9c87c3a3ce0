"""Segment descriptions (label value, name, colour) carried from the supports to the output, and the one rule by
which segment names match (:func:`segment_key`), on the command line and in Slicer alike."""

from __future__ import annotations

from dataclasses import dataclass

MAX_LABEL_VALUE = 65535
"""The largest label value: label maps are written with 16-bit voxels."""

# Distinct, readable colours for segments that come without one (RGB in [0, 1]).
_DEFAULT_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.89, 0.10, 0.11),
    (0.22, 0.49, 0.72),
    (0.30, 0.69, 0.29),
    (0.60, 0.31, 0.64),
    (1.00, 0.50, 0.00),
    (1.00, 1.00, 0.20),
    (0.65, 0.34, 0.16),
    (0.97, 0.51, 0.75),
    (0.40, 0.76, 0.65),
    (0.55, 0.63, 0.80),
)


@dataclass(frozen=True)
class Segment:
    """One structure to segment: its label value in label maps, its display name and RGB colour in [0, 1]."""

    value: int
    name: str
    color: tuple[float, float, float]


def default_segment(value: int) -> Segment:
    """The segment used for a label value that has no name or colour: "Label N" with a palette colour."""
    return Segment(value=value, name=f"Label {value}", color=_DEFAULT_COLORS[(value - 1) % len(_DEFAULT_COLORS)])


def segment_key(name: str) -> str:
    """What two segment names must share to name the same structure: the name without surrounding spaces, casefolded.

    "Liver", " liver " and "LIVER" match; so do "Straße" and "STRASSE" (Unicode case folding, not ``lower()``).
    """
    return name.strip().casefold()
