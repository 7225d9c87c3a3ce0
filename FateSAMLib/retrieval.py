"""Support-slice retrieval: for each query slice, the support slices whose features are closest."""

from __future__ import annotations

import torch

from .features import StackFeatures

# Elements of |query - support| materialised at once per level; bounds the retrieval's working memory.
_CHUNK_ELEMENTS = 32 * 1024 * 1024


def feature_distances(query: list[torch.Tensor], supports: StackFeatures) -> torch.Tensor:
    """Distance from one query slice to every slice of ``supports``, all at once.

    The reference FATE-SAM distance: per level, the L1 norm over channels averaged over pixels; then the mean over
    the feature levels. ``query`` holds the query slice's levels as (HW, 1, C); the result has one value per slice.
    """
    total = torch.zeros(supports.num_slices, dtype=torch.float32, device=query[0].device)
    for query_level, support_level in zip(query, supports.levels, strict=True):
        target = query_level[:, 0].float()
        chunk = max(1, _CHUNK_ELEMENTS // target.numel())
        for start in range(0, supports.num_slices, chunk):
            block = support_level[start : start + chunk].float()
            total[start : start + chunk] += (block - target).abs_().sum(dim=-1).mean(dim=-1)
    return total / len(query)


def top_k_slices(query: list[torch.Tensor], supports: StackFeatures, top_k: int) -> list[int]:
    """Rows of ``supports`` closest to the query slice, closest first (ties: the earlier row)."""
    distances = feature_distances(query, supports).cpu()
    return torch.argsort(distances, stable=True)[:top_k].tolist()
