"""Time estimates without torch (``FateSAMLib.estimates``): the typical volume's time from the step times, one
measurement shared by the models of one architecture and input size, kept per machine in the cache folder (a damaged
file is measured again), and durations as a person reads them. The module's line: slicer_adapter/test_estimate.py."""

from __future__ import annotations

import json

import pytest

from FateSAMLib.estimates import (
    ESTIMATES_FILE,
    StepTimes,
    architecture_key,
    duration_text,
    estimate_seconds,
    machine_key,
    read_estimates,
    record_estimate,
)
from FateSAMLib.models.registry import get_model_spec


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FATESAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_typical_volume_encodes_each_slice_once_and_tracks_and_remembers_per_label():
    # 40 query + 80 support slices encoded; 40 x 2 tracking steps; (40 + 80) x 2 memories
    assert StepTimes(1.0, 2.0, 0.5, "cpu").typical_seconds() == 120 * 1.0 + 80 * 2.0 + 240 * 0.5


def test_models_of_one_architecture_and_input_share_a_measurement():
    keys = {name: architecture_key(get_model_spec(name)) for name in ("sam2.0-tiny", "sam2.1-tiny", "medsam2")}
    assert keys == {"sam2.0-tiny": "hiera_t@1024", "sam2.1-tiny": "hiera_t@1024", "medsam2": "hiera_t@512"}
    assert architecture_key(get_model_spec("sam2.1-tiny"), 512) == "hiera_t@512"
    assert architecture_key(get_model_spec("sam2.1-base_plus")) == "hiera_b+@1024"
    assert architecture_key(get_model_spec("sam2.0-large")) == "hiera_l@1024"


def test_estimates_are_kept_per_machine_and_a_damaged_file_is_measured_again(cache):
    assert read_estimates() == {} and estimate_seconds("medsam2") is None
    times = StepTimes(0.5, 1.0, 0.1, "cpu", "2026-12-06")
    record_estimate("hiera_t@512", times)
    assert read_estimates() == {"hiera_t@512": times}
    assert estimate_seconds("medsam2") == times.typical_seconds()
    assert estimate_seconds("sam2.1-tiny", 512) == times.typical_seconds()  # same architecture and input
    assert estimate_seconds("sam2.1-tiny") is None
    data = json.loads((cache / ESTIMATES_FILE).read_text())
    other = {"hiera_t@512": {**data[machine_key()]["hiera_t@512"], "encode_s": 99.0}}
    (cache / ESTIMATES_FILE).write_text(json.dumps({**data, "another machine": other}))
    record_estimate("hiera_l@1024", times)
    assert json.loads((cache / ESTIMATES_FILE).read_text())["another machine"] == other  # left as it was
    assert set(read_estimates()) == {"hiera_t@512", "hiera_l@1024"}
    (cache / ESTIMATES_FILE).write_text("{not json")
    assert read_estimates() == {}
    record_estimate("hiera_t@512", times)
    assert read_estimates() == {"hiera_t@512": times}


@pytest.mark.parametrize(
    ("seconds", "text"), [(4, "about 10 s"), (44, "about 40 s"), (600, "about 10 min"), (7200, "about 2.0 h")]
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration_text(seconds) == text
