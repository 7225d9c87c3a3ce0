"""The ``fatesam`` command line: segment, evaluate, crossval, models."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..atomic import check_outputs
from ..errors import INTERRUPTED, Cancelled, FateSAMError, InputError
from ..formats import OUTPUT_SUFFIXES, output_suffix
from ..io.probabilities import probability_suffix
from ..method.jobs import SegmentJob, run_job
from ..method.predictor import FateSamPredictor
from ..models.devices import resolve_device, run_memory_error
from ..progress import CancelToken
from .arguments import (
    add_label_names_argument,
    add_model_arguments,
    add_support_argument,
    settings_from_args,
    support_pairs,
)
from .batch import add_batch_parser
from .corrections import add_correction_arguments, corrections_from_args
from .crossval import add_crossval_parser
from .evaluate import add_evaluate_parser
from .models import add_models_parser
from .remote import add_server_arguments, run_remote_segment
from .reporting import Reporter
from .serve import add_serve_parser
from .users import add_users_parser


def run_segment(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """``fatesam segment``: read and check, segment with the predictor, write the label volume (and stats)
    atomically."""
    if args.server:
        if args.probabilities or args.label_names:
            raise InputError("--probabilities and --label-names run locally only: leave out --server to use them.")
        return run_remote_segment(args, reporter, cancel)
    output = Path(args.output)
    if not output_suffix(output):
        raise InputError(f"Unsupported output '{output}'. Use one of: {', '.join(OUTPUT_SUFFIXES)}.")
    if args.probabilities:
        probability_suffix(args.probabilities)  # a format it cannot be is refused before any work
    check_outputs([output, args.stats_json, args.probabilities], args.overwrite)
    settings = settings_from_args(args)
    pairs = support_pairs(args, settings, reporter)
    job = SegmentJob(
        args.query,
        pairs,
        output,
        args.stats_json,
        args.segments,
        corrections_from_args(args),
        probabilities=args.probabilities,
        label_names=args.label_names,
    )
    run_job(FateSamPredictor(settings, keep_features=False), job, reporter.progress, cancel, args.overwrite)
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
    add_users_parser(subparsers)
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
        memory = run_memory_error(error, resolve_device(getattr(args, "device", "auto")))
        if memory is None:
            raise
        reporter.error(memory)
        return 1
    except Cancelled as error:
        reporter.error(error)
        return INTERRUPTED
    except FateSAMError as error:
        reporter.error(error)
        return 1
