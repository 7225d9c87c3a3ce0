"""Building SAM2's architecture (the model class FATE-SAM drives) from a registry entry, with seeded weights."""

from __future__ import annotations

import threading

import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam2_base import SAM2Base

from .registry import ModelSpec, check_image_size

# The video predictor's settings that matter for tracking. build_sam2's own post-processing adds the dynamic
# multimask fallback (stability delta 0.05, threshold 0.98); fill_hole_area is left out, it belongs to the predictor.
_TRACKING_OVERRIDES = ["++model.binarize_mask_from_pts_for_mem_enc=true"]
# Seeding uses torch's global generator and sam2 composes its config with Hydra's global state: a model built in one
# thread (a server's worker) while another builds one must not interleave with it, or the seeded weights differ.
_BUILDING = threading.Lock()


def build_architecture(
    spec: ModelSpec, image_size: int | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> SAM2Base:
    """The model's SAM2Base with the tracking settings and weights initialised from ``seed``, in eval mode.

    The caller's random number generator is left as it was; builds in several threads run one at a time.
    """
    overrides = list(_TRACKING_OVERRIDES)
    if image_size is not None:
        check_image_size(image_size)
        overrides.append(f"++model.image_size={image_size}")
    with _BUILDING, torch.random.fork_rng(devices=[]):  # sam2 initialises the weights on the CPU, then moves the model
        torch.manual_seed(seed)
        return build_sam2(spec.config, device=device, mode="eval", hydra_overrides_extra=overrides)
