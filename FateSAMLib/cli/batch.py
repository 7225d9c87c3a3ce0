"""``fatesam batch``: one support set, a cohort of queries; the model and the supports loaded once per worker,
finished cases skipped, failures recorded, on this machine or on a Ray cluster (``--ray``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import check_outputs
from ..cohort.cases import find_cases
from ..cohort.runner import SUMMARY_CSV, SUMMARY_JSON, check_resume, provenance, run_cohort
from ..cohort.worker import OUTPUT_FORMATS, CohortSettings, check_cohort
from ..errors import InputError
from ..options import result_settings
from ..progress import CancelToken
from .arguments import (
    add_label_names_argument,
    add_model_arguments,
    add_support_argument,
    settings_from_args,
    support_pairs,
)
from .pools import add_pool_arguments, case_event_writer, case_pool
from .reporting import Reporter


def run_batch(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Segment every query that has no output yet; exit 0 when every case succeeded, 1 when any failed."""
    run = settings_from_args(args)
    cases = find_cases(args.queries, args.references)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir {output_dir} is a file; give a folder (it is created if missing).")
    check_outputs([output_dir / SUMMARY_JSON, output_dir / SUMMARY_CSV], overwrite=True)
    cohort = CohortSettings(
        supports=tuple(support_pairs(args, run, reporter)),
        output_dir=output_dir,
        output_format=args.format,
        segments=tuple(args.segments) if args.segments else None,
        overwrite=args.overwrite,
        label_names=args.label_names,
    )
    reporter.progress(0.0, "Reading the supports and checking the queries")
    check_cohort(cohort, cases)
    origin = provenance(cohort, result_settings(run))
    check_resume(cases, cohort, origin)
    pool = case_pool(args, cohort, run, reporter, cancel)
    try:
        summary = run_cohort(cases, cohort, pool, reporter.progress, cancel, case_event_writer(reporter), origin)
    finally:
        pool.close()
    counts = summary["counts"]
    reporter.done(
        f"{output_dir / SUMMARY_CSV}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    )
    return 1 if counts["failed"] else 0


def add_batch_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam batch``."""
    parser = subparsers.add_parser(
        "batch",
        help="segment a cohort of queries with one support set (resumable; on Ray with --ray)",
        description="Each query's segmentation is written to OUTPUT_DIR/<id><format>; a case whose output exists is "
        "skipped (unless --overwrite), so an interrupted run resumes where it stopped; a rerun with other supports or "
        "settings than summary.json records is refused (unless --overwrite). summary.csv and summary.json list each "
        "case's status, error, seconds, encoder passes, lowest-certainty slices, each segment's volume (mL) and voxel "
        "count and, with --references, Dice/HD95/ASSD per label, with the cohort's means; summary.json also the "
        "supports' SHA-256, the settings and each slice's provenance. Exit code 0: every case succeeded; 1: some "
        "failed; 130: cancelled.",
    )
    add_support_argument(parser)
    parser.add_argument(
        "--queries",
        required=True,
        help="a folder of volumes (or DICOM series folders), or a CSV with a 'path' column "
        "and optional 'id' and 'reference' columns (paths relative to the CSV)",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="where the segmentations and summary go")
    parser.add_argument("--format", default=".nii.gz", choices=OUTPUT_FORMATS, help="output format (.dcm: DICOM SEG)")
    parser.add_argument("--references", type=Path, help="folder of <id>.nii.gz (.nrrd, .seg.nrrd...) to score against")
    parser.add_argument("--segments", nargs="+", metavar="NAME_OR_VALUE", help="only these segments (default all)")
    parser.add_argument("--overwrite", action="store_true", help="segment every case again, replacing its output")
    add_label_names_argument(parser)
    parser.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    add_pool_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(func=run_batch, reporting=True)
