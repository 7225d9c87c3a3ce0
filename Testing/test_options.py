"""RunSettings, the one set of run settings: defaults, presets, validation, and what is derived from it (the
command line's options, the engine's settings, the intensity rule)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.options import PRESETS, SETTINGS, RunSettings

REPO = Path(__file__).resolve().parents[1]


def test_the_defaults_are_the_documented_ones():
    settings = RunSettings()
    assert (settings.model, settings.top_k, settings.image_size, settings.device) == ("sam2.1-tiny", 3, None, "auto")
    assert (settings.slice_axis, settings.normalization, settings.percentiles) == ("auto", "percentile", (0.5, 99.5))
    assert settings.reuse_features and not settings.random_weights and settings.window is None


def test_settings_are_frozen_and_normalised():
    settings = RunSettings(checkpoint="/models/s.pt", feature_cache="cache", normalization="window", window=[40, 400])
    assert settings.checkpoint == Path("/models/s.pt") and settings.feature_cache == Path("cache")
    assert settings.window == (40.0, 400.0) and all(type(value) is float for value in settings.window)
    assert settings == RunSettings(
        checkpoint=Path("/models/s.pt"), feature_cache=Path("cache"), normalization="window", window=(40.0, 400.0)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"slice_axis": "oblique"}, "Unknown slice axis 'oblique'; use auto, axial, coronal, sagittal."),
        ({"percentiles": (1, 2, 3)}, r"percentiles must be \(low, high\)"),
        ({"threads": 0}, "--threads must be a whole number of at least 1"),
        ({"encoder_batch_size": True}, "--encoder-batch-size must be a whole number"),
        ({"percentiles": (True, 99)}, "--percentiles must be a finite number"),
    ],
)
def test_settings_out_of_range_are_refused(settings, message):
    with pytest.raises(InputError, match=message):
        RunSettings(**settings)


def test_a_preset_fills_only_what_is_left_out():
    assert RunSettings.from_preset("paper") == RunSettings(model="sam2.0-large", image_size=1024, top_k=3)
    explicit = RunSettings.from_preset("paper", model="sam2.1-tiny", image_size=128, top_k=None, device="cpu")
    assert explicit == RunSettings(model="sam2.1-tiny", image_size=128, top_k=3, device="cpu")
    assert RunSettings.from_preset(None, top_k=None) == RunSettings()
    with pytest.raises(InputError, match="Unknown preset 'fast'. Use one of: paper."):
        RunSettings.from_preset("fast")
    assert all(name in SETTINGS for values in PRESETS.values() for name in values)


def test_every_setting_has_a_command_line_option_with_its_default(capsys):
    from FateSAMLib.cli.arguments import PRESET_SETTINGS, settings_from_args
    from FateSAMLib.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["segment", "--support", "a", "b", "--query", "q", "--output", "o"])
    for name, setting in SETTINGS.items():
        assert getattr(args, name) == (None if name in PRESET_SETTINGS else setting.default), name
    assert settings_from_args(args) == RunSettings()
    assert PRESET_SETTINGS == {"model", "image_size", "top_k"}
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "--top-k TOP_K support slices retrieved per query slice (default 3)" in usage
    assert "--model MODEL SAM2 model name (default sam2.1-tiny;" in usage and "--naive make the reference" in usage


def test_the_engines_settings_and_the_intensity_rule_come_from_the_settings():
    from FateSAMLib.method.engine import EngineOptions
    from FateSAMLib.method.pipeline import Normalization

    assert EngineOptions().top_k == RunSettings().top_k and Normalization() == Normalization.from_settings(
        RunSettings()
    )
    options = EngineOptions.from_settings(RunSettings(top_k=5, reuse_features=False), sized_batch=12)
    assert (options.top_k, options.reuse_features, options.encoder_batch_size) == (5, False, 12)
    assert EngineOptions.from_settings(RunSettings(encoder_batch_size=2), sized_batch=12).encoder_batch_size == 2
    windowed = RunSettings(normalization="window", window=(40, 400), percentiles=(1, 99))
    assert Normalization.from_settings(windowed) == Normalization(window=(40.0, 400.0))
    assert Normalization.from_settings(RunSettings(percentiles=(1, 99))) == Normalization(percentiles=(1.0, 99.0))


def test_options_import_only_the_standard_library():
    heavy = "('numpy', 'torch', 'sam2', 'SimpleITK')"
    code = f"import sys, FateSAMLib.options; print(sorted(m for m in {heavy} if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert completed.stdout.strip() == "[]"
