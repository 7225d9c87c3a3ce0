"""Measuring this machine's speed (``method.speed``) with the engine's own steps, once per architecture and input
size, and ``fatesam models list`` showing the estimates it keeps (measuring only what is missing)."""

from __future__ import annotations

import json

import pytest

from FateSAMLib.cli.main import main
from FateSAMLib.estimates import ESTIMATES_FILE, StepTimes, architecture_key, read_estimates, record_estimate
from FateSAMLib.method.speed import measure_estimates
from FateSAMLib.models.registry import MODELS, get_model_spec


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FATESAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_one_measurement_per_architecture_is_kept_and_not_repeated(cache):
    tiny = [get_model_spec("sam2.0-tiny"), get_model_spec("sam2.1-tiny")]
    events = []
    times = measure_estimates(tiny, device="cpu", image_size=64, progress=lambda f, m: events.append(m))
    assert list(times) == ["hiera_t@64"] and len(events) == 2  # one architecture measured, then done
    step = times["hiera_t@64"]
    assert step.device == "cpu" and min(step.encode_s, step.track_s, step.memory_s) > 0
    assert read_estimates() == times
    kept = (cache / ESTIMATES_FILE).read_bytes()
    assert measure_estimates(tiny, device="cpu", image_size=64, progress=lambda f, m: events.append(m)) == times
    assert len(events) == 2 and (cache / ESTIMATES_FILE).read_bytes() == kept  # nothing measured again
    again = measure_estimates(tiny[:1], device="cpu", image_size=64, again=True)
    assert again["hiera_t@64"] != step  # measured anew (times never repeat to the nanosecond)


def test_models_list_shows_the_kept_estimates_without_measuring(cache, capsys):
    for spec in MODELS.values():
        record_estimate(architecture_key(spec), StepTimes(3.4, 5.5, 0.2, "cpu", "2026-12-06"))
    kept = (cache / ESTIMATES_FILE).read_bytes()
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[1 : len(MODELS) + 1]}
    assert rows["sam2.1-tiny"].endswith("about 15 min (cpu)") and rows["medsam2"].endswith("about 15 min (cpu)")
    assert out[len(MODELS) + 1].startswith("Typical volume: 40 query slices, 80 labelled support slices and 2 labels")
    assert (cache / ESTIMATES_FILE).read_bytes() == kept
    assert json.loads(kept)  # still the file written above
