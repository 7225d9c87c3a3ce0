"""Image-encoder features of a stack of slices, computed once and reused by retrieval and tracking."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .progress import CancelToken, ProgressCallback


@dataclass
class StackFeatures:
    """SAM2 backbone features of every slice of one volume, in the flattened layout SAM2's tracking step uses.

    ``levels[l]`` has shape (S, HW_l, C_l): slice ``i`` of level ``l`` is ``levels[l][i]``. The high-resolution levels
    already went through the mask decoder's ``conv_s0``/``conv_s1`` projections, as in ``SAM2Base.forward_image``.
    """

    levels: list[torch.Tensor]

    @property
    def num_slices(self) -> int:
        return self.levels[0].shape[0]

    def slice_levels(self, index: int) -> list[torch.Tensor]:
        """One slice's features as SAM2 expects them: a list of (HW, 1, C) tensors, coarsest level last."""
        return [level[index].unsqueeze(1) for level in self.levels]


@dataclass
class EncoderOutputGeometry:
    """What every slice shares: the spatial size of each level and its positional encoding (HW, 1, C)."""

    feat_sizes: list[tuple[int, int]]
    pos_embeds: list[torch.Tensor]


def compute_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, as SAM2 runs there; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SliceEncoder:
    """Runs SAM2's image encoder over slices in batches and counts how many slices it encoded."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int) -> None:
        self.model = model
        self.device = device
        self.batch_size = max(1, batch_size)
        self.passes = 0
        self.geometry: EncoderOutputGeometry | None = None

    def _encode_batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), compute_autocast(self.device):
            backbone_out = self.model.forward_image(images.to(self.device, non_blocking=True))
            _, vision_feats, vision_pos, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        self.passes += images.shape[0]
        if self.geometry is None:
            self.geometry = EncoderOutputGeometry(
                feat_sizes=[tuple(size) for size in feat_sizes], pos_embeds=[pos[:, :1] for pos in vision_pos]
            )
        # (HW, B, C) -> (B, HW, C)
        return [feats.permute(1, 0, 2) for feats in vision_feats]

    def batches(self, images: torch.Tensor) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """Yield (first slice index, per-level features of the batch) over the stack of model inputs."""
        for start in range(0, images.shape[0], self.batch_size):
            yield start, self._encode_batch(images[start : start + self.batch_size])

    def encode_stack(
        self, images: torch.Tensor, progress: ProgressCallback, cancel: CancelToken, label: str
    ) -> StackFeatures:
        """Encode every slice of ``images`` (S, 3, size, size) once; checks ``cancel`` between batches."""
        parts: list[list[torch.Tensor]] = []
        total = images.shape[0]
        for start, levels in self.batches(images):
            cancel.raise_if_cancelled()
            parts.append(levels)
            done = min(start + self.batch_size, total)
            progress(done / total, f"Encoding {label}: slice {done}/{total}")
        return StackFeatures(levels=[torch.cat([part[level] for part in parts]) for level in range(len(parts[0]))])

    def encode_one(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encode a single slice (3, size, size) and return its levels as (HW, 1, C) tensors."""
        return [level.permute(1, 0, 2) for level in self._encode_batch(image.unsqueeze(0))]
