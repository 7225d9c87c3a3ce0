"""Reading images and label maps (NIfTI, NRRD, MHA, DICOM series, Slicer .seg.nrrd) with their geometry checked.

Every file is first checked for completeness (:mod:`.file_integrity`); an image must be a scalar 3D volume with
finite intensities that are not all equal; label values must be integers in 0..65535 (the 16-bit label maps that
are written).

Grids: a plain label map (NIfTI, NRRD, MHA) must be on exactly its image's grid; only a Slicer .seg.nrrd, which
carries its own extent and is often saved cropped to its segments, may cover an aligned sub-grid of the image, and
is then padded with background. Two grids match when their sizes are equal, their spacings agree to
``GEOMETRY_TOLERANCE`` relative, their direction matrices to ``GEOMETRY_TOLERANCE`` absolute, and their origins to
``GEOMETRY_TOLERANCE`` of the smallest voxel size. Labels that match are put on the reference grid exactly (its
geometry is copied).

Why 1e-4: the same grid written by two programs differs by rounding only. NIfTI stores spacing, origin and the
orientation quaternion as float32 (relative precision 6e-8: 6e-6 mm at 100 mm from the origin) and DICOM as decimal
strings, so a grid that went through NIfTI and came back through NRRD (double precision) differs by about 1e-6; ITK's
own filters, which demand 1e-6 of the spacing, refuse such pairs. Any real misalignment is far larger: a shift of
1e-4 voxel, or a rotation of 1e-4 rad (0.006 degrees, 0.05 voxel at 512 voxels from the origin), changes which
voxel a point falls in for no practical volume, while one slice of crop or another case's scan is off by whole
voxels and is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from .errors import InputError
from .file_integrity import check_file_integrity, non_finite_error
from .segments import Segment, default_segment

GEOMETRY_TOLERANCE = 1e-4
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEGMENTATION_SUFFIX = ".seg.nrrd"
_MAX_LABEL = int(np.iinfo(np.uint16).max)
_PLAIN_LABELS_NOTE = (
    "A plain label map must be on exactly its image's grid (only a Slicer .seg.nrrd may cover a cropped part of it).\n"
)


def _suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    name = path.name.lower()
    return next((s for s in suffixes if name.endswith(s)), None)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _describe(image: sitk.Image) -> str:
    return (
        f"size {image.GetSize()}, spacing {_fmt(image.GetSpacing())} mm, origin {_fmt(image.GetOrigin())} mm, "
        f"direction {_fmt(image.GetDirection())}"
    )


def is_segmentation_file(path: str | Path) -> bool:
    """Whether ``path`` names a Slicer segmentation (.seg.nrrd), which may cover a cropped part of its image."""
    return _suffix(Path(path), (SEGMENTATION_SUFFIX,)) is not None


def _geometry_matches(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    voxel = min(spacing_a.min(), spacing_b.min())
    return bool(
        np.all(np.abs(spacing_a - spacing_b) <= GEOMETRY_TOLERANCE * np.maximum(spacing_a, spacing_b))
        and np.all(np.abs(np.array(a.GetDirection()) - np.array(b.GetDirection())) <= GEOMETRY_TOLERANCE)
        and np.all(np.abs(np.array(a.GetOrigin()) - np.array(b.GetOrigin())) <= GEOMETRY_TOLERANCE * voxel)
    )


def _grid_error(a: sitk.Image, b: sitk.Image, what: str, note: str = "") -> InputError:
    return InputError(
        f"{what}: the voxel grids differ.\n  first:  {_describe(a)}\n  second: {_describe(b)}\n{note}"
        "Resample the labels onto the image grid (in 3D Slicer: Segment Editor with the image as source "
        "geometry, or the 'Resample Image (BRAINS)' module with the image as reference), then try again."
    )


def check_same_geometry(a: sitk.Image, b: sitk.Image, what: str) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` share size, spacing, origin and direction (see tolerance)."""
    if not _geometry_matches(a, b):
        raise _grid_error(a, b, what)


def _check_volume(image: sitk.Image, path: Path) -> None:
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


def _check_intensities(image: sitk.Image, path: Path) -> None:
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
        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; reading the largest ({chosen}, {len(files[chosen])} files). "
            "To use another one, put its files in a folder of their own and pass that folder.",
            stacklevel=3,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    return reader.Execute()


def _read_volume(path: Path) -> sitk.Image:
    """A scalar 3D volume from a complete file or a DICOM series folder (intensities not checked)."""
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the path (and that the disk or share is mounted).")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        elif _suffix(path, IMAGE_SUFFIXES) is None:
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
    image = _read_volume(path)
    _check_intensities(image, path)
    return image


