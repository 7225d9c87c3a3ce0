"""``fatesam crossval``: K labelled cases as supports, the others as queries, per-label Dice/HD95/ASSD tables; the
queries run as one cohort (``FateSAMLib.cohort``): the model loaded once per worker, here or on Ray actors."""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..atomic import OutputFiles, check_outputs, json_writer, moved_from
from ..cohort.cases import Case
from ..cohort.runner import provenance, run_cohort
from ..cohort.worker import CohortSettings, check_cohort
from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, file_stem, suffix_of
from ..method.pipeline import load_support
from ..names import check_distinct_names, check_output_name
from ..options import result_settings, whole_number_type
from ..progress import CancelToken
from .arguments import add_label_names_argument, add_model_arguments, settings_from_args
from .pools import add_pool_arguments, case_event_writer, case_pool
from .reporting import Reporter

PREDICTION_SUFFIX = ".nii.gz"
SPREAD = "standard deviation over the scored queries (population, ddof 0)"
"""What the ``±`` of the table and the ``*_std`` of the report are."""


def find_cases(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case name, image, labels) for every image in ``folder/images`` with a same-named file in ``folder/labels``.

    Each name must be able to name its prediction file (:mod:`FateSAMLib.names`); InputError otherwise."""
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{folder} must contain 'images/' and 'labels/' folders with same-named files.")
    cases = []
    for image in sorted(images.iterdir()):
        if suffix_of(image, IMAGE_SUFFIXES) and (labels / image.name).is_file():
            name = file_stem(image, IMAGE_SUFFIXES)
            check_output_name(name, "Rename the image and its labels.")
            cases.append((name, image, labels / image.name))
    check_distinct_names(
        ((name, image.name) for name, image, _ in cases),
        f"Keep one of them in {images} (each case's prediction is written as <case>{PREDICTION_SUFFIX}).",
    )
    return cases


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric per label over the queries (infinite distances, which a cohort
    record holds as None, left out)."""
    summary: dict[str, dict[str, float]] = {}
    for label in sorted({row["label"] for row in rows}):
        entry: dict[str, float] = {}
        for metric in ("dice", "hd95", "assd"):
            cells = [row[metric] for row in rows if row["label"] == label]
            values = [value for value in cells if value is not None and math.isfinite(value)]
            entry[f"{metric}_mean"] = float(np.mean(values)) if values else float("nan")
            entry[f"{metric}_std"] = float(np.std(values)) if values else float("nan")
        summary[str(label)] = entry
    return summary


def format_table(summary: dict[str, dict[str, float]], names: dict[int, str], supports: list[str], queries: int) -> str:
    """A plain-text table: what it is (the supports, how many queries, what ``±`` is), one row per label, then the
    mean over labels."""
    if not summary:
        return "No query was scored."
    lines = [
        f"mean ± {SPREAD}; queries scored: {queries}; supports: {', '.join(supports)}",
        f"{'label':<24}{'Dice':>16}{'HD95 mm':>18}{'ASSD mm':>18}",
    ]
    for label, entry in summary.items():
        cells = [f"{entry[m + '_mean']:.3f} ± {entry[m + '_std']:.3f}" for m in ("dice", "hd95", "assd")]
        lines.append(f"{names.get(int(label), label):<24}{cells[0]:>16}{cells[1]:>18}{cells[2]:>18}")
    means = [np.nanmean([entry[m + "_mean"] for entry in summary.values()]) for m in ("dice", "hd95", "assd")]
    lines.append(f"{'mean':<24}{means[0]:>16.3f}{means[1]:>18.3f}{means[2]:>18.3f}")
    return "\n".join(lines)


def split_cases(
    cases: list[tuple[str, Path, Path]], shots: int, limit: int | None, folder: Path, reporter: Reporter
) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, Path, Path]]]:
    """(supports, queries): the first ``shots`` cases, then the next ``limit`` (all the others when None)."""
    if shots >= len(cases):
        fix = f"use --shots {len(cases) - 1} or fewer" if len(cases) > 1 else "add labelled cases"
        raise InputError(
            f"--shots {shots} leaves no case to evaluate: {folder} has {len(cases)} labelled case(s) "
            f"(images/ and labels/ files of the same name); {fix}."
        )
    queries = cases[shots:]
    if limit is not None and limit > len(queries):
        reporter.warning(f"--cases {limit}: only {len(queries)} cases remain after the {shots} supports; all are used.")
    return cases[:shots], queries[:limit]


def _summary_rows(records: list[dict]) -> list[dict]:
    """One row per scored case and label: ``case``, ``label`` and the case's Dice/HD95/ASSD for it."""
    return [
        {"case": record["id"], "label": int(label), **scores}
        for record in records
        for label, scores in record.get("metrics", {}).items()
    ]


