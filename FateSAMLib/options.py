"""The run settings, once: :class:`RunSettings` with their defaults, choices, presets and range checks.

The command line's options (``cli.arguments``), the engine's settings (``method``), the engine process's command
line (``slicer.process``) and the Slicer module's parameter node are all derived from it. Standard library only (no
torch), so that the Slicer module can check a user's settings before starting a run. Each check raises
:class:`InputError`; the ``*_type`` wrappers turn it into the ``argparse.ArgumentTypeError`` that argparse reports,
with the same message.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError, ModelError
from .models.registry import DEFAULT_MODEL
from .models.registry import check_image_size as _check_model_image_size

T = TypeVar("T")


INT32_MAX = 2**31 - 1
"""The largest whole number an option takes: torch and Ray read counts as 32-bit integers."""


def check_whole_number(option: str, value: int, minimum: int = 1, maximum: int = INT32_MAX) -> None:
    """:class:`InputError` unless ``value`` is a whole number of at least ``minimum`` and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{option} must be a whole number of at least {minimum} (got {value!r}).")
    if value > maximum:
        raise InputError(f"{option} must be a whole number from {minimum} to {maximum} (got {value!r}).")


def check_image_size(value: int) -> None:
    """:class:`InputError` unless ``value`` is a positive multiple of 32 (SAM2's coarsest feature stride)."""
    try:
        _check_model_image_size(value)
    except ModelError:
        raise InputError(
            f"--image-size must be a positive multiple of 32, SAM2's coarsest feature stride (got {value!r}); "
            "use e.g. 1024 (the model's own), 512 or 256."
        ) from None


FLOAT32_MAX = 3.4028234663852886e38
"""The largest 32-bit float: intensities are normalised in 32-bit floats, so no number option may exceed it."""


def as_float32(value: float) -> float:
    """``value`` rounded to the nearest 32-bit float (the precision intensities are normalised in)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def check_finite(option: str, value: float) -> None:
    """:class:`InputError` unless ``value`` is a finite number within the range of 32-bit floats."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{option} must be a finite number (got {value!r}).")
    if abs(value) > FLOAT32_MAX:
        raise InputError(f"{option} must lie within ±3.4e38, the range of 32-bit floats (got {value:g}).")


def check_positive(option: str, value: float) -> None:
    """:class:`InputError` unless ``value`` is a finite number above 0."""
    check_finite(option, value)
    if value <= 0:
        raise InputError(f"{option} must be above 0 (got {value:g}).")


def check_percentile(value: float) -> None:
    """:class:`InputError` unless ``value`` is a percentile, a number in 0..100."""
    check_finite("--percentiles", value)
    if not 0 <= value <= 100:
        raise InputError(f"--percentiles values must lie in 0..100 (got {value:g}); the default is 0.5 99.5.")


def check_percentiles(low: float, high: float) -> None:
    """:class:`InputError` unless ``0 <= low < high <= 100``."""
    for value in (low, high):
        check_percentile(value)
    if as_float32(low) >= as_float32(high):
        raise InputError(
            f"--percentiles must satisfy 0 <= LOW < HIGH <= 100, as 32-bit floats (got {low:g} {high:g}); the default "
            "is 0.5 99.5."
        )


def check_window(level: float, width: float) -> None:
    """:class:`InputError` unless the window's level is finite, its width positive, and its bounds (level -+
    width/2) two distinct 32-bit floats."""
    check_finite("--window", level)
    check_finite("--window", width)
    if width <= 0:
        raise InputError(f"--window WIDTH must be above 0 (got {width:g}), e.g. --window 40 400 for soft tissue in CT.")
    low, high = level - width / 2, level + width / 2
    check_finite("--window LEVEL - WIDTH/2", low)
    check_finite("--window LEVEL + WIDTH/2", high)
    if as_float32(low) >= as_float32(high):
        raise InputError(
            f"--window {level:g} {width:g} is too narrow for its level: its bounds are one value as 32-bit floats (the "
            "precision intensities are normalised in). Widen the window, e.g. --window 40 400 for soft tissue in CT."
        )


def _argument_type(parse: Callable[[str], T], check: Callable[[T], None]) -> Callable[[str], T]:
    """An argparse ``type=`` function: ``parse`` the text (int or float), then ``check`` the value."""
    noun = "whole number" if parse is int else "number"

    def convert(text: str) -> T:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}.") from None
        try:
            check(value)
        except InputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return convert


