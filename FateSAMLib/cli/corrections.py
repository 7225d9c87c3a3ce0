"""``fatesam segment`` options for a refine run: the slices a reviewer corrected become memories for the others."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..method.pipeline import CorrectionInput

AUTO = "auto"


def add_correction_arguments(parser: argparse.ArgumentParser) -> None:
    """--corrections, --corrected-slices and --previous."""
    group = parser.add_argument_group("refine from corrections")
    group.add_argument(
        "--corrections", metavar="LABELS", help="label map or .seg.nrrd on the query's grid with corrected slices"
    )
    group.add_argument(
        "--corrected-slices",
        nargs="+",
        metavar="auto|N",
        help="slices (along the run's slice axis) to keep as corrected; auto: where LABELS differs from --previous",
    )
    group.add_argument("--previous", metavar="RESULT", help="the result the corrections were made on (for auto)")


def _slice_list(values: list[str]) -> list[int] | None:
    if values == [AUTO]:
        return None
    try:
        return [int(value) for value in values]
    except ValueError:
        raise InputError(
            f"--corrected-slices takes 'auto' or slice numbers (got {' '.join(values)}); e.g. --corrected-slices 12 13."
        ) from None


def corrections_from_args(args: argparse.Namespace) -> CorrectionInput | None:
    """The corrections the options give (None for a plain run); their files are read and checked against the query
    and its slices with the query (:func:`~FateSAMLib.method.pipeline.prepare_query`), before any model work."""
    if args.corrections is None:
        if args.corrected_slices or args.previous:
            raise InputError(
                "--corrected-slices and --previous refine a result: pass the edited labels with --corrections."
            )
        return None
    if not args.corrected_slices:
        raise InputError("--corrections needs --corrected-slices: the slice numbers, or auto with --previous RESULT.")
    slices = _slice_list(args.corrected_slices)
    if slices is None and args.previous is None:
        raise InputError(
            "--corrected-slices auto needs the result the corrections were made on: pass --previous RESULT."
        )
    return CorrectionInput(Path(args.corrections), slices, Path(args.previous) if slices is None else None)
