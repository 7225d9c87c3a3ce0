"""The engine's statistics read in the Slicer module: doubtful slices in RAS, lowest certainty first."""

from __future__ import annotations

import json

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.slicer.stats import read_doubtful_slices, read_run_stats


def summary_json(doubtful: list[dict]) -> str:
    """A run's statistics as the engine writes them (the RunSummary schema), with these doubtful slices."""
    run = {"model": "sam2.1-tiny", "image_size": 128, "device": "cpu", "random_weights": True, "reuse_features": True}
    counts = {"encoder_passes": 3, "query_slices": 9, "support_slices_encoded": 2, "support_slices_retrievable": 2}
    return json.dumps(
        {
            **counts,
            "labels": [1],
            "seconds": {"total": 1.0},
            "corrected_slices": [],
            "support_memories_encoded": 2,
            "slice_axis": "axial",
            "segments": [{"value": 1, "name": "Liver", "color": [1, 0, 0]}],
            **run,
            "top_k": 3,
            "doubtful_slices": doubtful,
        }
    )


def test_doubtful_slices_are_converted_to_ras_and_sorted(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(
        summary_json(
            [
                {"slice_index": 7, "axis": "axial", "center_lps": [1, 2, 3], "certainty": 0.6, "labels": ["Liver"]},
                {"slice_index": 2, "axis": "axial", "center_lps": [-4, 5, -6], "certainty": 0.1, "labels": []},
            ]
        )
    )
    slices = read_doubtful_slices(stats)
    assert [s.slice_index for s in slices] == [2, 7]
    assert slices[0].center_ras == (4.0, -5.0, -6.0) and slices[1].center_ras == (-1.0, -2.0, 3.0)
    assert slices[1].labels == ("Liver",)
    assert read_doubtful_slices(tmp_path / "missing.json") == []
    stats.write_text(summary_json([{"slice_index": 1}]))
    with pytest.raises(InputError, match="malformed"):
        read_doubtful_slices(stats)
    stats.write_text(json.dumps({"doubtful_slices": []}))  # not the engine's statistics: no counts, no model
    with pytest.raises(InputError, match="malformed"):
        read_doubtful_slices(stats)
    assert read_run_stats(tmp_path / "missing.json") is None
