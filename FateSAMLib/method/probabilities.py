"""Per-segment probabilities on the query's grid: the sigmoid of SAM2's output logit of each label, resized to the
slice by the rule the labels use (``normalization.logits_to_slice``), stored as uint8.

A probability p is stored as round(255 p), except that it is at least ``PRESENT_FROM`` (128) where the label's logit
is above 0 and at most 127 where it is not, so that "stored value >= 128" is exactly the rule that puts the label in a
voxel, when no other label is above 0 there (where several are, the label map takes the highest logit). A slice the
reviewer corrected (copied, not predicted) holds 255 where it has the label and 0 elsewhere.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..io.geometry import SliceFrame
from .engine import StackSegmentation

PROBABILITY_SCALE = 255
PRESENT_FROM = 128


def quantized_probabilities(logits: torch.Tensor) -> np.ndarray:
    """(L, H, W) logits -> (L, H, W) uint8 probabilities (see the module docstring)."""
    stored = torch.round(torch.sigmoid(logits.float()) * PROBABILITY_SCALE)
    stored = torch.where(logits > 0, stored.clamp(min=PRESENT_FROM), stored.clamp(max=PRESENT_FROM - 1))
    return stored.to(torch.uint8).numpy()


class ProbabilityCollector:
    """Keeps each predicted slice's probabilities (pass it as the engine's ``on_slice_logits``), then puts them on
    the query's grid as one vector image, one component per label in the run's label order."""

    def __init__(self, stack_shape: tuple[int, int, int], num_labels: int) -> None:
        self.values = np.zeros((num_labels, *stack_shape), dtype=np.uint8)

    def __call__(self, index: int, logits: torch.Tensor) -> None:
        self.values[:, index] = quantized_probabilities(logits)

    def on_grid(self, result: StackSegmentation, query: sitk.Image, frame: SliceFrame) -> sitk.Image:
        """The probabilities as a uint8 vector image on ``query``'s grid (``frame``: the query's); corrected slices
        from their labels."""
        for index in result.stats.corrected_slices:
            for row, value in enumerate(result.label_values):
                self.values[row, index] = np.where(result.labels[index] == value, PROBABILITY_SCALE, 0)
        components = [frame.from_slices(stack) for stack in self.values]
        image = sitk.GetImageFromArray(np.stack(components, axis=-1), isVector=True)
        image.CopyInformation(query)
        return image
