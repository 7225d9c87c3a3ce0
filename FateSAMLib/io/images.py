"""Reading images (NIfTI, NRRD, MHA, DICOM series): complete, scalar, 3D, finite, not blank.

Every file's header is checked first, before any voxel is read (:mod:`.integrity`: data files only beside it, a
size that fits in memory, complete), every DICOM series for one regular grid of slices (:mod:`.dicom_series`), and
every path for UTF-8 text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, ResourceError
from ..formats import IMAGE_SUFFIXES, check_file_name, suffix_of
from ..memory import host_memory_bytes, is_allocation_failure, not_enough_memory_error
from .dicom_series import series_files
from .integrity import check_image_file, non_finite_error


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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series_files(folder))
    return reader.Execute()


def allocation_error(path: Path) -> ResourceError:
    """The error for a reader that could not allocate a file's voxels: not enough memory, not a damaged file."""
    return not_enough_memory_error(f"reading {path} failed to allocate its voxels", "this machine", host_memory_bytes())


def read_volume(path: Path) -> sitk.Image:
    """A scalar 3D volume from a complete file or a DICOM series folder (intensities not checked)."""
    check_file_name(path)
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
            check_image_file(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        if is_allocation_failure(error):
            raise allocation_error(path) from None
        raise InputError(
            f"{path} could not be read ({str(error).strip().splitlines()[-1]}). Check that the file is complete and "
            "in one of the supported formats, e.g. by opening it in 3D Slicer."
        ) from error
    _check_volume(image, path)
    return image


def read_image(path: str | Path) -> sitk.Image:
    """Read a scalar 3D volume: NIfTI, NRRD, MHA/MHD, or a DICOM series folder (its largest series, with a warning).

    Raises :class:`InputError` for a missing, unreadable or truncated file, a header naming a data file elsewhere
    than beside it, a DICOM series that is not one regular grid, a path that is not UTF-8, a 2D image, a
    colour/vector image, NaN or infinite values, or a blank volume (one intensity everywhere); and
    :class:`~FateSAMLib.errors.ResourceError` when its voxels would not fit in memory.
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
