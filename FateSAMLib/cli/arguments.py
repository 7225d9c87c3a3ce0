"""Command-line options that choose the model, the method settings and the intensity rule."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..method.encoder import FeatureCache, encoder_batch_size
from ..method.engine import EngineOptions, FateSamEngine
from ..models.devices import available_memory_bytes
from ..models.loading import LoadedModel, load_model
from ..options import PRESETS, SETTINGS, RunSettings
from ..progress import CancelToken, ProgressCallback
from .reporting import Reporter

PRESET_SETTINGS = frozenset(name for values in PRESETS.values() for name in values)
"""Settings a preset may set: their options default to None, so that one given explicitly is told apart."""


def add_support_argument(parser: argparse.ArgumentParser) -> None:
    """``--support IMAGE LABELS``, repeated once per support: every command that takes supports."""
    parser.add_argument(
        "--support",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGE", "LABELS"),
        help="a support image and its label map or .seg.nrrd (repeat for more supports)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the model: one per :class:`RunSettings` field, after ``--preset``."""
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=sorted(PRESETS), help="named set of defaults (paper: the reference's)")
    for name, setting in SETTINGS.items():
        metadata = setting.metadata
        group.add_argument(
            metadata["flag"],
            dest=name,
            default=None if name in PRESET_SETTINGS else setting.default,
            help=metadata["help"].format(default=setting.default),
            **metadata["argparse"],
        )


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run settings the options ask for, with the preset's where left out; refused (InputError) as in Slicer."""
    return RunSettings.from_preset(args.preset, **{name: getattr(args, name) for name in SETTINGS})


def warn_if_top_k_exceeds_candidates(top_k: int, stats: dict, reporter: Reporter) -> None:
    """Warn when fewer support slices than ``top_k`` show the chosen segments: each query slice then used them all."""
    candidates = stats.get("support_slices_retrievable")
    if candidates is not None and top_k > candidates:
        reporter.warning(
            f"--top-k {top_k} is more than the {candidates} support slices that show the chosen segments: every "
            f"query slice used those {candidates}. Add supports, or lower --top-k to silence this warning."
        )


def engine_from_settings(
    settings: RunSettings, reporter: Reporter, cancel: CancelToken, progress: ProgressCallback
) -> FateSamEngine:
    """Load the model the settings name (reporting download progress) and wrap it in an engine with the settings."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    loaded = load_model(
        name=settings.model,
        checkpoint=settings.checkpoint,
        random_weights=settings.random_weights,
        image_size=settings.image_size,
        device=settings.device,
        progress=progress,
        cancel=cancel,
    )
    sized_batch = encoder_batch_size(loaded.device, loaded.image_size, available_memory_bytes(loaded.device))
    options = EngineOptions.from_settings(settings, sized_batch)
    cache = FeatureCache(settings.feature_cache, model_identity(loaded)) if settings.feature_cache else None
    return FateSamEngine(loaded, options, cache)


def model_identity(loaded: LoadedModel) -> str:
    """What makes two models' features interchangeable: name, input size and the weights' file (or seed)."""
    if loaded.checkpoint_path is None:
        weights = "random-seed-0"
    else:
        stat = Path(loaded.checkpoint_path).stat()
        weights = f"{Path(loaded.checkpoint_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{loaded.spec.name}|{loaded.image_size}|{weights}"
