"""Support retrieval: the reference distance, computed block by block, and the ranking it gives."""

from __future__ import annotations

import torch

from FateSAMLib.method.encoder import StackFeatures
from FateSAMLib.method.retrieval import feature_distances, top_k_slices


def reference_distances(query: list[torch.Tensor], supports: StackFeatures) -> torch.Tensor:
    """Per level, L1 over channels averaged over pixels, then the mean over levels, in float64, in one piece."""
    per_level = [
        (level.double() - q[:, 0].double()).abs().sum(dim=-1).mean(dim=-1)
        for q, level in zip(query, supports.levels, strict=True)
    ]
    return torch.stack(per_level).mean(dim=0)


def test_distances_match_the_reference_formula_across_block_sizes():
    generator = torch.Generator().manual_seed(0)
    # The first level is larger than one block (one slice at a time), the others fit many slices in a block.
    shapes = [(5, 4096, 300), (5, 256, 64), (5, 64, 256)]
    supports = StackFeatures([torch.randn(shape, generator=generator) for shape in shapes])
    query = [torch.randn(hw, 1, c, generator=generator) for _, hw, c in shapes]
    distances = feature_distances(query, supports)
    torch.testing.assert_close(distances.double(), reference_distances(query, supports), rtol=1e-6, atol=0)


def test_top_k_ranks_the_closest_support_slices_first():
    generator = torch.Generator().manual_seed(1)
    query = [torch.randn(16, 1, 8, generator=generator), torch.randn(4, 1, 32, generator=generator)]
    noise = [0.5, 0.1, 2.0, 0.0, 1.0]  # support slice i is the query plus noise of this size
    levels = [
        torch.stack([q[:, 0] + scale * torch.randn(q[:, 0].shape, generator=generator) for scale in noise])
        for q in query
    ]
    supports = StackFeatures(levels)
    ranked = top_k_slices(query, supports, 3)
    assert [row for row, _ in ranked] == [3, 1, 0]
    distances = feature_distances(query, supports)
    assert [distance for _, distance in ranked] == [float(distances[row]) for row in (3, 1, 0)]
