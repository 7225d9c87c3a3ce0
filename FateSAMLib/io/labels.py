"""Label maps read and written: plain label maps (NIfTI, NRRD, MHA) and Slicer .seg.nrrd files with segment names and
colours; label values are integers in 0..65535 (the 16-bit label maps that are written).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from ..atomic import write_file_atomically
from ..errors import InputError
from ..formats import OUTPUT_SUFFIXES, SEGMENTATION_SUFFIX, check_file_name, is_segmentation_file, output_suffix
from ..memory import is_allocation_failure
from ..segments import MAX_LABEL_VALUE, Segment, default_segment
from .geometry import (
    SliceFrame,
    grid_mismatch_error,
    grids_match,
    ijk_to_lps,
    index_to_lps,
    lps_to_index,
    set_ijk_to_lps,
)
from .images import allocation_error, read_volume
from .integrity import check_image_file
from .label_names import label_names_for

logger = logging.getLogger(__name__)

# More label values than this in a support's label map is more likely an image passed as labels than a label map (a
# whole-body atlas has about 120 structures: such a map gets the warning and is used all the same).
MANY_LABEL_VALUES = 64
_SWAPPED_HINT = "Were the image and its labels swapped? --support takes IMAGE LABELS, in that order."

_PLAIN_LABELS_NOTE = (
    "A plain label map must be on exactly its image's grid (only a Slicer .seg.nrrd may cover a cropped part of it).\n"
)


def label_image(array_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A UInt16 label image from a (z, y, x) array, on the reference's grid."""
    array = np.asarray(array_zyx)
    if array.size and (array.min() < 0 or array.max() > MAX_LABEL_VALUE):
        raise InputError(
            f"Label values must lie in 0..{MAX_LABEL_VALUE}; relabel the segments with values 1..{MAX_LABEL_VALUE}."
        )
    image = sitk.GetImageFromArray(array.astype(np.uint16, copy=False))
    image.CopyInformation(reference)
    return image


def _check_largest_label(value: int, path: str | Path) -> None:
    if value > MAX_LABEL_VALUE:
        raise InputError(
            f"{path} has the label value {value}, above {MAX_LABEL_VALUE}, the largest a (16-bit) label map can hold. "
            f"Relabel its structures with values 1..{MAX_LABEL_VALUE}, then try again."
        )


