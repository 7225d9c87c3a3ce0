"""SAM2's small-hole filling of low-resolution mask logits, with or without SAM2's optional CUDA extension.

SAM2's video predictor (built by ``build_sam2_video_predictor``, ``fill_hole_area=8``) turns every background region
of at most that many low-resolution pixels (8-connected, logits <= 0) into foreground (logit 0.1) before a mask is
encoded as a conditioning memory or returned. It counts the regions with its CUDA extension ``sam2._C``; where that
is absent (a CPU, or sam2 built with ``SAM2_BUILD_CUDA=0``) SAM2 skips the step with a warning, so results would
depend on how sam2 was installed. Here SimpleITK counts them instead, with the same connectivity and the same result.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import SimpleITK as sitk
import torch

# The video predictor's setting, as sam2.build_sam.build_sam2_video_predictor configures it.
FILL_HOLE_AREA = 8
# The logit SAM2 gives filled holes (a small positive score: foreground).
HOLE_LOGIT = 0.1


def _sam2_extension_available() -> bool:
    return importlib.util.find_spec("sam2._C") is not None


def component_areas(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) booleans -> the area of the 8-connected component each true pixel belongs to (0 elsewhere).

    The same result as the counts of ``sam2.utils.misc.get_connected_components``, which this uses on CUDA when
    SAM2's extension is built.
    """
    if mask.is_cuda and _sam2_extension_available():
        from sam2.utils.misc import get_connected_components

        return get_connected_components(mask)[1]
    areas = np.zeros(mask.shape, dtype=np.int64)
    for n, plane in enumerate(mask.detach().cpu().numpy().astype(np.uint8)[:, 0]):
        labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(plane), True))
        areas[n, 0] = np.bincount(labels.ravel())[labels] * (labels > 0)
    return torch.from_numpy(areas).to(mask.device)


def fill_small_holes(logits: torch.Tensor, max_area: int = FILL_HOLE_AREA) -> torch.Tensor:
    """(N, 1, H, W) mask logits with every background region of at most ``max_area`` pixels set to foreground."""
    if max_area <= 0:
        return logits
    areas = component_areas(logits <= 0)
    return torch.where((areas > 0) & (areas <= max_area), torch.full_like(logits, HOLE_LOGIT), logits)
