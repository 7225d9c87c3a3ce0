"""Building SAM2's architecture (the model class FATE-SAM drives) from a registry entry, with seeded weights."""

from __future__ import annotations

import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam2_base import SAM2Base

from .registry import ModelSpec, check_image_size

# The video predictor's settings that matter for tracking. build_sam2's own post-processing adds the dynamic
# multimask fallback (stability delta 0.05, threshold 0.98); fill_hole_area is left out, it belongs to the predictor.
_TRACKING_OVERRIDES = ["++model.binarize_mask_from_pts_for_mem_enc=true"]
_ROPE_BLOCKS = ("self_attention", "cross_attention")
_MEMORY_STRIDE = 16  # memory attention runs on the encoder's stride-16 features


def size_overrides(image_size: int) -> list[str]:
    """The config changes for input ``image_size``: the input size, and the feature map size the memory attention's
    RoPE blocks are built for (image_size / 16, as MedSAM2's config has it at 512: [32, 32]; SAM2 recomputes its
    rotary tables for another size anyway, so the results do not change, only the config matches)."""
    check_image_size(image_size)
    side = image_size // _MEMORY_STRIDE
    rope = [f"++model.memory_attention.layer.{block}.feat_sizes=[{side},{side}]" for block in _ROPE_BLOCKS]
    return [f"++model.image_size={image_size}", *rope]


def build_architecture(
    spec: ModelSpec, image_size: int | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> SAM2Base:
    """The model's SAM2Base with the tracking settings and weights initialised from ``seed``, in eval mode, at input
    ``image_size`` (default the model's own, ``spec.image_size``).

    The caller's random number generator is left as it was.
    """
    overrides = [*_TRACKING_OVERRIDES, *size_overrides(spec.image_size if image_size is None else image_size)]
    with torch.random.fork_rng(devices=[]):  # sam2 initialises the weights on the CPU, then moves the model
        torch.manual_seed(seed)
        return build_sam2(spec.config, device=device, mode="eval", hydra_overrides_extra=overrides)
