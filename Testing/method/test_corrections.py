"""Corrected slices: which slices changed, and the order the others are predicted in."""

from __future__ import annotations

import numpy as np
import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.method.corrections import (
    changed_slices,
    check_slice_indices,
    nearest_corrected,
    propagation_order,
    propagation_steps,
)


def test_without_corrections_the_order_goes_from_the_middle_down_then_up():
    order = propagation_order(7)
    assert [i for i, _ in order] == [3, 2, 1, 0, 4, 5, 6]
    assert [reverse for _, reverse in order] == [True] * 4 + [False] * 3


def test_with_corrections_every_other_slice_is_predicted_outwards_from_its_nearest_corrected_slice():
    order = propagation_order(10, corrected=[2, 7])
    slices = [i for i, _ in order]
    assert sorted(slices) == [0, 1, 3, 4, 5, 6, 8, 9]  # each slice once, corrected ones never
    assert slices[:4] == [1, 3, 6, 8]  # the neighbours of the corrected slices first
    assert dict(order) == {0: True, 1: True, 3: False, 4: False, 5: True, 6: True, 8: False, 9: False}
    # Each slice comes after the slice between it and its corrected slice.
    position = {i: n for n, (i, _) in enumerate(order)}
    for i, reverse in order:
        toward = i + 1 if reverse else i - 1
        assert toward in (2, 7) or position[toward] < position[i]


def test_a_slice_attends_to_the_nearest_corrected_slices_on_each_side_or_to_all():
    corrected = [1, 4, 6, 9]
    assert nearest_corrected(5, corrected) == [4, 6]
    assert nearest_corrected(0, corrected) == [1]  # none below
    assert nearest_corrected(5, corrected, per_side=2) == [4, 1, 6, 9]
    assert sorted(nearest_corrected(5, corrected, per_side=None)) == corrected


def test_changed_slices_are_those_with_any_different_voxel():
    previous = np.zeros((5, 4, 4), dtype=np.int64)
    corrections = previous.copy()
    assert changed_slices(corrections, previous) == []
    corrections[3, 1, 2] = 2
    assert changed_slices(corrections, previous) == [3]
    with pytest.raises(InputError, match="differ in size"):
        changed_slices(corrections[:4], previous)


def test_slice_indices_outside_the_stack_are_refused():
    assert check_slice_indices([4, 1, 4], 5, "axial") == [1, 4]
    with pytest.raises(InputError, match=r"\[5, 9\] are outside the query's 5 axial slices"):
        check_slice_indices([0, 5, 9], 5, "axial")


@pytest.mark.parametrize("num_slices", [7, 31, 32, 40, 45, 200])
def test_paired_steps_give_every_slice_exactly_what_it_attends_to_in_the_plain_order(num_slices):
    lag = 15  # SAM2's object pointers reach 15 frames back; mask memories 6
    steps = propagation_steps(num_slices, pairing_lag=lag)
    order = propagation_order(num_slices)
    assert sorted(item for step in steps for item in step) == sorted(order)
    assert all(len(step) <= 2 and len({reverse for _, reverse in step}) == len(step) for step in steps)
    step_of = {i: n for n, step in enumerate(steps) for i, _ in step}
    plain = {i: n for n, (i, _) in enumerate(order)}
    for i, reverse in order:
        behind = range(i + 1, i + lag + 1) if reverse else range(i - lag, i)
        for j in (j for j in behind if 0 <= j < num_slices):
            if plain[j] < plain[i]:
                assert step_of[j] < step_of[i], (i, j)  # seen in the plain order: predicted before
            else:
                assert step_of[j] > step_of[i], (i, j)  # not seen in the plain order: still unpredicted
    down, up = num_slices // 2 + 1, num_slices - num_slices // 2 - 1
    # The downward pass's first `lag` slices alone, then pairs (none if it is no longer than `lag`).
    assert len(steps) == (num_slices if down <= lag else max(down, lag + up))


def test_without_a_lag_or_with_corrections_each_step_is_one_slice_of_the_plain_order():
    assert propagation_steps(40) == [[item] for item in propagation_order(40)]
    assert propagation_steps(40, [5], pairing_lag=15) == [[item] for item in propagation_order(40, [5])]
