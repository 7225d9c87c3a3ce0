"""Command-line options that choose the model, the method settings and the intensity rule."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..io.geometry import SLICE_AXES
from ..method.encoder import FeatureCache, encoder_batch_size
from ..method.engine import EngineOptions, FateSamEngine
from ..method.pipeline import Normalization
from ..models.devices import available_memory_bytes
from ..models.loading import LoadedModel, load_model
from ..models.registry import DEFAULT_MODEL
from ..options import check_run_settings, finite_float_type, image_size_type, percentile_type, whole_number_type
from ..progress import CancelToken, ProgressCallback
from .reporting import Reporter

PRESETS = {
    # What the reference implementation (FATE-SAM paper) really runs: it loads sam2_hiera_large.pt with
    # sam2_hiera_l.yaml, the SAM2.0 Hiera-L, at input 1024 with the top-3 supports.
    "paper": {"model": "sam2.0-large", "image_size": 1024, "top_k": 3},
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the model."""
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=sorted(PRESETS), help="named set of defaults (paper: the reference's)")
    group.add_argument("--model", default=None, help=f"SAM2 model name (default {DEFAULT_MODEL}; see 'fatesam models')")
    group.add_argument("--checkpoint", type=Path, help="local checkpoint file instead of the downloaded one")
    group.add_argument(
        "--random-weights", action="store_true", help="seeded random weights, for tests only: masks are meaningless"
    )
    group.add_argument(
        "--image-size", type=image_size_type, help="model input size, a multiple of 32 (default the model's, 1024)"
    )
    group.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, mps or cpu")
    group.add_argument(
        "--top-k", type=whole_number_type("--top-k"), help="support slices retrieved per query slice (default 3)"
    )
    group.add_argument(
        "--slice-axis", default="auto", choices=("auto", *SLICE_AXES), help="auto: the axis of coarsest spacing"
    )
    group.add_argument("--normalization", default="percentile", choices=("percentile", "window"))
    group.add_argument(
        "--percentiles", nargs=2, type=percentile_type, default=(0.5, 99.5), metavar=("LOW", "HIGH"), help="0..100"
    )
    group.add_argument(
        "--window",
        nargs=2,
        type=finite_float_type("--window"),
        metavar=("LEVEL", "WIDTH"),
        help="fixed window, e.g. 40 400 for CT (with --normalization window only)",
    )
    group.add_argument(
        "--naive", action="store_true", help="make the reference code's encoder passes (same masks, slower; to compare)"
    )
    group.add_argument(
        "--encoder-batch-size",
        type=whole_number_type("--encoder-batch-size"),
        help="slices per encoder batch (default: sized to free memory)",
    )
    group.add_argument(
        "--threads", type=whole_number_type("--threads"), help="CPU threads for torch (default: one per physical core)"
    )
    group.add_argument(
        "--feature-cache", type=Path, help="folder for support features on disk: a rerun encodes only the query"
    )


def top_k_from_args(args: argparse.Namespace) -> int:
    """Support slices per query slice: the option, else the preset's, else 3."""
    return args.top_k if args.top_k is not None else PRESETS.get(args.preset or "", {}).get("top_k", 3)


def normalization_from_args(args: argparse.Namespace) -> Normalization:
    """The intensity rule the options ask for, once every run setting is checked (InputError, as in Slicer)."""
    window = tuple(args.window) if args.window else None
    check_run_settings(
        image_size=args.image_size,
        top_k=top_k_from_args(args),
        encoder_batch_size=args.encoder_batch_size,
        threads=args.threads,
        normalization=args.normalization,
        window=window,
        percentiles=tuple(args.percentiles),
    )
    if args.normalization == "window":
        return Normalization(window=window)
    return Normalization(percentiles=tuple(args.percentiles))


def warn_if_top_k_exceeds_candidates(top_k: int, stats: dict, reporter: Reporter) -> None:
    """Warn when fewer support slices than ``top_k`` show the chosen segments: each query slice then used them all."""
    candidates = stats.get("support_slices_retrievable")
    if candidates is not None and top_k > candidates:
        reporter.warning(
            f"--top-k {top_k} is more than the {candidates} support slices that show the chosen segments: every "
            f"query slice used those {candidates}. Add supports, or lower --top-k to silence this warning."
        )


def engine_from_args(
    args: argparse.Namespace, reporter: Reporter, cancel: CancelToken, progress: ProgressCallback
) -> FateSamEngine:
    """Load the model the options name (reporting download progress) and wrap it in an engine with the settings."""
    preset = PRESETS.get(args.preset or "", {})
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(
        name=model_name_from_args(args),
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        image_size=args.image_size or preset.get("image_size"),
        device=args.device,
        progress=progress,
        cancel=cancel,
    )
    if loaded.random_weights:
        reporter.warning("RANDOM WEIGHTS: the model is untrained, its masks are meaningless (tests and smoke runs).")
    batch = args.encoder_batch_size or encoder_batch_size(
        loaded.device, loaded.image_size, available_memory_bytes(loaded.device)
    )
    options = EngineOptions(top_k=top_k_from_args(args), reuse_features=not args.naive, encoder_batch_size=batch)
    cache = FeatureCache(args.feature_cache, model_identity(loaded), reporter.warning) if args.feature_cache else None
    return FateSamEngine(loaded.model, loaded.device, loaded.image_size, options, cache)


def model_identity(loaded: LoadedModel) -> str:
    """What makes two models' features interchangeable: name, input size and the weights' file (or seed)."""
    if loaded.checkpoint_path is None:
        weights = "random-seed-0"
    else:
        stat = Path(loaded.checkpoint_path).stat()
        weights = f"{Path(loaded.checkpoint_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{loaded.spec.name}|{loaded.image_size}|{weights}"


def model_name_from_args(args: argparse.Namespace) -> str:
    """The model the options name, directly or through a preset."""
    return args.model or PRESETS.get(args.preset or "", {}).get("model", DEFAULT_MODEL)
