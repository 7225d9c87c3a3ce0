"""One anatomical frame for every volume: slicing along an anatomical axis by axis permutations and flips only.

ITK's physical space is LPS: x grows to the patient's left, y to posterior, z to superior. Each voxel axis is matched
to the anatomical axis its direction is closest to (as ``sitk.DICOMOrient`` does), so an oblique volume is sliced along
its nearest anatomical axis without resampling. Stacks are laid out for reading like a radiologist's display:

- axial: slices inferior -> superior, rows anterior -> posterior, columns right -> left;
- coronal: slices anterior -> posterior, rows superior -> inferior, columns right -> left;
- sagittal: slices right -> left, rows superior -> inferior, columns anterior -> posterior.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volumes import label_image

SLICE_AXES = ("axial", "coronal", "sagittal")
_L, _P, _S = 0, 1, 2
# Per stack axis (slice, row, column): the LPS axis it runs along and whether its index grows with that coordinate.
_LAYOUTS = {
    "axial": ((_S, 1), (_P, 1), (_L, 1)),
    "coronal": ((_P, 1), (_S, -1), (_L, 1)),
    "sagittal": ((_L, 1), (_S, -1), (_P, 1)),
}


@dataclass(frozen=True)
class StackLayout:
    """How to turn a SimpleITK array (z, y, x) into a stack: a transpose, then flips of some stack axes."""

    transpose: tuple[int, int, int]
    flips: tuple[bool, bool, bool]


def anatomical_axes(image: sitk.Image) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For voxel axes i, j, k: the LPS axis each runs along, and the sign (+1/-1) of its direction on that axis.

    The assignment maximises the total alignment over the six permutations, so it is one-to-one even for strongly
    oblique directions.
    """
    direction = np.array(image.GetDirection()).reshape(3, 3)  # column v: direction of voxel axis v
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(direction[p[v], v]) for v in range(3)))
    signs = tuple(1 if direction[best[v], v] >= 0 else -1 for v in range(3))
    return tuple(best), signs


def stack_layout(image: sitk.Image, axis: str) -> StackLayout:
    """The transpose and flips that slice ``image`` along the anatomical ``axis``."""
    if axis not in _LAYOUTS:
        raise InputError(f"Unknown slice axis '{axis}'; use one of {', '.join(SLICE_AXES)} or auto.")
    anatomy, signs = anatomical_axes(image)
    transpose, flips = [], []
    for lps_axis, wanted in _LAYOUTS[axis]:
        voxel_axis = anatomy.index(lps_axis)
        transpose.append(2 - voxel_axis)  # numpy axis of voxel axis v: arrays are (z, y, x)
        flips.append(signs[voxel_axis] * wanted < 0)
    return StackLayout(tuple(transpose), tuple(flips))


def choose_slice_axis(image: sitk.Image, requested: str = "auto") -> str:
    """``requested`` if it names an axis; for ``auto`` the anatomical axis of coarsest spacing (ties: axial)."""
    if requested != "auto":
        if requested not in SLICE_AXES:
            raise InputError(f"Unknown slice axis '{requested}'; use auto, {', '.join(SLICE_AXES)}.")
        return requested
    anatomy, _ = anatomical_axes(image)
    spacing = image.GetSpacing()
    by_axis = {name: spacing[anatomy.index(_LAYOUTS[name][0][0])] for name in SLICE_AXES}
    coarsest = max(by_axis.values())
    return next(name for name in SLICE_AXES if by_axis[name] >= coarsest * (1 - 1e-3))


def to_slices(array_zyx: np.ndarray, image: sitk.Image, axis: str) -> np.ndarray:
    """A SimpleITK-ordered array (z, y, x) of ``image`` as a stack (S, H, W) along ``axis`` in the common frame."""
    if array_zyx.shape != image.GetSize()[::-1]:
        raise ValueError(f"Array shape {array_zyx.shape} is not the image's (z, y, x) size {image.GetSize()[::-1]}.")
    layout = stack_layout(image, axis)
    stack = np.transpose(array_zyx, layout.transpose)
    flipped = [i for i, flip in enumerate(layout.flips) if flip]
    return np.ascontiguousarray(np.flip(stack, axis=flipped) if flipped else stack)


def from_slices(stack: np.ndarray, image: sitk.Image, axis: str) -> np.ndarray:
    """The exact inverse of :func:`to_slices`: a stack back to ``image``'s (z, y, x) array order."""
    layout = stack_layout(image, axis)
    expected = tuple(image.GetSize()[2 - t] for t in layout.transpose)
    if stack.shape != expected:
        raise ValueError(f"Stack shape {stack.shape} does not match {expected}, the {axis} stack of this image.")
    flipped = [i for i, flip in enumerate(layout.flips) if flip]
    unflipped = np.flip(stack, axis=flipped) if flipped else stack
    return np.ascontiguousarray(np.transpose(unflipped, np.argsort(layout.transpose)))


def slice_centers(image: sitk.Image, axis: str) -> np.ndarray:
    """(S, 3) physical LPS centre of every slice of the stack along ``axis``, for jumping a viewer there."""
    layout = stack_layout(image, axis)
    size = np.array(image.GetSize(), dtype=float)
    voxel_axis = 2 - layout.transpose[0]
    count = int(size[voxel_axis])
    indices = np.tile((size - 1) / 2, (count, 1))
    indices[:, voxel_axis] = np.arange(count)[::-1] if layout.flips[0] else np.arange(count)
    index_to_lps = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return indices @ index_to_lps.T + np.array(image.GetOrigin())


def labels_on_grid(stack_labels: np.ndarray, reference: sitk.Image, axis: str) -> sitk.Image:
    """A label stack back on ``reference``'s voxel grid (same size, spacing, origin, direction)."""
    return label_image(from_slices(stack_labels, reference, axis), reference)
