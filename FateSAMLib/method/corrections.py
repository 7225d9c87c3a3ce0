"""Slices a reviewer corrected: which ones changed, and the order in which the others are then predicted.

A corrected slice is a known mask of the query itself, so it becomes a conditioning memory (as a support slice does)
and the other slices are predicted outwards from it: each slice after its nearest corrected slice, so that the
neighbours SAM2 looks back at are already predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

# Corrected slices a query slice attends to: the nearest one on each side. They carry what the reviewer fixed into
# the gap between them; farther ones reach a slice through its predicted neighbours' memories, and each memory
# attended to costs memory attention as much as a support slice does.
CORRECTED_PER_SIDE = 1


@dataclass
class Corrections:
    """Query slices a reviewer vouches for: ``labels`` (S, H, W) in the run's stack layout, ``slices`` their indices."""

    labels: np.ndarray
    slices: list[int]


def changed_slices(corrections: np.ndarray, previous: np.ndarray) -> list[int]:
    """The indices of the slices (first axis) where ``corrections`` and ``previous`` differ in any voxel."""
    if corrections.shape != previous.shape:
        raise InputError(
            f"The corrections ({corrections.shape}) and the previous result ({previous.shape}) differ in size; "
            "pass the result the corrections were made on, on the query's grid."
        )
    differs = (corrections != previous).reshape(corrections.shape[0], -1).any(axis=1)
    return [int(i) for i in np.flatnonzero(differs)]


def check_slice_indices(indices: list[int], num_slices: int, axis: str) -> list[int]:
    """``indices`` sorted without repeats; :class:`InputError` for one outside 0..num_slices-1."""
    outside = sorted({i for i in indices if not 0 <= i < num_slices})
    if outside:
        raise InputError(
            f"Corrected slices {outside} are outside the query's {num_slices} {axis} slices (0..{num_slices - 1}). "
            "Give slice indices along the run's slice axis, or --corrected-slices auto with --previous."
        )
    return sorted(set(indices))


def propagation_order(num_slices: int, corrected: list[int] | None = None) -> list[tuple[int, bool]]:
    """(slice, reverse) for every slice to predict, in the order FATE-SAM predicts them.

    Without corrections: from the middle slice down to the first, then up to the last (reverse: tracked towards
    lower indices). With corrected slices: the others by increasing distance to their nearest corrected slice
    (ties: the lower slice first), each tracked away from that slice.
    """
    if not corrected:
        start = num_slices // 2
        return [(i, True) for i in range(start, -1, -1)] + [(i, False) for i in range(start + 1, num_slices)]
    anchors = np.asarray(sorted(corrected))
    rest = [i for i in range(num_slices) if i not in set(corrected)]
    nearest = {i: int(anchors[np.argmin(np.abs(anchors - i))]) for i in rest}
    ordered = sorted(rest, key=lambda i: (abs(i - nearest[i]), i))
    return [(i, i < nearest[i]) for i in ordered]


def propagation_steps(
    num_slices: int, corrected: list[int] | None = None, pairing_lag: int | None = None
) -> list[list[tuple[int, bool]]]:
    """:func:`propagation_order` in steps: the slices of a step are predicted together, with the same results.

    Without corrections, once the downward pass (from the middle slice to the first) is ``pairing_lag`` slices ahead,
    each of its further slices is predicted together with the next slice of the upward pass. A slice attends to
    predicted slices at most ``pairing_lag`` frames behind it, so each slice still sees exactly what it sees in the
    plain order: the upward slice, the downward slices it needs (already predicted); the downward slice, no upward
    slice. ``pairing_lag`` None (or corrections): one slice per step.
    """
    order = propagation_order(num_slices, corrected)
    if corrected or pairing_lag is None:
        return [[item] for item in order]
    down, up = [item for item in order if item[1]], [item for item in order if not item[1]]
    steps = [[item] for item in down[:pairing_lag]]
    for j in range(max(len(down) - pairing_lag, len(up))):
        steps.append(down[pairing_lag + j : pairing_lag + j + 1] + up[j : j + 1])
    return steps


def nearest_corrected(index: int, corrected: list[int], per_side: int | None = CORRECTED_PER_SIDE) -> list[int]:
    """The corrected slices slice ``index`` attends to: the ``per_side`` nearest below it and above it (None: all)."""
    below = sorted((c for c in corrected if c < index), reverse=True)[:per_side]
    above = sorted(c for c in corrected if c > index)[:per_side]
    return below + above