def whole_number_type(option: str, minimum: int = 1, maximum: int = INT32_MAX) -> Callable[[str], int]:
    """argparse type: a whole number from ``minimum`` to ``maximum`` for ``option``."""
    return _argument_type(int, lambda value: check_whole_number(option, value, minimum, maximum))


def finite_float_type(option: str) -> Callable[[str], float]:
    """argparse type: a finite number (no nan or inf) for ``option``."""
    return _argument_type(float, lambda value: check_finite(option, value))


def positive_number_type(option: str) -> Callable[[str], float]:
    """argparse type: a finite number above 0 for ``option``."""
    return _argument_type(float, lambda value: check_positive(option, value))


image_size_type = _argument_type(int, check_image_size)
percentile_type = _argument_type(float, check_percentile)


SLICE_AXES = ("axial", "coronal", "sagittal")
"""The slice axes by name; a setting may also be ``auto`` (the axis of coarsest spacing)."""
SLICE_AXIS_CHOICES = ("auto", *SLICE_AXES)
NORMALIZATIONS = ("percentile", "window")
DEVICES = ("auto", "cpu", "cuda", "mps")
"""The devices a menu offers; ``device`` also takes any torch device name, e.g. ``cuda:1``."""

PRESETS: dict[str, dict[str, Any]] = {
    # What the reference implementation (FATE-SAM paper) really runs: it loads sam2_hiera_large.pt with
    # sam2_hiera_l.yaml, the SAM2.0 Hiera-L, at input 1024 with the top-3 supports.
    "paper": {"model": "sam2.0-large", "image_size": 1024, "top_k": 3},
}
"""Named sets of settings; a setting given explicitly wins over the preset's."""


