"""Writing a run's probabilities (``method.probabilities``): one vector image, one uint8 component per segment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..formats import PROBABILITY_SUFFIXES, suffix_of


def probability_suffix(path: str | Path) -> str:
    """The format suffix of a probabilities path; :class:`InputError` for one not in :data:`PROBABILITY_SUFFIXES`."""
    suffix = suffix_of(path, PROBABILITY_SUFFIXES)
    if not suffix or suffix_of(path) != suffix:  # e.g. .seg.nrrd is a segmentation, not a plain .nrrd
        raise InputError(
            f"--probabilities {path}: use one of {', '.join(PROBABILITY_SUFFIXES)} (a vector image, one component "
            "per segment)."
        )
    return suffix


def probability_writer(image: sitk.Image) -> Callable[[Path], None]:
    """What writes the probability ``image`` to a given file (compressed, format by the file's suffix)."""

    def write(target: Path) -> None:
        sitk.WriteImage(image, str(target), useCompression=True)

    return write
