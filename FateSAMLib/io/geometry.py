"""Voxel grids: comparing two of them, index-to-physical matrices, and one anatomical frame for every volume.

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

One anatomical frame for every volume: slicing along an anatomical axis by axis permutations and flips only.

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

from ..errors import InputError
from ..options import SLICE_AXES

GEOMETRY_TOLERANCE = 1e-4


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _describe(image: sitk.Image) -> str:
    return (
        f"size {image.GetSize()}, spacing {_fmt(image.GetSpacing())} mm, origin {_fmt(image.GetOrigin())} mm, "
        f"direction {_fmt(image.GetDirection())}"
    )


def grids_match(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    voxel = min(spacing_a.min(), spacing_b.min())
    return bool(
        np.all(np.abs(spacing_a - spacing_b) <= GEOMETRY_TOLERANCE * np.maximum(spacing_a, spacing_b))
        and np.all(np.abs(np.array(a.GetDirection()) - np.array(b.GetDirection())) <= GEOMETRY_TOLERANCE)
        and np.all(np.abs(np.array(a.GetOrigin()) - np.array(b.GetOrigin())) <= GEOMETRY_TOLERANCE * voxel)
    )


def grid_mismatch_error(a: sitk.Image, b: sitk.Image, what: str, note: str = "") -> InputError:
    return InputError(
        f"{what}: the voxel grids differ.\n  first:  {_describe(a)}\n  second: {_describe(b)}\n{note}"
        "Resample the labels onto the image grid (in 3D Slicer: Segment Editor with the image as source "
        "geometry, or the 'Resample Image (BRAINS)' module with the image as reference), then try again."
    )


def check_same_geometry(a: sitk.Image, b: sitk.Image, what: str) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` share size, spacing, origin and direction (see tolerance)."""
    if not grids_match(a, b):
        raise grid_mismatch_error(a, b, what)


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


@dataclass(frozen=True, eq=False)
class SliceFrame:
    """A volume's slice layout, made once per volume and carried from preparation to the result: the anatomical
    ``axis`` it is sliced along, the transpose and flips from SimpleITK's (z, y, x) array order to the stack (S, H, W),
    the grid's index-to-physical matrix, and the physical centre of each slice."""

    axis: str
    layout: StackLayout
    size_zyx: tuple[int, int, int]
    ijk_to_lps: np.ndarray  # 4x4

    @classmethod
    def of(cls, image: sitk.Image, axis: str = "auto") -> SliceFrame:
        """The frame of ``image`` along ``axis`` (``auto``: see :func:`choose_slice_axis`)."""
        chosen = choose_slice_axis(image, axis)
        return cls(chosen, stack_layout(image, chosen), tuple(image.GetSize()[::-1]), ijk_to_lps(image))

    @property
    def stack_shape(self) -> tuple[int, int, int]:
        """(S, H, W) of the volume's stack."""
        return tuple(self.size_zyx[t] for t in self.layout.transpose)

    @property
    def num_slices(self) -> int:
        return self.stack_shape[0]

    def to_slices(self, array_zyx: np.ndarray) -> np.ndarray:
        """A SimpleITK-ordered array (z, y, x) of the volume as a stack (S, H, W) in the common frame."""
        if array_zyx.shape != self.size_zyx:
            raise ValueError(f"Array shape {array_zyx.shape} is not the image's (z, y, x) size {self.size_zyx}.")
        stack = np.transpose(array_zyx, self.layout.transpose)
        flipped = [i for i, flip in enumerate(self.layout.flips) if flip]
        return np.ascontiguousarray(np.flip(stack, axis=flipped) if flipped else stack)

    def from_slices(self, stack: np.ndarray) -> np.ndarray:
        """The exact inverse of :meth:`to_slices`: a stack back to the volume's (z, y, x) array order."""
        if stack.shape != self.stack_shape:
            raise ValueError(
                f"Stack shape {stack.shape} does not match {self.stack_shape}, the {self.axis} stack of this image."
            )
        flipped = [i for i, flip in enumerate(self.layout.flips) if flip]
        unflipped = np.flip(stack, axis=flipped) if flipped else stack
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self.layout.transpose)))

    def index_to_lps(self, indices: np.ndarray) -> np.ndarray:
        """(N, 3) physical LPS points (mm) of (N, 3) voxel indices (i, j, k), which may be fractional."""
        return _apply(self.ijk_to_lps, indices)

    def slice_centers(self) -> np.ndarray:
        """(S, 3) physical LPS centre of every slice of the stack, for jumping a viewer there."""
        size = np.array(self.size_zyx[::-1], dtype=float)
        voxel_axis = 2 - self.layout.transpose[0]
        count = int(size[voxel_axis])
        indices = np.tile((size - 1) / 2, (count, 1))
        indices[:, voxel_axis] = np.arange(count)[::-1] if self.layout.flips[0] else np.arange(count)
        return self.index_to_lps(indices)


def to_slices(array_zyx: np.ndarray, image: sitk.Image, axis: str) -> np.ndarray:
    """A SimpleITK-ordered array (z, y, x) of ``image`` as a stack (S, H, W) along ``axis`` in the common frame."""
    return SliceFrame.of(image, axis).to_slices(array_zyx)


def from_slices(stack: np.ndarray, image: sitk.Image, axis: str) -> np.ndarray:
    """The exact inverse of :func:`to_slices`: a stack back to ``image``'s (z, y, x) array order."""
    return SliceFrame.of(image, axis).from_slices(stack)


def slice_centers(image: sitk.Image, axis: str) -> np.ndarray:
    """(S, 3) physical LPS centre of every slice of the stack along ``axis``, for jumping a viewer there."""
    return SliceFrame.of(image, axis).slice_centers()


# Index <-> physical: the one conversion of the SimpleITK side (the Slicer tier, which cannot import io, has its own
# on MRML's IJK-to-RAS matrices in slicer/scene.py).


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """The 4x4 matrix from voxel indices (i, j, k) to physical LPS coordinates (mm)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def index_to_lps(image: sitk.Image, indices: np.ndarray) -> np.ndarray:
    """(N, 3) physical LPS points (mm) of (N, 3) voxel indices (i, j, k), which may be fractional."""
    return _apply(ijk_to_lps(image), indices)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points through the affine 4x4 ``matrix``."""
    return np.asarray(points, dtype=float) @ matrix[:3, :3].T + matrix[:3, 3]


def lps_to_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """(N, 3) continuous voxel indices (i, j, k) of (N, 3) physical LPS points: the inverse of :func:`index_to_lps`."""
    matrix = ijk_to_lps(image)
    return np.linalg.solve(matrix[:3, :3], (np.asarray(points, dtype=float) - matrix[:3, 3]).T).T


def set_ijk_to_lps(image: sitk.Image, matrix: np.ndarray) -> sitk.Image:
    """``image`` with the spacing, direction and origin of a 4x4 IJK-to-LPS ``matrix`` (the inverse of
    :func:`ijk_to_lps`); returns the image."""
    matrix = np.asarray(matrix, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(matrix[:3, 3].tolist())
    image.SetDirection((matrix[:3, :3] / spacing).flatten().tolist())
    return image