def _setting(default: Any, flag: str, help: str, **argparse_options: Any) -> Any:
    """A :class:`RunSettings` field: its default, its command-line flag and help (``{default}`` is filled in), and
    the other ``add_argument`` options (type, choices, nargs, metavar, action)."""
    return field(default=default, metadata={"flag": flag, "help": help, "argparse": argparse_options})


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a run, with its default; refused (:class:`InputError`) when out of range or contradictory.

    ``image_size``, ``encoder_batch_size`` and ``threads`` left None mean: the model's own input size, batches sized
    to free memory, one torch thread per physical core. ``checkpoint`` and ``feature_cache`` are kept as paths,
    ``percentiles`` and ``window`` as tuples of floats, whatever sequence or text they were given as.
    """

    model: str = _setting(DEFAULT_MODEL, "--model", "SAM2 model name (default {default}; see 'fatesam models')")
    checkpoint: Path | None = _setting(
        None, "--checkpoint", "local checkpoint file instead of the downloaded one", type=Path
    )
    random_weights: bool = _setting(
        False,
        "--random-weights",
        "seeded random weights, for tests only: masks are meaningless",
        action="store_true",
    )
    image_size: int | None = _setting(
        None,
        "--image-size",
        "model input size, a multiple of 32 (default the model's, 1024)",
        type=image_size_type,
    )
    device: str = _setting("auto", "--device", "auto (cuda, then mps, then cpu), cuda, cuda:1, mps or cpu")
    top_k: int = _setting(
        3, "--top-k", "support slices retrieved per query slice (default {default})", type=whole_number_type("--top-k")
    )
    slice_axis: str = _setting("auto", "--slice-axis", "auto: the axis of coarsest spacing", choices=SLICE_AXIS_CHOICES)
    normalization: str = _setting("percentile", "--normalization", "intensity rule", choices=NORMALIZATIONS)
    percentiles: tuple[float, float] = _setting(
        (0.5, 99.5), "--percentiles", "0..100", nargs=2, type=percentile_type, metavar=("LOW", "HIGH")
    )
    window: tuple[float, float] | None = _setting(
        None,
        "--window",
        "fixed window, e.g. 40 400 for CT (with --normalization window only)",
        nargs=2,
        type=finite_float_type("--window"),
        metavar=("LEVEL", "WIDTH"),
    )
    reuse_features: bool = _setting(
        True,
        "--naive",
        "make the reference code's encoder passes (same masks, slower; to compare)",
        action="store_false",
    )
    encoder_batch_size: int | None = _setting(
        None,
        "--encoder-batch-size",
        "slices per encoder batch (default: sized to free memory)",
        type=whole_number_type("--encoder-batch-size"),
    )
    threads: int | None = _setting(
        None,
        "--threads",
        "CPU threads for torch (default: one per physical core)",
        type=whole_number_type("--threads"),
    )
    feature_cache: Path | None = _setting(
        None,
        "--feature-cache",
        "folder for encoder features on disk (support and query slices, by content): a rerun encodes only new slices",
        type=Path,
    )

    def __post_init__(self) -> None:
        for name in ("checkpoint", "feature_cache"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("percentiles", "window"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value)
                if len(value) != 2:
                    example = "(level, width), e.g. (40, 400) for CT" if name == "window" else "(low, high)"
                    raise InputError(f"{name} must be {example} (got {value!r}).")
                object.__setattr__(self, name, tuple(_as_float(v) for v in value))
        self.validate()

    def validate(self) -> None:
        """Refuse (:class:`InputError`) settings out of range or that contradict each other."""
        if self.slice_axis not in SLICE_AXIS_CHOICES:
            raise InputError(f"Unknown slice axis '{self.slice_axis}'; use auto, {', '.join(SLICE_AXES)}.")
        if self.image_size is not None:
            check_image_size(self.image_size)
        check_whole_number("--top-k", self.top_k)
        if self.encoder_batch_size is not None:
            check_whole_number("--encoder-batch-size", self.encoder_batch_size)
        if self.threads is not None:
            check_whole_number("--threads", self.threads)
        if self.normalization not in NORMALIZATIONS:
            raise InputError(f"--normalization must be 'percentile' or 'window' (got {self.normalization!r}).")
        check_percentiles(*self.percentiles)
        if self.normalization == "window":
            if self.window is None:
                raise InputError("--normalization window needs --window LEVEL WIDTH (e.g. --window 40 400 for CT).")
            check_window(*self.window)
        elif self.window is not None:
            raise InputError(
                "--window is used only with --normalization window; add --normalization window, or leave out --window "
                "to normalise by percentiles."
            )

    @classmethod
    def from_preset(cls, preset: str | None, **settings: Any) -> RunSettings:
        """These ``settings``, with the ``preset``'s values for those left out (or None), then the defaults."""
        if preset is not None and preset not in PRESETS:
            raise InputError(f"Unknown preset '{preset}'. Use one of: {', '.join(sorted(PRESETS))}.")
        given = {name: value for name, value in settings.items() if value is not None}
        return cls(**{**PRESETS.get(preset or "", {}), **given})


def _as_float(value: Any) -> Any:
    """``value`` as a float when it is a number (ints become floats); anything else is left for the checks."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


SETTINGS = {setting.name: setting for setting in dataclasses.fields(RunSettings)}
"""The fields of :class:`RunSettings` by name, in order; their metadata holds the command-line flag and help."""

RESULT_SETTINGS = (
    "model",
    "checkpoint",
    "random_weights",
    "image_size",
    "top_k",
    "slice_axis",
    "normalization",
    "percentiles",
    "window",
)
"""The settings that change a run's masks; the others (device, batch size, threads, feature cache, the naive
encoder passes) change only how fast it runs."""


def result_settings(settings: RunSettings) -> dict[str, Any]:
    """The :data:`RESULT_SETTINGS` of ``settings`` as JSON values (a checkpoint as its absolute path; the
    percentiles only when they are used)."""
    values = {name: getattr(settings, name) for name in RESULT_SETTINGS}
    if settings.normalization == "window":
        del values["percentiles"]
    if settings.checkpoint is not None:
        values["checkpoint"] = str(settings.checkpoint.resolve())
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


def option_arguments(name: str, value: Any) -> list[str]:
    """Setting ``name`` with ``value`` as ``fatesam segment`` options: a switch when it is not its default, else the
    flag and its values (nothing for None). Parsed by the command line, they give back ``value``."""
    setting = SETTINGS[name]
    if setting.metadata["argparse"].get("action") in ("store_true", "store_false"):
        return [setting.metadata["flag"]] if value != setting.default else []
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [setting.metadata["flag"], *(str(item) for item in values)]
