"""``fatesam segment`` options for a refine run: the slices a reviewer corrected become memories for the others."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..method.pipeline import CorrectionInput


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


def corrections_from_args(args: argparse.Namespace) -> CorrectionInput | None:
    """The corrections the options give (None for a plain run); their files are read and checked against the query
    and its slices with the query (:func:`~FateSAMLib.method.pipeline.prepare_query`), before any model work."""
    labels, previous = (Path(path) if path else None for path in (args.corrections, args.previous))
    return CorrectionInput.from_options(labels, args.corrected_slices, previous)
