"""DICOM series folders: the series read (the largest one), its files checked to form one regular grid of slices.

ITK's series reader takes the first slice's orientation and the distance between the first two slices, and spreads
every other slice evenly: a series with a missing or duplicated slice, uneven spacing, or one slice of another
orientation, pixel spacing or size would be read onto a wrong grid (a duplicated slice halves the slice spacing).
:func:`series_files` therefore reads each file's header (no pixels), sorts the slices by their position along the
slice normal, and refuses the series unless they form one regular grid:

- every slice says where it lies (Image Position (Patient)), and has the size, pixel spacing (relative
  ``SPACING_TOLERANCE``) and orientation (``ORIENTATION_TOLERANCE`` on each direction cosine) of the most common one;
- consecutive slices are one slice spacing (the median distance) apart, within ``POSITION_TOLERANCE`` of it: no
  two slices at one position, no gap, no uneven step;
- no slice is shifted within its plane by more than ``POSITION_TOLERANCE`` of the smallest pixel spacing (as a
  tilted gantry's or another scan's slices are).

The tolerances cover what a scanner's rounding of positions (decimal strings, often to 0.01 mm or finer) and
orientations (6 decimals) leaves; a missing, doubled or extra slice, a step of another thickness or a shift by a
pixel are far beyond them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..formats import check_file_name
from .integrity import check_fits_in_memory

logger = logging.getLogger(__name__)

POSITION_TOLERANCE = 0.1  # fraction of the slice spacing (along the normal) or of the pixel spacing (in-plane)
SPACING_TOLERANCE = 1e-3  # relative
ORIENTATION_TOLERANCE = 1e-3
_LISTED = 4  # slice files named in a message at most


@dataclass(frozen=True)
class _Slice:
    name: str
    size: tuple[int, ...]
    spacing: np.ndarray  # (column, row) in mm
    direction: np.ndarray  # 3x3, columns: along a row, along a column, the slice normal
    origin: np.ndarray  # the position of the first pixel, LPS mm
    positioned: bool  # whether the file says where it lies (Image Position (Patient)); else the origin is made up
    values: int  # pixels x components
    value_size: int  # bytes


def _read_slice(path: str) -> _Slice:
    check_file_name(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return _Slice(
        Path(path).name,
        reader.GetSize(),
        np.array(reader.GetSpacing()[:2]),
        np.array(reader.GetDirection()).reshape(3, 3),
        np.array(reader.GetOrigin()),
        reader.HasMetaDataKey("0020|0032"),
        math.prod(reader.GetSize()) * reader.GetNumberOfComponents(),
        sitk.Image([1, 1], reader.GetPixelID()).GetSizeOfPixelComponent(),
    )


def _names(slices: list[_Slice]) -> str:
    names = [s.name for s in slices[:_LISTED]]
    return ", ".join(names) + (f" and {len(slices) - _LISTED} more" if len(slices) > _LISTED else "")


def _odd_ones(slices: list[_Slice]) -> str | None:
    """What sets some slices apart from the most common size, pixel spacing and orientation (None: nothing)."""
    size = Counter(s.size for s in slices).most_common(1)[0][0]
    reference = next(s for s in slices if s.size == size)
    checks = (
        ("size", lambda s: s.size == size, f"{size[0]}x{size[1]}"),
        (
            "pixel spacing",
            lambda s: np.allclose(s.spacing, reference.spacing, rtol=SPACING_TOLERANCE, atol=0),
            "x".join(f"{v:g}" for v in reference.spacing) + " mm",
        ),
        (
            "orientation",
            lambda s: np.allclose(s.direction[:, :2], reference.direction[:, :2], rtol=0, atol=ORIENTATION_TOLERANCE),
            "(" + ", ".join(f"{v:.3g}" for v in reference.direction[:, :2].T.ravel()) + ")",
        ),
    )
    for what, same, expected in checks:
        odd = [s for s in slices if not same(s)]
        if odd:
            return f"{_names(odd)} {'has' if len(odd) == 1 else 'have'} another {what} than the others' {expected}"
    return None


def _irregular_steps(ordered: list[_Slice], positions: np.ndarray) -> str | None:
    """What breaks the even spacing of slices sorted along their normal (None: nothing)."""
    steps = np.diff(positions)
    spacing = float(np.median(steps))
    tolerance = POSITION_TOLERANCE * spacing
    doubled = [i for i, step in enumerate(steps) if step <= tolerance]
    if doubled or spacing <= 0:
        pairs = [f"{ordered[i].name} and {ordered[i + 1].name}" for i in doubled[:_LISTED]] or ["all slices"]
        return f"{'; '.join(pairs)} lie at the same position (a duplicated slice)"
    uneven = [i for i, step in enumerate(steps) if abs(step - spacing) > tolerance]
    if uneven:
        gaps = [f"{steps[i]:.3g} mm between {ordered[i].name} and {ordered[i + 1].name}" for i in uneven[:_LISTED]]
        return f"the slices are {spacing:.3g} mm apart, but {'; '.join(gaps)} (a missing slice or uneven spacing)"
    return None


def _shifted(ordered: list[_Slice], normal: np.ndarray) -> str | None:
    """Slices whose first pixel is off the line through the first slice's along the normal (None: none)."""
    offsets = np.array([s.origin - ordered[0].origin for s in ordered])
    in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    odd = [s for s, shift in zip(ordered, in_plane, strict=True) if shift > POSITION_TOLERANCE * s.spacing.min()]
    if odd:
        return f"{_names(odd)} {'is' if len(odd) == 1 else 'are'} shifted within the slice plane (a tilted gantry?)"
    return None