def label_image(array_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A UInt16 label image from a (z, y, x) array, on the reference's grid."""
    array = np.asarray(array_zyx)
    if array.size and (array.min() < 0 or array.max() > _MAX_LABEL):
        raise InputError(f"Label values must lie in 0..{_MAX_LABEL}; relabel the segments with values 1..{_MAX_LABEL}.")
    image = sitk.GetImageFromArray(array.astype(np.uint16, copy=False))
    image.CopyInformation(reference)
    return image


def _check_largest_label(value: int, path: Path) -> None:
    if value > _MAX_LABEL:
        raise InputError(
            f"{path} has the label value {value}, above {_MAX_LABEL}, the largest a (16-bit) label map can hold. "
            f"Relabel its structures with values 1..{_MAX_LABEL}, then try again."
        )


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError(
                f"{path} holds non-integer values, so it is not a label map. Save the segmentation as a label map "
                "(integer voxels, 0 = background), or as a .seg.nrrd from 3D Slicer."
            )
        array = array.astype(np.int64)
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise InputError(f"{path} holds negative label values; relabel its structures with values 1, 2, ...")
    if array.size:
        _check_largest_label(int(array.max()), path)
    return array


def _read_segmentation(path: Path) -> tuple[sitk.Image, list[Segment]]:
    check_file_integrity(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio/pynrrd raise several exception types for broken files
        raise InputError(
            f"{path} could not be read as a Slicer segmentation ({error}). Save it again from 3D Slicer as .seg.nrrd."
        ) from error
    voxels = np.asarray(segmentation["voxels"])  # (i, j, k) or (layer, i, j, k)
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels
    entries = segmentation.get("segments", [])
    masks = [layers[entry.get("layer", 0)] == entry.get("labelValue", 1) for entry in entries]
    if len(masks) > 1 and (np.sum(masks, axis=0) > 1).any():
        raise InputError(
            f"{path} has overlapping segments. FateSAM needs non-overlapping structures: in 3D Slicer's Segment "
            "Editor set 'Modify other segments' to 'Overwrite all' and repaint the overlap, or export one label map."
        )
    array = np.zeros(layers.shape[1:], dtype=np.int64)
    segments, used = [], set()
    for entry, mask in zip(entries, masks, strict=True):
        if not mask.any():
            continue
        value = int(entry.get("labelValue", 1))
        while value in used:  # values repeat across layers: give the later segment the next free one
            value += 1
        _check_largest_label(value, path)
        used.add(value)
        array[mask] = value
        color = tuple(float(c) for c in entry["color"]) if "color" in entry else default_segment(value).color
        segments.append(Segment(value=value, name=entry.get("name", f"Label {value}"), color=color))
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).flatten().tolist())
    return image, sorted(segments, key=lambda s: s.value)


def read_labels(path: str | Path) -> tuple[sitk.Image, list[Segment]]:
    """Read a label map or a Slicer .seg.nrrd as an integer (z, y, x) image and its non-empty segments by value.

    Plain label maps get :func:`default_segment` names and colours; a .seg.nrrd keeps its names and colours.
    Raises :class:`InputError` for a missing, unreadable or truncated file, non-integer, negative or too large
    (above 65535) values, or overlapping segments.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist. Check the path of the label map.")
    if is_segmentation_file(path):
        return _read_segmentation(path)
    image = _read_volume(path)
    array = _integer_labels(sitk.GetArrayFromImage(image), path)
    values = [int(v) for v in np.unique(array) if v != 0]
    return label_image(array, image), [default_segment(v) for v in values]


def _paste_subgrid(labels: sitk.Image, reference: sitk.Image) -> sitk.Image | None:
    """``labels`` placed on the reference grid when it is an exact, inside sub-grid of it (a cropped export)."""
    probe = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    probe.SetSpacing(reference.GetSpacing())
    probe.SetDirection(reference.GetDirection())
    index = np.array(reference.TransformPhysicalPointToContinuousIndex(labels.GetOrigin()))
    offset = np.round(index).astype(int)
    end = offset + np.array(labels.GetSize())
    if np.any(offset < 0) or np.any(end > np.array(reference.GetSize())):
        return None
    probe.SetOrigin(reference.TransformIndexToPhysicalPoint(offset.tolist()))
    if not _geometry_matches(labels, probe):
        return None
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.int64)
    array[offset[2] : end[2], offset[1] : end[1], offset[0] : end[0]] = sitk.GetArrayViewFromImage(labels)
    return label_image(array, reference)


def on_reference_grid(labels: sitk.Image, reference: sitk.Image, what: str, *, cropped: bool = False) -> sitk.Image:
    """``labels`` with the reference's exact geometry: the same grid (within tolerance) or, if ``cropped`` is allowed
    (a Slicer .seg.nrrd, see :func:`is_segmentation_file`), an aligned sub-grid padded with background."""
    if _geometry_matches(labels, reference):
        return label_image(sitk.GetArrayViewFromImage(labels), reference)
    placed = _paste_subgrid(labels, reference) if cropped else None
    if placed is None:
        raise _grid_error(labels, reference, what, "" if cropped else _PLAIN_LABELS_NOTE)
    return placed


def read_label_map(path: str | Path, reference: sitk.Image) -> tuple[sitk.Image, list[Segment]]:
    """Read support labels (label map or .seg.nrrd) onto ``reference``'s grid; returns the image and its segments.

    A plain label map must be on the reference's grid; a .seg.nrrd on a cropped but aligned sub-grid of it (as Slicer
    may save) is padded with background. Raises :class:`InputError` as :func:`read_labels` does, and for another
    grid or no foreground.
    """
    labels, segments = read_labels(path)
    if not segments:
        raise InputError(f"{path}: the support labels are empty (no foreground voxel). Draw the structures first.")
    what = f"{path} does not match its image"
    return on_reference_grid(labels, reference, what, cropped=is_segmentation_file(path)), segments
