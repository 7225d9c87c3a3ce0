"""SAM2's memory modules driven the FATE-SAM way: supports as conditioning memories, query slices tracked in order.

Every label is one SAM2 object; the labels of a slice are processed together as SAM2's object batch.
Frame numbering follows the reference implementation: query slices are frames 0..N-1 and the k retrieved
support slices of the current query slice are conditioning frames N..N+k-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class SliceQuery:
    """One query slice to predict: its frame, encoder levels, retrieved support memories and tracking direction.

    ``corrected``: memories of corrected query slices it attends to, by frame (conditioning frames at their index).
    """

    frame_idx: int
    levels: list[torch.Tensor]
    supports: list[Memory]
    reverse: bool
    corrected: dict[int, Memory] = field(default_factory=dict)


@dataclass
class DecodedStep:
    """The slices decoded together in one step: their predictions and what encoding their memories needs."""

    frames: list[int]
    predictions: list[SlicePrediction]
    feats: list[torch.Tensor]  # encoder levels per object, all slices' objects along the batch axis
    high_res_masks: torch.Tensor
    object_scores: torch.Tensor
    obj_ptr: torch.Tensor


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

    @property
    def pairing_lag(self) -> int | None:
        """How many slices the downward pass must be ahead before the upward pass can be predicted beside it.

        A query slice attends to the mask memories and object pointers of the predicted slices up to this many frames
        behind it (in its tracking direction); None where objects of one batch depend on each other (SAM2's
        non-overlap constraint in the memory encoder), so that slices cannot be predicted together.
        """
        model = self.model
        if model.non_overlap_masks_for_mem_enc:
            return None
        masks = 1 + (model.num_maskmem - 2) * model.memory_temporal_stride_for_eval if model.num_maskmem > 1 else 0
        pointers = model.max_obj_ptrs_in_encoder - 1 if model.use_obj_ptrs_in_encoder else 0
        return max(masks, pointers)

    def attend_and_decode(self, queries: list[SliceQuery]) -> DecodedStep:
        """Memory attention over supports, corrected query slices and predicted neighbours, then mask decoding.

        Several ``queries`` are decoded as one batch of ``len(queries) x labels`` objects (SAM2's mask decoder treats
        objects independently); memory attention runs per query, since each attends to its own memories (the two
        directions differ in length: SAM2 gives support pointers only to frames tracked towards them). Supports are
        conditioning frames N..N+k-1; a corrected query slice is a conditioning frame at its own index, so SAM2 gives
        its object pointer the temporal position of its distance to the slice.
        """
        num_labels = queries[0].supports[0]["obj_ptr"].shape[0]
        feats_per_query = [_per_label(query.levels, num_labels) for query in queries]
        pos_embeds = _per_label(self.geometry.pos_embeds, num_labels)
        sizes = self.geometry.feat_sizes
        n = self.num_query_slices
        with torch.inference_mode(), compute_autocast(self.device):
            attended = []
            for query, feats in zip(queries, feats_per_query, strict=True):
                cond = {**query.corrected, **{n + j: memory for j, memory in enumerate(query.supports)}}
                attended.append(
                    self.model._prepare_memory_conditioned_features(
                        frame_idx=query.frame_idx,
                        is_init_cond_frame=False,
                        current_vision_feats=feats[-1:],
                        current_vision_pos_embeds=pos_embeds[-1:],
                        feat_sizes=sizes[-1:],
                        output_dict={"cond_frame_outputs": cond, "non_cond_frame_outputs": self.predicted},
                        num_frames=n + len(query.supports),
                        track_in_reverse=query.reverse,
                    )
                )
            feats = [torch.cat(level, dim=1) for level in zip(*feats_per_query, strict=True)]
            high_res = [
                x.permute(1, 2, 0).view(x.size(1), x.size(2), *size)
                for x, size in zip(feats[:-1], sizes[:-1], strict=True)
            ]
            _, _, ious, low_res_masks, high_res_masks, obj_ptr, object_scores = self.model._forward_sam_heads(
                backbone_features=torch.cat(attended),
                high_res_features=high_res,
                multimask_output=self.model._use_multimask(False, None),
            )
        logits = fill_small_holes(low_res_masks.float()).split(num_labels)
        scores = object_scores.float().reshape(-1).split(num_labels)
        best_ious = ious.float().max(dim=-1).values.split(num_labels)
        return DecodedStep(
            frames=[query.frame_idx for query in queries],
            predictions=[SlicePrediction(*outputs) for outputs in zip(logits, scores, best_ious, strict=True)],
            feats=feats,
            high_res_masks=high_res_masks,
            object_scores=object_scores,
            obj_ptr=obj_ptr,
        )

    def remember(self, step: DecodedStep, pending: set[int]) -> None:
        """Encode the step's predicted masks (one batch) as memories for the next slices; forget those out of reach of
        every ``pending`` slice (the slices still to predict), which no later slice can attend to."""
        with torch.inference_mode(), compute_autocast(self.device):
            features, pos_enc = self.model._encode_new_memory(
                current_vision_feats=step.feats,
                feat_sizes=self.geometry.feat_sizes,
                pred_masks_high_res=step.high_res_masks,
                object_score_logits=step.object_scores,
                is_mask_from_pts=False,
            )
        rows = features.shape[0] // len(step.frames)
        for j, frame_idx in enumerate(step.frames):
            part = slice(j * rows, (j + 1) * rows)
            self.predicted[frame_idx] = self._memory(features[part], [p[part] for p in pos_enc], step.obj_ptr[part])
        for old in [t for t in self.predicted if all(abs(t - s) > self.reach for s in pending)]:
            del self.predicted[old]
