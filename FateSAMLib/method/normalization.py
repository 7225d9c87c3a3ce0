"""Intensities to SAM2's input: one normalisation rule for query and supports, then 3 channels at the model size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_intensities(
    array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), window: tuple[float, float] | None = None
) -> np.ndarray:
    """Map a whole volume to float32 in [0, 1].

    Either clip to the volume's own percentiles (default 0.5 and 99.5, robust to outliers and to the scanner's
    intensity scale), or to a fixed ``window`` given as (level, width), e.g. (40, 400) for soft-tissue CT.
    When the percentiles coincide (e.g. a mostly empty volume) the range falls back to the volume's minimum and
    maximum; a constant volume maps to zeros.
    """
    values = np.asarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("The volume has NaN or infinite intensities; fix or mask them before segmenting.")
    if window is not None:
        level, width = window
        if width <= 0:
            raise InputError(f"The window width must be positive (got {width}).")
        low, high = level - width / 2, level + width / 2
    else:
        low_pct, high_pct = percentiles
        if not 0 <= low_pct < high_pct <= 100:
            raise InputError(f"Percentiles must satisfy 0 <= low < high <= 100 (got {low_pct}, {high_pct}).")
        smallest, largest = float(values.min()), float(values.max())
        low, high = (min(max(float(p), smallest), largest) for p in np.percentile(values, [low_pct, high_pct]))
        if np.float32(high) <= np.float32(low):
            low, high = smallest, largest
    low, high = np.float32(low), np.float32(high)  # the precision the volume is clipped and scaled in
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((np.clip(values, low, high) - low) / (high - low)).astype(np.float32)


def to_model_input(slices01: np.ndarray, image_size: int) -> torch.Tensor:
    """(S, H, W) intensities in [0, 1] -> (S, 3, size, size) float32, bilinear resize, ImageNet mean/std.

    Shrinking is antialiased (a slice larger than the model input is filtered, not sampled).
    """
    batch = torch.from_numpy(np.ascontiguousarray(slices01, dtype=np.float32)).unsqueeze(1)
    size = (image_size, image_size)
    shrinking = batch.shape[-2] > image_size or batch.shape[-1] > image_size
    batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch.expand(-1, 3, -1, -1) - mean) / std


def masks_to_model_input(masks: np.ndarray, image_size: int) -> torch.Tensor:
    """(N, H, W) booleans -> (N, 1, size, size) float 0/1, as SAM2's ``add_new_mask`` makes a mask prompt.

    A mask of another size is resized bilinearly with antialiasing and thresholded at 0.5; one of the input size is
    taken as it is.
    """
    batch = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)).unsqueeze(1)
    if batch.shape[-2:] == (image_size, image_size):
        return batch
    resized = F.interpolate(batch, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (resized >= 0.5).float()


def logits_to_slice(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, h, w) low-resolution mask logits -> (N, height, width) by SAM2's rule for its video-sized output.

    Bilinear, ``align_corners=False``, no antialiasing, as ``SAM2VideoPredictor._get_orig_video_res_output``.
    """
    batch = logits.unsqueeze(1).float()
    if batch.shape[-2:] != (height, width):
        batch = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    return batch.squeeze(1)