def _integer_labels(array: np.ndarray, path: str | Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError(
                f"{path} holds non-integer values, so it is not a label map. {_SWAPPED_HINT} Otherwise save the "
                "segmentation as a label map (integer voxels, 0 = background), or as a .seg.nrrd from 3D Slicer."
            )
        array = array.astype(np.int64)
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise InputError(f"{path} holds negative label values; relabel its structures with values 1, 2, ...")
    if array.size:
        _check_largest_label(int(array.max()), path)
    return array


def _header_lines(path: Path) -> list[bytes]:
    """The lines of an attached NRRD header (up to the blank line before the voxels)."""
    lines = []
    with path.open("rb") as file:
        for line in file:
            line = line.rstrip(b"\r\n")
            if not line:
                break
            lines.append(line)
    return lines


def _utf8_segment_names(path: Path) -> dict[str, str]:
    """Segment ID -> name, from the header read as UTF-8 as 3D Slicer writes it (slicerio's reader keeps ASCII only)."""
    fields = {}
    for line in _header_lines(path):
        key, separator, value = line.decode("utf-8", "replace").partition(":=")
        if separator and re.fullmatch(r"Segment\d+_(ID|Name)", key):
            fields[key] = value
    return {fields[key]: fields.get(f"{key[:-3]}_Name", "") for key in fields if key.endswith("_ID")}


def _write_utf8_names(path: Path, names: dict[str, str]) -> None:
    """Put back, UTF-8 encoded, the segment names that stand in ``path``'s header as the ASCII keys of ``names``
    (slicerio's writer refuses other characters)."""
    data = path.read_bytes()
    end = data.index(b"\n\n") + 1
    header = data[:end]
    for placeholder, name in names.items():
        header = header.replace(f"_Name:={placeholder}\n".encode(), f"_Name:={name}\n".encode())
    path.write_bytes(header + data[end:])


def _usable_segments(path: Path, entries: list[dict], layers: int) -> list[dict]:
    """A .seg.nrrd's segment entries without those of label value 0 (a warning each), once every one is known to lie
    on one of the file's ``layers`` (else :class:`InputError`)."""
    for entry in entries:
        name = entry.get("name", entry.get("id"))
        if entry.get("layer", 0) not in range(layers):
            raise InputError(
                f"{path}: its segment '{name}' is on layer {entry.get('layer')}, but the file holds {layers} layer(s). "
                "The file is damaged or was edited by hand: save the segmentation again from 3D Slicer."
            )
        if entry.get("labelValue", 1) == 0:
            logger.warning(
                f"{path}: the segment '{name}' has the label value 0, the background's, so it would cover every "
                "unlabelled voxel; it is left out. In 3D Slicer, give it a value of 1 or more (or export the "
                "segmentation again), then save it."
            )
    return [entry for entry in entries if entry.get("labelValue", 1) != 0]


def _read_segmentation(path: Path) -> tuple[sitk.Image, list[Segment]]:
    check_image_file(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio/pynrrd raise several exception types for broken files
        if is_allocation_failure(error):
            raise allocation_error(path) from None
        raise InputError(
            f"{path} could not be read as a Slicer segmentation ({error}). Save it again from 3D Slicer as .seg.nrrd."
        ) from error
    voxels = np.asarray(segmentation["voxels"])  # (i, j, k) or (layer, i, j, k)
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels
    entries = segmentation.get("segments", [])
    if any(not line.isascii() for line in _header_lines(path)):
        names = _utf8_segment_names(path)
        entries = [{**entry, "name": names[entry["id"]]} if names.get(entry.get("id")) else entry for entry in entries]
    entries = _usable_segments(path, entries, len(layers))
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
    image = set_ijk_to_lps(sitk.GetImageFromArray(array.transpose(2, 1, 0)), segmentation["ijkToLPS"])
    return image, sorted(segments, key=lambda s: s.value)


def read_labels(path: str | Path, names: Mapping[int, str] | None = None) -> tuple[sitk.Image, list[Segment]]:
    """Read a label map or a Slicer .seg.nrrd as an integer (z, y, x) image and its non-empty segments by value.

    Plain label maps get :func:`default_segment` colours and names, but the names of a ``dataset.json`` beside them
    and, above those, ``names`` (see :mod:`.label_names`); a .seg.nrrd keeps its own names and colours.
    Raises :class:`InputError` for a missing, unreadable or truncated file, non-integer, negative or too large
    (above 65535) values, or overlapping segments.
    """
    path = Path(path)
    check_file_name(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist. Check the path of the label map.")
    if is_segmentation_file(path):
        return _read_segmentation(path)
    return labels_of_image(read_volume(path), path, label_names_for(path, names))


def labels_of_image(
    image: sitk.Image, name: str | Path, names: Mapping[int, str] | None = None
) -> tuple[sitk.Image, list[Segment]]:
    """A plain label map already in memory (``name`` in messages) as :func:`read_labels` returns one: checked as
    integer values in 0..65535, with default segments, named by ``names`` where they name a value."""
    array = _integer_labels(sitk.GetArrayFromImage(image), name)
    values = [int(v) for v in np.unique(array) if v != 0]
    named = names or {}
    segments = [default_segment(v) for v in values]
    return label_image(array, image), [replace(s, name=named.get(s.value, s.name)) for s in segments]


def _paste_subgrid(labels: sitk.Image, reference: sitk.Image) -> sitk.Image | None:
    """``labels`` placed on the reference grid when it is an exact, inside sub-grid of it (a cropped export)."""
    probe = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    probe.SetSpacing(reference.GetSpacing())
    probe.SetDirection(reference.GetDirection())
    offset = np.round(lps_to_index(reference, [labels.GetOrigin()])[0]).astype(int)
    end = offset + np.array(labels.GetSize())
    if np.any(offset < 0) or np.any(end > np.array(reference.GetSize())):
        return None
    probe.SetOrigin(index_to_lps(reference, [offset])[0].tolist())
    if not grids_match(labels, probe):
        return None
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.int64)
    array[offset[2] : end[2], offset[1] : end[1], offset[0] : end[0]] = sitk.GetArrayViewFromImage(labels)
    return label_image(array, reference)


def on_reference_grid(labels: sitk.Image, reference: sitk.Image, what: str, *, cropped: bool = False) -> sitk.Image:
    """``labels`` with the reference's exact geometry: the same grid (within tolerance) or, if ``cropped`` is allowed
    (a Slicer .seg.nrrd, see :func:`is_segmentation_file`), an aligned sub-grid padded with background."""
    if grids_match(labels, reference):
        return label_image(sitk.GetArrayViewFromImage(labels), reference)
    placed = _paste_subgrid(labels, reference) if cropped else None
    if placed is None:
        raise grid_mismatch_error(labels, reference, what, "" if cropped else _PLAIN_LABELS_NOTE)
    return placed


def read_labels_on_grid(
    path: str | Path, reference: sitk.Image, what: str, names: Mapping[int, str] | None = None
) -> tuple[sitk.Image, list[Segment]]:
    """Read a label map or .seg.nrrd onto ``reference``'s grid (``what`` names the pair in a mismatch message).

    A plain label map must be on the reference's grid; a .seg.nrrd on a cropped but aligned sub-grid of it (as Slicer
    may save) is padded with background. Raises :class:`InputError` as :func:`read_labels` does, and for another grid.
    """
    labels, segments = read_labels(path, names)
    return on_reference_grid(labels, reference, what, cropped=is_segmentation_file(path)), segments


def read_label_map(
    path: str | Path, reference: sitk.Image, names: Mapping[int, str] | None = None
) -> tuple[sitk.Image, list[Segment]]:
    """Read support labels onto ``reference``'s grid (see :func:`read_labels_on_grid`); refuses empty labels, and
    warns (``FateSAMLib`` logger) when there are more than ``MANY_LABEL_VALUES`` values: an image passed as labels?"""
    labels, segments = read_labels_on_grid(path, reference, f"{path} does not match its image", names)
    require_segments(segments, path)
    if len(segments) > MANY_LABEL_VALUES:
        logger.warning(
            f"{path} holds {len(segments)} different label values, more than a label map usually has (an image's "
            f"intensities?). {_SWAPPED_HINT} Each value is used as a structure of its own."
        )
    return labels, segments


def require_segments(segments: list[Segment], name: str | Path) -> None:
    """InputError when support labels (``name`` in the message) hold no segment."""
    if not segments:
        raise InputError(f"{name}: the support labels are empty (no foreground voxel). Draw the structures first.")


def labels_on_grid(stack_labels: np.ndarray, reference: sitk.Image, frame: SliceFrame) -> sitk.Image:
    """A label stack in ``frame`` (the reference's) back on ``reference``'s voxel grid (same size, spacing, origin,
    direction)."""
    return label_image(frame.from_slices(stack_labels), reference)


def segments_for_values(values: np.ndarray, segments: list[Segment]) -> list[Segment]:
    """``segments`` plus a default segment for every label value in ``values`` that none describes, by value."""
    known = {s.value: s for s in segments}
    for value in np.unique(values):
        if value != 0 and int(value) not in known:
            known[int(value)] = default_segment(int(value))
    return sorted(known.values(), key=lambda s: s.value)


def _write_segmentation(image: sitk.Image, path: str, segments: list[Segment]) -> None:
    voxels = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))  # slicerio indexes voxels as (i, j, k)
    segmentation = slicerio.create_segmentation(voxels.shape, ijk_to_lps(image), dtype=voxels.dtype)
    segmentation["voxels"][...] = voxels
    described = segments_for_values(voxels, segments)
    stand_ins = {s.value: f"@FateSAM-name-{s.value}@" for s in described if not s.name.isascii()}
    segmentation["segments"] = [
        {
            "id": f"Segment_{s.value}",
            "labelValue": s.value,
            "layer": 0,
            "name": stand_ins.get(s.value, s.name),
            "nameAutoGenerated": False,
            "color": list(s.color),
            "colorAutoGenerated": False,
        }
        for s in described
    ]
    slicerio.write_segmentation(path, segmentation)
    if stand_ins:
        _write_utf8_names(Path(path), {stand_ins[s.value]: s.name for s in described if s.value in stand_ins})


