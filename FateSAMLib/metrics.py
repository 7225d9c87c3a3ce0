"""Overlap and surface-distance metrics per label, in millimetres on the physical grid.

Definitions (per label, prediction P and reference R on one voxel grid):

- Dice = 2 |P and R| / (|P| + |R|).
- Surface voxels: voxels of the mask with at least one of their 6 face neighbours outside it (outside the image
  counts as outside). Surface distance: from a surface voxel centre of one mask to the nearest surface voxel centre
  of the other, in mm with the grid's spacing (the direction matrix is a rotation, so it changes no distance).
- HD95: the larger of the two directed 95th percentiles of surface distances (P -> R and R -> P).
- ASSD: the mean of all surface distances in both directions.
- Edge cases: both masks empty -> Dice 1, HD95 0, ASSD 0; exactly one empty -> Dice 0, HD95 and ASSD infinite.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .io.geometry import check_same_geometry

METRICS = ("dice", "hd95", "assd")


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (0, 2):
            window = [slice(1, -1)] * mask.ndim
            window[axis] = slice(shift, shift + mask.shape[axis])
            interior &= padded[tuple(window)]
    return mask & ~interior


def _distances_to(target_surface: np.ndarray, source_surface: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of ``source_surface`` to the nearest voxel of ``target_surface``."""
    image = sitk.GetImageFromArray(target_surface.astype(np.uint8))
    image.SetSpacing(spacing_zyx[::-1].tolist())
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(distance)[source_surface], 0.0)


def mask_metrics(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: tuple[float, ...]) -> dict[str, float]:
    """Dice, HD95 (mm) and ASSD (mm) of two boolean (z, y, x) masks with the given voxel spacing (see module doc)."""
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    dice = 2.0 * int(np.logical_and(prediction, reference).sum()) / total
    if not prediction.any() or not reference.any():
        return {"dice": dice, "hd95": float("inf"), "assd": float("inf")}
    surfaces = [_surface(prediction), _surface(reference)]
    # Every surface voxel lies in the masks' joint bounding box: distances computed there are exact and cheaper.
    occupied = np.argwhere(surfaces[0] | surfaces[1])
    box = tuple(slice(low, high + 1) for low, high in zip(occupied.min(axis=0), occupied.max(axis=0), strict=True))
    pred_surface, ref_surface = (surface[box] for surface in surfaces)
    spacing = np.asarray(spacing_zyx, dtype=float)
    forward = _distances_to(ref_surface, pred_surface, spacing)
    backward = _distances_to(pred_surface, ref_surface, spacing)
    return {
        "dice": dice,
        "hd95": float(max(np.percentile(forward, 95), np.percentile(backward, 95))),
        "assd": float(np.concatenate([forward, backward]).mean()),
    }


def evaluate_labels(
    prediction: sitk.Image, reference: sitk.Image, labels: list[int] | None = None
) -> dict[int, dict[str, float]]:
    """Per-label Dice, HD95 (mm) and ASSD (mm); ``labels`` defaults to every non-zero value in either volume.

    Raises :class:`InputError` when the two volumes are not on the same voxel grid.
    """
    check_same_geometry(prediction, reference, "The prediction and the reference")
    pred = sitk.GetArrayViewFromImage(prediction)
    ref = sitk.GetArrayViewFromImage(reference)
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0]
    spacing = reference.GetSpacing()[::-1]
    return {int(label): mask_metrics(pred == label, ref == label, spacing) for label in labels}
