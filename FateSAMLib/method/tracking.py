"""SAM2's memory modules driven the FATE-SAM way: supports as conditioning memories, query slices tracked in order.

Every label is one SAM2 object; the labels of a slice are processed together as SAM2's object batch.
Frame numbering follows the reference implementation: query slices are frames 0..N-1 and the k retrieved
support slices of the current query slice are conditioning frames N..N+k-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoder import EncoderOutputGeometry, compute_autocast
from .holes import fill_small_holes

Memory = dict[str, object]
"""What a memory bank keeps of one frame: ``maskmem_features``, ``maskmem_pos_enc`` and ``obj_ptr``."""


@dataclass
class SlicePrediction:
    """SAM2's output for one query slice, one row per label."""

    logits: torch.Tensor  # (L, 1, size/4, size/4) SAM2's low-resolution mask logits, small holes filled
    object_scores: torch.Tensor  # (L,) object-score logits (> 0: the label is present)
    ious: torch.Tensor  # (L,) predicted IoU of the kept mask


def _per_label(levels: list[torch.Tensor], num_labels: int) -> list[torch.Tensor]:
    return [level.repeat(1, num_labels, 1) for level in levels]


def memory_dtype_for(device: torch.device) -> torch.dtype:
    """How mask memories are stored: bf16 on CUDA, as SAM2's video predictor stores them; float32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class SliceTracker:
    """Predicts query slices one at a time against support memories and the memories of predicted neighbours."""

    def __init__(
        self,
        model: torch.nn.Module,
        geometry: EncoderOutputGeometry,
        device: torch.device,
        num_query_slices: int,
        memory_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.geometry = geometry
        self.device = device
        self.num_query_slices = num_query_slices
        self.memory_dtype = memory_dtype or memory_dtype_for(device)
        self.predicted: dict[int, Memory] = {}
        # A memory is still needed while a later frame may look back at it (mask memories or object pointers).
        self.reach = max(model.num_maskmem, model.max_obj_ptrs_in_encoder)

    def _memory(self, features: torch.Tensor, pos_enc: list[torch.Tensor], obj_ptr: torch.Tensor) -> Memory:
        return {"maskmem_features": features.to(self.memory_dtype), "maskmem_pos_enc": pos_enc, "obj_ptr": obj_ptr}

    def encode_support(self, levels: list[torch.Tensor], masks: torch.Tensor) -> Memory:
        """Conditioning memory of one support slice: ``masks`` (L, 1, size, size) in {0, 1}, one per label.

        The path of SAM2's video predictor for a mask given by the user (``add_new_mask``, then
        ``propagate_in_video_preflight``): the mask becomes low-resolution logits (+-10) and an object pointer,
        small holes are filled, the logits are upsampled to the input size and binarised by the memory encoder.
        An all-zero mask encodes the label as absent (object score negative, SAM2's no-object pointer and embedding).
        """
        num_labels = masks.shape[0]
        feats = _per_label(levels, num_labels)
        with torch.inference_mode(), compute_autocast(self.device):
            out = self.model.track_step(
                frame_idx=0,
                is_init_cond_frame=True,
                current_vision_feats=feats,
                current_vision_pos_embeds=_per_label(self.geometry.pos_embeds, num_labels),
                feat_sizes=self.geometry.feat_sizes,
                point_inputs=None,
                mask_inputs=masks.to(self.device),
                output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
                num_frames=1,
                run_mem_encoder=False,
            )
            size = self.model.image_size
            high_res = F.interpolate(
                fill_small_holes(out["pred_masks"]), size=(size, size), mode="bilinear", align_corners=False
            )
            features, pos_enc = self.model._encode_new_memory(
                current_vision_feats=feats,
                feat_sizes=self.geometry.feat_sizes,
                pred_masks_high_res=high_res,
                object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True,
            )
        return self._memory(features, pos_enc, out["obj_ptr"])

    def attend_and_decode(
        self,
        frame_idx: int,
        levels: list[torch.Tensor],
        supports: list[Memory],
        reverse: bool,
        corrected: dict[int, Memory] | None = None,
    ) -> tuple[SlicePrediction, dict, list[torch.Tensor]]:
        """Memory attention over supports, corrected query slices and predicted neighbours, then mask decoding.

        Supports are conditioning frames N..N+k-1; a corrected query slice is a conditioning frame at its own index,
        so SAM2 gives its object pointer the temporal position of its distance to ``frame_idx``.
        """
        num_labels = supports[0]["obj_ptr"].shape[0]
        feats = _per_label(levels, num_labels)
        n = self.num_query_slices
        output_dict = {
            "cond_frame_outputs": {**(corrected or {}), **{n + j: memory for j, memory in enumerate(supports)}},
            "non_cond_frame_outputs": self.predicted,
        }
        with torch.inference_mode(), compute_autocast(self.device):
            current_out, sam_outputs, _, _ = self.model._track_step(
                frame_idx,
                False,
                feats,
                _per_label(self.geometry.pos_embeds, num_labels),
                self.geometry.feat_sizes,
                None,
                None,
                output_dict,
                n + len(supports),
                reverse,
                None,
            )
        _, _, ious, low_res_masks, high_res_masks, obj_ptr, object_scores = sam_outputs
        current_out["pred_masks_high_res"] = high_res_masks
        current_out["obj_ptr"] = obj_ptr
        current_out["object_score_logits"] = object_scores
        prediction = SlicePrediction(
            logits=fill_small_holes(low_res_masks.float()),
            object_scores=object_scores.float().reshape(-1),
            ious=ious.float().max(dim=-1).values,
        )
        return prediction, current_out, feats

    def remember(self, frame_idx: int, current_out: dict, feats: list[torch.Tensor], pending: set[int]) -> None:
        """Encode the slice's predicted masks as a memory for the next slices; forget those out of reach of every
        ``pending`` slice (the slices still to predict), which no later slice can attend to."""
        with torch.inference_mode(), compute_autocast(self.device):
            self.model._encode_memory_in_output(
                feats,
                self.geometry.feat_sizes,
                None,
                True,
                current_out["pred_masks_high_res"],
                current_out["object_score_logits"],
                current_out,
            )
        self.predicted[frame_idx] = self._memory(
            current_out["maskmem_features"], current_out["maskmem_pos_enc"], current_out["obj_ptr"]
        )
        for old in [t for t in self.predicted if all(abs(t - s) > self.reach for s in pending)]:
            del self.predicted[old]