def label_map_writer(image: sitk.Image, path: str | Path, segments: list[Segment]) -> Callable[[Path], None]:
    """What writes ``image`` in ``path``'s format to a given file, once its format and label values are checked.

    ``.seg.nrrd`` gives a Slicer segmentation with the segments' names and colours (a label value without a segment
    gets a default one); ``.nii.gz``, ``.nii``, ``.nrrd`` and ``.mha`` a plain label map (uint8, or uint16 above 255).
    """
    suffix = output_suffix(path)
    if not suffix:
        raise InputError(f"Cannot write {path}: use one of {', '.join(OUTPUT_SUFFIXES)}.")
    array = sitk.GetArrayViewFromImage(image)
    if array.min(initial=0) < 0 or array.max(initial=0) > MAX_LABEL_VALUE:
        raise InputError(
            f"Cannot write {path}: label values must lie in 0..{MAX_LABEL_VALUE} (found {array.min()}..{array.max()}). "
            "Relabel the segments with smaller non-negative values."
        )
    labels = sitk.Cast(image, sitk.sitkUInt8 if array.max(initial=0) <= 255 else sitk.sitkUInt16)

    def write(target: Path) -> None:
        if suffix == SEGMENTATION_SUFFIX:
            _write_segmentation(labels, str(target), segments)
        else:
            sitk.WriteImage(labels, str(target), useCompression=True)

    return write


def write_label_map(image: sitk.Image, path: str | Path, segments: list[Segment], overwrite: bool = False) -> Path:
    """Write ``image`` to ``path`` (format by suffix, see :func:`label_map_writer`) all or nothing.

    The file is written next to ``path`` under a temporary name, then published; an existing file, or one that
    appears meanwhile, is replaced only with ``overwrite``. Missing parent folders are created.
    """
    return write_file_atomically(path, label_map_writer(image, path, segments), overwrite, output_suffix(path))
