"""Range checks of the run settings, shared by the command line (argparse types) and the Slicer module.

Standard library only (no torch), so that the Slicer module can check a user's settings before starting a run. Each
check raises :class:`InputError`; the ``*_type`` wrappers turn it into the ``argparse.ArgumentTypeError`` that
argparse reports, with the same message.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from .errors import InputError, ModelError
from .models.registry import check_image_size as _check_model_image_size

T = TypeVar("T")


def check_whole_number(option: str, value: int, minimum: int = 1) -> None:
    """:class:`InputError` unless ``value`` is a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{option} must be a whole number of at least {minimum} (got {value!r}).")


def check_image_size(value: int) -> None:
    """:class:`InputError` unless ``value`` is a positive multiple of 32 (SAM2's coarsest feature stride)."""
    try:
        _check_model_image_size(value)
    except ModelError:
        raise InputError(
            f"--image-size must be a positive multiple of 32, SAM2's coarsest feature stride (got {value!r}); "
            "use e.g. 1024 (the model's own), 512 or 256."
        ) from None


def check_finite(option: str, value: float) -> None:
    """:class:`InputError` unless ``value`` is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{option} must be a finite number (got {value!r}).")


def check_percentile(value: float) -> None:
    """:class:`InputError` unless ``value`` is a percentile, a number in 0..100."""
    check_finite("--percentiles", value)
    if not 0 <= value <= 100:
        raise InputError(f"--percentiles values must lie in 0..100 (got {value:g}); the default is 0.5 99.5.")


def check_percentiles(low: float, high: float) -> None:
    """:class:`InputError` unless ``0 <= low < high <= 100``."""
    for value in (low, high):
        check_percentile(value)
    if low >= high:
        raise InputError(
            f"--percentiles must satisfy 0 <= LOW < HIGH <= 100 (got {low:g} {high:g}); the default is 0.5 99.5."
        )


def check_window(level: float, width: float) -> None:
    """:class:`InputError` unless the window's level is finite and its width a finite positive number."""
    check_finite("--window LEVEL", level)
    check_finite("--window WIDTH", width)
    if width <= 0:
        raise InputError(f"--window WIDTH must be above 0 (got {width:g}), e.g. --window 40 400 for soft tissue in CT.")


def check_run_settings(
    image_size: int | None,
    top_k: int,
    encoder_batch_size: int | None,
    threads: int | None,
    normalization: str,
    window: tuple[float, float] | None,
    percentiles: tuple[float, float],
) -> None:
    """Refuse (:class:`InputError`) settings out of range or that contradict each other; None means the default."""
    if image_size is not None:
        check_image_size(image_size)
    check_whole_number("--top-k", top_k)
    if encoder_batch_size is not None:
        check_whole_number("--encoder-batch-size", encoder_batch_size)
    if threads is not None:
        check_whole_number("--threads", threads)
    if normalization not in ("percentile", "window"):
        raise InputError(f"--normalization must be 'percentile' or 'window' (got {normalization!r}).")
    check_percentiles(*percentiles)
    if normalization == "window":
        if window is None:
            raise InputError("--normalization window needs --window LEVEL WIDTH (e.g. --window 40 400 for CT).")
        check_window(*window)
    elif window is not None:
        raise InputError(
            "--window is used only with --normalization window; add --normalization window, or leave out --window "
            "to normalise by percentiles."
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


def whole_number_type(option: str, minimum: int = 1) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``minimum`` for ``option``."""
    return _argument_type(int, lambda value: check_whole_number(option, value, minimum))


def finite_float_type(option: str) -> Callable[[str], float]:
    """argparse type: a finite number (no nan or inf) for ``option``."""
    return _argument_type(float, lambda value: check_finite(option, value))


image_size_type = _argument_type(int, check_image_size)
percentile_type = _argument_type(float, check_percentile)
