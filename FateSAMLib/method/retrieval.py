"""Support-slice retrieval: for each query slice, the support slices whose features are closest."""

from __future__ import annotations

import torch

from .encoder import StackFeatures

# Elements of |query - support| materialised at once, which bounds the retrieval's working memory. On a CPU a block
# that stays in cache is about 8 times faster than a 32M-element one (measured at 1024 with 76 support slices); on a
# GPU larger blocks mean fewer kernel launches.
_CPU_CHUNK_ELEMENTS = 1024 * 1024
_GPU_CHUNK_ELEMENTS = 32 * 1024 * 1024


def feature_distances(query: list[torch.Tensor], supports: StackFeatures) -> torch.Tensor:
    """Distance from one query slice to every slice of ``supports``, all at once.

    The reference FATE-SAM distance: per level, the L1 norm over channels averaged over pixels; then the mean over
    the feature levels. ``query`` holds the query slice's levels as (HW, 1, C); the result has one value per slice.
    """
    device = query[0].device
    total = torch.zeros(supports.num_slices, dtype=torch.float32, device=device)
    block_elements = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    for query_level, support_level in zip(query, supports.levels, strict=True):
        target = query_level[:, 0].float()
        chunk = max(1, block_elements // target.numel())
        for start in range(0, supports.num_slices, chunk):
            block = support_level[start : start + chunk].float()
            total[start : start + chunk] += (block - target).abs_().sum(dim=-1).mean(dim=-1)
    return total / len(query)


def top_k_slices(query: list[torch.Tensor], supports: StackFeatures, top_k: int) -> list[tuple[int, float]]:
    """(row, distance) of the rows of ``supports`` closest to the query slice, closest first (ties: the earlier row)."""
    distances = feature_distances(query, supports).cpu()
    rows = torch.argsort(distances, stable=True)[:top_k].tolist()
    return [(row, float(distances[row])) for row in rows]
