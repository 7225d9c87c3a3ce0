"""File formats by suffix: the one list of what FateSAM reads and writes, and the one rule that finds a path's suffix.

Standard library only: the Slicer tier (which never imports ``io``) uses it as well as ``io`` and ``cli``.
Suffixes are compared case-insensitively and the longest one that matches wins (``case.seg.nrrd`` is a Slicer
segmentation, not a plain ``.nrrd``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

SEGMENTATION_SUFFIX = ".seg.nrrd"
NRRD_SUFFIX = ".nrrd"

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (NRRD_SUFFIX, ".nhdr")
METAIMAGE_SUFFIXES = (".mha", ".mhd")

IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, *NRRD_SUFFIXES, *METAIMAGE_SUFFIXES)
"""Volumes (and plain label maps) that are read; a DICOM series is read from its folder."""

LABEL_SUFFIXES = (SEGMENTATION_SUFFIX, *IMAGE_SUFFIXES)
"""Label files that are read: a Slicer segmentation, or a plain label map in any image format."""

OUTPUT_SUFFIXES = (SEGMENTATION_SUFFIX, ".nii.gz", ".nii", NRRD_SUFFIX, ".mha")
"""Label maps that are written (single-file formats only)."""

PROBABILITY_SUFFIXES = (NRRD_SUFFIX, ".nii.gz", ".nii", ".mha")
"""Probability images that are written: one uint8 component per segment, on the query's grid."""


def suffix_of(path: str | Path, suffixes: tuple[str, ...] = LABEL_SUFFIXES) -> str:
    """The longest of ``suffixes`` that ``path``'s file name ends with, ignoring case ('' when none does)."""
    name = Path(path).name.lower()
    return max((suffix for suffix in suffixes if name.endswith(suffix)), key=len, default="")


def output_suffix(path: str | Path) -> str:
    """The output format's suffix of ``path`` ('' when it is none of :data:`OUTPUT_SUFFIXES`)."""
    return suffix_of(path, OUTPUT_SUFFIXES)


def is_segmentation_file(path: str | Path) -> bool:
    """Whether ``path`` names a Slicer segmentation (.seg.nrrd), which may cover a cropped part of its image."""
    return suffix_of(path, (SEGMENTATION_SUFFIX,)) != ""


def file_stem(path: str | Path, suffixes: tuple[str, ...] = LABEL_SUFFIXES) -> str:
    """``path``'s file name without its suffix from ``suffixes`` ('case.seg.nrrd' -> 'case', 'case.nii.gz' -> 'case'),
    or without its last extension when none of them matches."""
    name = Path(path).name
    suffix = suffix_of(name, suffixes)
    return (name[: len(name) - len(suffix)] if suffix else Path(name).stem) or name


def check_file_name(path: str | bytes | os.PathLike) -> None:
    """Refuse (:class:`InputError`) a path that is not UTF-8 text, e.g. a Linux file name saved in Latin-1: the image
    libraries take UTF-8 paths only (SimpleITK aborts the process on any other). Other non-ASCII names are fine."""
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            shown = os.fsencode(text).decode("utf-8", "backslashreplace")  # b"case\xff" shows as case\xff
        except UnicodeEncodeError:  # a surrogate that no file system name decodes to
            shown = text.encode("utf-8", "backslashreplace").decode()
        raise InputError(
            f"{shown}: this path is not UTF-8 text (a file or folder name in another encoding), which FateSAM's image "
            "libraries cannot open. Rename the file or folder with UTF-8 characters, then try again."
        ) from None
