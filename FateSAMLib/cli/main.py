"""The ``fatesam`` command line: segment, evaluate, crossval, models."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..atomic import OutputFiles, check_outputs
from ..errors import INTERRUPTED, Cancelled, FateSAMError, InputError
from ..formats import OUTPUT_SUFFIXES, output_suffix
from ..io.images import read_image
from ..io.labels import label_map_writer
from ..io.probabilities import probability_suffix, probability_writer
from ..memory import is_allocation_failure
from ..method.pipeline import Normalization, load_support, merge_segments, segment_volume, select_segments
from ..models.devices import not_enough_memory, resolve_device
from ..progress import CancelToken, StageProgress
from .arguments import (
    add_label_names_argument,
    add_model_arguments,
    add_support_argument,
    engine_from_settings,
    settings_from_args,
    support_pairs,
    warn_if_top_k_exceeds_candidates,
)
from .batch import add_batch_parser
from .corrections import add_correction_arguments, corrections_from_args
from .crossval import add_crossval_parser
from .evaluate import add_evaluate_parser
from .models import add_models_parser
from .remote import add_server_arguments, run_remote_segment
from .reporting import Reporter, json_writer, segment_stats
from .serve import add_serve_parser


def run_segment(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """``fatesam segment``: read, segment, write the label volume (and stats) atomically."""
    if args.server:
        if args.probabilities or args.label_names:
            raise InputError("--probabilities and --label-names run locally only: leave out --server to use them.")
        return run_remote_segment(args, reporter, cancel)
    started = time.perf_counter()
    output = Path(args.output)
    if not output_suffix(output):
        raise InputError(f"Unsupported output '{output}'. Use one of: {', '.join(OUTPUT_SUFFIXES)}.")
    probabilities_suffix = probability_suffix(args.probabilities) if args.probabilities else ""
    check_outputs([output, args.stats_json, args.probabilities], args.overwrite)
    settings = settings_from_args(args)
    pairs = support_pairs(args, settings, reporter)

    reporter.progress(0.0, "Reading volumes")
    supports = [load_support(image, labels, args.label_names) for image, labels in pairs]
    select_segments(merge_segments(supports)[0], args.segments)  # an unknown name is refused before the model loads
    query = read_image(args.query)
    corrections = corrections_from_args(args, query, settings.slice_axis)
    read_seconds = time.perf_counter() - started

    engine = engine_from_settings(settings, reporter, cancel, StageProgress(reporter.progress, 0.01, 0.1))
    model_seconds = time.perf_counter() - started - read_seconds
    result = segment_volume(
        engine,
        supports,
        query,
        segments=args.segments,
        slice_axis=settings.slice_axis,
        normalization=Normalization.from_settings(settings),
        progress=StageProgress(reporter.progress, 0.1, 0.98),
        cancel=cancel,
        corrections=corrections,
        probabilities=bool(args.probabilities),
    )
    cancel.raise_if_cancelled()
    warn_if_top_k_exceeds_candidates(settings.top_k, vars(result.stats), reporter)
    write_started = time.perf_counter()
    with OutputFiles(args.overwrite) as outputs:
        outputs.add(output, label_map_writer(result.labels, output, result.segments), output_suffix(output))
        if args.probabilities:
            outputs.add(args.probabilities, probability_writer(result.probabilities), probabilities_suffix)
        seconds = {
            "read": read_seconds,
            "model_load": model_seconds,
            **result.stats.seconds,
            "write": time.perf_counter() - write_started,
            "total": time.perf_counter() - started,
        }
        run = {
            "model": settings.model,
            "image_size": engine.image_size,
            "device": str(engine.device),
            "random_weights": settings.random_weights,
            "reuse_features": engine.options.reuse_features,
            "top_k": engine.options.top_k,
        }
        if args.stats_json:
            outputs.add(args.stats_json, json_writer(segment_stats(result, seconds, run)))
    reporter.progress(1.0, f"Wrote {output}")
    reporter.done(str(output))
    return 0


class UsageError(InputError):
    """Options that argparse refused (unknown, missing or out of range)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse reporting bad options as every other bad input: exit code 1 (argparse's own is 2); --help exits 0."""

    def error(self, message: str) -> NoReturn:
        # "argument --top-k: --top-k must be ..." -> "--top-k must be ...": the check's message already names it.
        message = re.sub(r"^argument (\S+): (?=\1\b)", "", message)
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = ArgumentParser(prog="fatesam", description="Few-shot 3D segmentation with frozen SAM2 (FATE-SAM).")
    parser.add_argument("--version", action="version", version=f"fatesam {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)

    segment = subparsers.add_parser("segment", help="segment a query volume from labelled support volumes")
    add_support_argument(segment)
    segment.add_argument("--query", required=True, help="the volume to segment (NIfTI, NRRD, MHA or a DICOM folder)")
    segment.add_argument("--output", required=True, help="output label volume: .nii.gz, .nrrd, .mha or .seg.nrrd")
    segment.add_argument("--segments", nargs="+", metavar="NAME_OR_VALUE", help="only these segments (default all)")
    segment.add_argument(
        "--stats-json", type=Path, help="write counts, timings, volumes, per-slice certainty and provenance here"
    )
    segment.add_argument(
        "--probabilities",
        type=Path,
        help="also write each segment's probability on the query's grid here (.nrrd, .nii.gz, .nii, .mha): one uint8 "
        "component per segment, 0..255; >= 128 where the segment's logit is above 0",
    )
    add_label_names_argument(segment)
    segment.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_model_arguments(segment)
    add_correction_arguments(segment)
    add_server_arguments(segment)
    segment.set_defaults(func=run_segment, reporting=True)

    add_batch_parser(subparsers)
    add_crossval_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_models_parser(subparsers)
    add_serve_parser(subparsers)
    return parser


def _install_cancel_handlers(cancel: CancelToken) -> None:
    def handler(signum: int, frame: object) -> None:
        cancel.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fatesam`` console script; returns the exit code (0, 1 for any error, 130 if cancelled)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if not getattr(args, "reporting", False):
            return args.func(args)
        reporter = Reporter(json_lines=getattr(args, "json_progress", False))
        cancel = CancelToken()
        _install_cancel_handlers(cancel)
        return _run(args, reporter, cancel)
    except UsageError as error:
        Reporter(json_lines="--json-progress" in argv).error(error)
        return 1
    except KeyboardInterrupt:  # before the cancel handlers were installed
        return INTERRUPTED


def _run(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Run the subcommand; every error a user can cause is reported in one message (exit 1, 130 when cancelled)."""
    try:
        with reporter.library_warnings():
            return args.func(args, reporter, cancel)
    except (MemoryError, RuntimeError) as error:
        if not is_allocation_failure(error):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        device = resolve_device(getattr(args, "device", "auto"))
        reporter.error(not_enough_memory(f"an allocation failed during the run ({reason[:200]})", device))
        return 1
    except Cancelled as error:
        reporter.error(error)
        return INTERRUPTED
    except FateSAMError as error:
        reporter.error(error)
        return 1
