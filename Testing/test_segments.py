"""Segment names: the one matching rule (segment_key), and merging the supports' segments into one set of values."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from FateSAMLib.errors import InputError
from FateSAMLib.segments import MAX_LABEL_VALUE, Segment, segment_key

# Names that must name one structure, on the command line and in Slicer alike (Testing/slicer_adapter uses them too).
SAME_NAMES = (("Liver", " liver ", "LIVER", "liver\t"), ("Straße", "STRASSE", "strasse", " STRAßE"))
OTHER_NAMES = ("Liver", "Livers", "Li ver", "Strase")


def supports_named(*names_per_support: tuple[str, ...]):
    """CLI-side supports (no voxels needed to merge names) whose segments have these names, valued 1, 2, ..."""
    from FateSAMLib.method.pipeline import SupportCase

    empty = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    return [
        SupportCase(empty, empty, [Segment(value, name, (1.0, 0.0, 0.0)) for value, name in enumerate(names, start=1)])
        for names in names_per_support
    ]


def test_segment_key_ignores_case_by_unicode_folding_and_surrounding_spaces():
    for names in SAME_NAMES:
        assert len({segment_key(name) for name in names}) == 1, names
    assert len({segment_key(name) for name in OTHER_NAMES}) == len(OTHER_NAMES)
    assert "Straße".lower() != "STRASSE".lower()  # why casefold(): lower() keeps the sharp s


def test_cli_merges_and_selects_by_the_same_rule():
    from FateSAMLib.method.pipeline import merge_segments, select_segments

    livers, strasses = SAME_NAMES
    merged, remaps = merge_segments(supports_named(*zip(livers, strasses, strict=True)))
    assert [(s.value, s.name) for s in merged] == [(1, "Liver"), (2, "Straße")]
    assert remaps == [{1: 1, 2: 2}] * len(livers)
    for wanted in (*livers, *strasses):
        assert len(select_segments(merged, [wanted])) == 1
    assert [s.name for s in select_segments(merged, ["STRASSE", " LIVER "])] == ["Liver", "Straße"]


def test_merged_values_stay_within_16_bits():
    """Two supports with 65535 under different names: the second takes a free value, not 65536 (refused later)."""
    from FateSAMLib.method.pipeline import merge_segments

    first = supports_named(("a",))[0]
    first.segments = [Segment(1, "Liver", (1.0, 0.0, 0.0)), Segment(MAX_LABEL_VALUE, "Spleen", (0.0, 1.0, 0.0))]
    second = supports_named(("b",))[0]
    second.segments = [Segment(MAX_LABEL_VALUE, "Kidney", (0.0, 0.0, 1.0))]
    merged, remaps = merge_segments([first, second])
    assert [(s.value, s.name) for s in merged] == [(1, "Liver"), (2, "Kidney"), (MAX_LABEL_VALUE, "Spleen")]
    assert remaps == [{1: 1, MAX_LABEL_VALUE: MAX_LABEL_VALUE}, {MAX_LABEL_VALUE: 2}]


def test_more_segments_than_16_bit_values_are_refused_at_merge_time():
    from FateSAMLib.method import pipeline

    full = supports_named(("a",))[0]
    full.segments = [Segment(value, f"s{value}", (1.0, 0.0, 0.0)) for value in range(1, MAX_LABEL_VALUE + 1)]
    extra = supports_named(("one more",))[0]
    with pytest.raises(InputError, match="more than 65535 different segments.*--segments"):
        pipeline.merge_segments([full, extra])