def _sorted(slices: list[_Slice]) -> tuple[list[int], str | None]:
    """The slices' order along their normal, and what keeps them from one regular grid (None: nothing)."""
    unplaced = [s for s in slices if not s.positioned]
    if unplaced:
        return [], f"{_names(unplaced)} {'has' if len(unplaced) == 1 else 'have'} no slice position (Image Position)"
    problem = _odd_ones(slices)
    normal = slices[0].direction[:, 2]
    positions = np.array([s.origin @ normal for s in slices])
    order = [int(i) for i in np.argsort(positions, kind="stable")]
    ordered = [slices[i] for i in order]
    return order, problem or _irregular_steps(ordered, positions[order]) or _shifted(ordered, normal)


def check_regular_grid(files: list[str], folder: Path, series: str) -> list[str]:
    """``files`` (one DICOM series) sorted along the slice normal, once their voxels are known to fit in memory;
    :class:`InputError` naming the slice files when they are not one regular grid (see the module's notes).
    A series of multi-frame files is left to the reader."""
    slices = [_read_slice(path) for path in files]
    check_fits_in_memory(folder, sum(s.values for s in slices), sum(s.values * s.value_size for s in slices))
    if len(slices) < 2 or any(len(s.size) > 2 and s.size[2] > 1 for s in slices):
        return list(files)
    order, problem = _sorted(slices)
    if problem is not None:
        raise InputError(
            f"{folder}: the DICOM series {series} is not one regular grid of slices: {problem}. Read as it is, its "
            "slices would be spread evenly and misplaced. Export the complete series again from the scanner or PACS "
            "(one series per folder), or remove the files that do not belong to it, then try again."
        )
    return [files[i] for i in order]


def series_files(folder: Path) -> list[str]:
    """The files of the largest DICOM series in ``folder`` (with a warning when it holds several), in slice order,
    checked to form one regular grid (:func:`check_regular_grid`)."""
    check_file_name(folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            f"{folder} is a folder without a DICOM series. Pass a folder of DICOM files, or a NIfTI/NRRD/MHA file."
        )
    files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
    chosen = max(series, key=lambda uid: len(files[uid]))
    if len(series) > 1:
        logger.warning(
            f"{folder} holds {len(series)} DICOM series; reading the largest ({chosen}, {len(files[chosen])} files). "
            "To use another one, put its files in a folder of their own and pass that folder."
        )
    return check_regular_grid(list(files[chosen]), folder, chosen)
