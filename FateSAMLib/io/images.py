"""Reading images (NIfTI, NRRD, MHA, DICOM series): complete, scalar, 3D, finite, not blank.

Every file is first checked for completeness (:mod:`.integrity`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, suffix_of
from .integrity import check_file_integrity, non_finite_error

logger = logging.getLogger(__name__)


def _check_volume(image: sitk.Image, path: str | Path) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image). "
            "FateSAM needs a scalar (grey-level) volume: convert it to a single channel first."
        )
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(
            f"{path} is a {image.GetDimension()}D image of size {image.GetSize()}; FateSAM segments 3D volumes with "
            "at least 2 slices along each axis. For a DICOM series, pass the folder that holds all its files."
        )


def _check_intensities(image: sitk.Image, path: str | Path) -> None:
    array = sitk.GetArrayViewFromImage(image)
    low, high = array.min(), array.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise non_finite_error(path)
    if low == high:
        raise InputError(
            f"{path} has a single intensity value, {low:g}, everywhere: the volume is blank, so there is nothing to "
            "segment or learn from. Check that this is the intended file (open it in 3D Slicer) and export it again."
        )


def _read_dicom_series(folder: Path) -> sitk.Image:
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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    return reader.Execute()


def read_volume(path: Path) -> sitk.Image:
    """A scalar 3D volume from a complete file or a DICOM series folder (intensities not checked)."""
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the path (and that the disk or share is mounted).")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        elif not suffix_of(path, IMAGE_SUFFIXES):
            raise InputError(
                f"{path} has an unsupported file type. Use {', '.join(IMAGE_SUFFIXES)} or a DICOM series folder "
                "(in 3D Slicer: right-click the volume > Export to file... > .nrrd)."
            )
        else:
            check_file_integrity(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            f"{path} could not be read ({str(error).strip().splitlines()[-1]}). Check that the file is complete and "
            "in one of the supported formats, e.g. by opening it in 3D Slicer."
        ) from error
    _check_volume(image, path)
    return image


def read_image(path: str | Path) -> sitk.Image:
    """Read a scalar 3D volume: NIfTI, NRRD, MHA/MHD, or a DICOM series folder (its largest series, with a warning).

    Raises :class:`InputError` for a missing, unreadable or truncated file, a 2D image, a colour/vector image, NaN or
    infinite values, or a blank volume (one intensity everywhere).
    """
    path = Path(path)
    image = read_volume(path)
    _check_intensities(image, path)
    return image


def check_image(image: sitk.Image, name: str) -> sitk.Image:
    """An image already in memory (``name`` in messages), checked as :func:`read_image` checks a file's."""
    _check_volume(image, name)
    _check_intensities(image, name)
    return image
