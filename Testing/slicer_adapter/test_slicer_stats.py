"""The engine's statistics read in the Slicer module: doubtful slices in RAS, lowest score first."""

from __future__ import annotations

import json

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.slicer.stats import read_doubtful_slices


def test_doubtful_slices_are_converted_to_ras_and_sorted(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(
        json.dumps(
            {
                "doubtful_slices": [
                    {"slice_index": 7, "axis": "axial", "center_lps": [1, 2, 3], "certainty": 0.6, "labels": ["Liver"]},
                    {"slice_index": 2, "axis": "axial", "center_lps": [-4, 5, -6], "certainty": 0.1, "labels": []},
                ]
            }
        )
    )
    slices = read_doubtful_slices(stats)
    assert [s.slice_index for s in slices] == [2, 7]
    assert slices[0].center_ras == (4.0, -5.0, -6.0) and slices[1].center_ras == (-1.0, -2.0, 3.0)
    assert slices[1].labels == ("Liver",)
    assert read_doubtful_slices(tmp_path / "missing.json") == []
    stats.write_text(json.dumps({"doubtful_slices": [{"slice_index": 1}]}))
    with pytest.raises(InputError, match="malformed"):
        read_doubtful_slices(stats)