@contextmanager
def _staging(folder_out: Path | None) -> Iterator[Path | None]:
    """Where the workers write the predictions until they are published together: a new hidden folder in the
    nearest existing folder of ``--output-dir`` (checked writable), removed at the end; None without ``--output-dir``
    (nothing is written)."""
    if folder_out is None:
        yield None
        return
    parent = next(folder for folder in (folder_out, *folder_out.parents) if folder.is_dir())
    with tempfile.TemporaryDirectory(prefix=".fatesam-crossval.", dir=parent) as staging:
        yield Path(staging)


def run_crossval(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Segment each query case from the first ``--shots`` cases as a cohort (here or on Ray actors) and evaluate it
    against its labels; exit 0 when every query was scored, 1 when any failed (its error is in the report).

    Every output path and every input is checked before the model is loaded; the predictions and the JSON report
    are published together at the end (all or none: a cancelled run, or one that stopped, writes nothing).
    """
    folder = Path(args.folder)
    support_cases, queries = split_cases(find_cases(folder), args.shots, args.cases, folder, reporter)
    folder_out = Path(args.output_dir) if args.output_dir else None
    predictions = {name: folder_out / f"{name}{PREDICTION_SUFFIX}" for name, _, _ in queries} if folder_out else {}
    check_outputs([*predictions.values(), args.json], args.overwrite)
    run = settings_from_args(args)
    reporter.progress(0.0, f"Reading {len(support_cases)} supports and checking {len(queries)} queries")
    cohort = CohortSettings(
        supports=tuple((image, labels) for _, image, labels in support_cases),
        output_dir=None,
        output_format=PREDICTION_SUFFIX,
        segments=tuple(args.segments) if args.segments else None,
        label_names=args.label_names,
    )
    check_cohort(cohort, [])
    origin = provenance(cohort, result_settings(run))
    for _, image, labels in queries:  # a damaged case is refused now, not after hours of work
        load_support(image, labels, label_names=args.label_names)
    with _staging(folder_out) as staging:
        cohort = dataclasses.replace(cohort, output_dir=staging)
        pool = case_pool(args, cohort, run, reporter, cancel)
        try:
            cases = [Case(name, image, labels) for name, image, labels in queries]
            records = run_cohort(cases, cohort, pool, reporter.progress, cancel, case_event_writer(reporter))["cases"]
        finally:
            pool.close()
        cancel.raise_if_cancelled()
        rows = _summary_rows(records)
        summary = summarize(rows)
        failed = [{"case": r["id"], "error": r["error"]} for r in records if r["status"] == "failed"]
        scored = len({row["case"] for row in rows})
        with OutputFiles(args.overwrite) as outputs:
            for record in records:
                if record["status"] == "done" and record["id"] in predictions:
                    staged = Path(record["output"])
                    outputs.add(predictions[record["id"]], moved_from(staged), PREDICTION_SUFFIX)
            if args.json:
                report = {
                    "run": origin,
                    "shots": args.shots,
                    "supports": [c for c, _, _ in support_cases],
                    "queries": scored,
                    "spread": SPREAD,
                    "rows": rows,
                    "summary": summary,
                    "failed": failed,
                }
                outputs.add(args.json, json_writer(report))
    names = {int(value): name for r in records for value, name in r.get("segments", {}).items()}
    reporter.done(format_table(summary, names, [c for c, _, _ in support_cases], scored))
    return 1 if failed else 0


def add_crossval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam crossval``."""
    parser = subparsers.add_parser(
        "crossval",
        help="few-shot evaluation over a folder of labelled cases (on Ray with --ray)",
        description="The first K cases by name are the supports, the next N (default all) the queries, segmented "
        "as one cohort: the model loaded once per worker, a query that fails recorded with its error and the others "
        "scored. Prints per-label Dice/HD95/ASSD; exit code 0: every query was scored; 1: some failed; 130: "
        "cancelled.",
    )
    parser.add_argument("folder", help="a folder with images/ and labels/ holding same-named files")
    parser.add_argument(
        "--shots",
        type=whole_number_type("--shots"),
        required=True,
        help="number of support cases (the first K by name)",
    )
    parser.add_argument("--cases", type=whole_number_type("--cases"), help="evaluate only the first N remaining cases")
    parser.add_argument("--segments", nargs="+", metavar="NAME_OR_VALUE", help="only these segments")
    parser.add_argument("--json", type=Path, help="write per-case rows and the summary here")
    parser.add_argument("--output-dir", type=Path, help="also write each prediction here, as <case>.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json and predictions")
    parser.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    add_label_names_argument(parser)
    add_pool_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(func=run_crossval, reporting=True)
