"""Support-slice retrieval: for each query slice, the support slices whose features are closest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .features import StackFeatures

# Elements of |query - support| materialised at once per level; bounds the retrieval's working memory.
_CHUNK_ELEMENTS = 64 * 1024 * 1024


@dataclass(frozen=True)
class SupportSliceRef:
    """One candidate support slice: which support volume, which slice of its stack."""

    support: int
    slice: int


def feature_distances(query: list[torch.Tensor], support: StackFeatures, slices: torch.Tensor) -> torch.Tensor:
    """Distance from one query slice to the given slices of a support stack.

    The reference FATE-SAM distance: per level, the L1 norm over channels averaged over pixels; then the mean over
    the feature levels. ``query`` holds the query slice's levels as (HW, C); the result has one value per slice.
    """
    total = torch.zeros(len(slices), dtype=torch.float32, device=query[0].device)
    for query_level, support_level in zip(query, support.levels):
        per_slice = query_level.numel()
        chunk = max(1, _CHUNK_ELEMENTS // per_slice)
        for start in range(0, len(slices), chunk):
            block = support_level[slices[start : start + chunk]]
            diff = (block.float() - query_level.float()).abs_()
            total[start : start + chunk] += diff.sum(dim=-1).mean(dim=-1)
    return total / len(query)


def rank_support_slices(
    query: StackFeatures,
    query_index: int,
    supports: list[StackFeatures],
    candidates: list[SupportSliceRef],
    top_k: int,
) -> list[SupportSliceRef]:
    """The ``top_k`` candidates closest to query slice ``query_index``, closest first (ties: earlier candidate)."""
    query_levels = [level[query_index] for level in query.levels]
    distances = torch.empty(len(candidates), dtype=torch.float32)
    by_support: dict[int, list[int]] = {}
    for position, ref in enumerate(candidates):
        by_support.setdefault(ref.support, []).append(position)
    for support_index, positions in by_support.items():
        slices = torch.tensor([candidates[p].slice for p in positions], device=query_levels[0].device)
        distances[positions] = feature_distances(query_levels, supports[support_index], slices).cpu()
    order = torch.argsort(distances, stable=True)[:top_k]
    return [candidates[i] for i in order.tolist()]
