"""The ``fatesam`` command line: segment, evaluate, crossval, models."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cli_evaluate import add_evaluate_parser
from .cli_models import add_models_parser
from .cli_reporting import Reporter, write_json_atomic
from .crossval import add_crossval_parser
from .errors import Cancelled, FateSAMError, InputError
from .label_io import SUPPORTED_OUTPUT_SUFFIXES, output_suffix, write_label_map
from .pipeline import load_support, segment_volume
from .progress import CancelToken, StageProgress
from .run_options import add_model_arguments, engine_from_args, model_name_from_args, normalization_from_args
from .volumes import read_image


def run_segment(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """``fatesam segment``: read, segment, write the label volume (and stats) atomically."""
    started = time.perf_counter()
    output = Path(args.output)
    if output_suffix(output) not in SUPPORTED_OUTPUT_SUFFIXES:
        raise InputError(f"Unsupported output '{output}'. Use one of: {', '.join(SUPPORTED_OUTPUT_SUFFIXES)}.")
    for path in (output, args.stats_json):
        if path is not None and Path(path).exists() and not args.overwrite:
            raise InputError(f"{path} exists; pass --overwrite or choose another path.")
    normalization = normalization_from_args(args)

    reporter.progress(0.0, "Reading volumes")
    supports = [load_support(image, labels) for image, labels in args.support]
    query = read_image(args.query)
    read_seconds = time.perf_counter() - started

    engine = engine_from_args(args, reporter, cancel, StageProgress(reporter.progress, 0.01, 0.1))
    model_seconds = time.perf_counter() - started - read_seconds
    result = segment_volume(
        engine,
        supports,
        query,
        segments=args.segments,
        slice_axis=args.slice_axis,
        normalization=normalization,
        progress=StageProgress(reporter.progress, 0.1, 0.98),
        cancel=cancel,
    )
    cancel.raise_if_cancelled()
    write_started = time.perf_counter()
    written = write_label_map(result.labels, output, result.segments, overwrite=args.overwrite)
    stats = dict(result.stats)
    stats["seconds"] = {
        "read": read_seconds,
        "model_load": model_seconds,
        **stats["seconds"],
        "write": time.perf_counter() - write_started,
        "total": time.perf_counter() - started,
    }
    stats.update(
        model=model_name_from_args(args),
        image_size=engine.image_size,
        device=str(engine.device),
        random_weights=args.random_weights,
        reuse_features=engine.options.reuse_features,
        top_k=engine.options.top_k,
        doubtful_slices=result.doubtful_slices,
        confidence=result.confidence,
    )
    if args.stats_json:
        write_json_atomic(Path(args.stats_json), stats)
    reporter.progress(1.0, f"Wrote {written}")
    reporter.done(str(written))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fatesam", description="Few-shot 3D segmentation with frozen SAM2 (FATE-SAM)."
    )
    parser.add_argument("--version", action="version", version=f"fatesam {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)

    segment = subparsers.add_parser("segment", help="segment a query volume from labelled support volumes")
    segment.add_argument(
        "--support",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGE", "LABELS"),
        help="a support image and its label map or .seg.nrrd (repeat for more supports)",
    )
    segment.add_argument("--query", required=True, help="the volume to segment (NIfTI, NRRD, MHA or a DICOM folder)")
    segment.add_argument("--output", required=True, help="output label volume: .nii.gz, .nrrd, .mha or .seg.nrrd")
    segment.add_argument("--segments", nargs="+", metavar="NAME_OR_VALUE", help="only these segments (default all)")
    segment.add_argument("--stats-json", type=Path, help="write counts, timings and per-slice confidence here")
    segment.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_model_arguments(segment)
    segment.set_defaults(func=run_segment, reporting=True)

    add_crossval_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_models_parser(subparsers)
    return parser


def _install_cancel_handlers(cancel: CancelToken) -> None:
    def handler(signum: int, frame: object) -> None:
        cancel.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fatesam`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not getattr(args, "reporting", False):
        return args.func(args)
    reporter = Reporter(json_lines=getattr(args, "json_progress", False))
    cancel = CancelToken()
    _install_cancel_handlers(cancel)
    try:
        return args.func(args, reporter, cancel)
    except Cancelled as error:
        reporter.error(error)
        return 130
    except FateSAMError as error:
        reporter.error(error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
