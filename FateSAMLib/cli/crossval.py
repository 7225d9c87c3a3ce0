"""``fatesam crossval``: K labelled cases as supports, the others as queries, per-label Dice/HD95/ASSD tables."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from ..atomic import OutputFiles, check_outputs
from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, file_stem, suffix_of
from ..io.labels import label_map_writer
from ..method.pipeline import Normalization, SupportCase, load_support, segment_volume
from ..metrics import evaluate_labels
from ..options import whole_number_type
from ..progress import CancelToken, StageProgress
from .arguments import add_model_arguments, engine_from_settings, settings_from_args
from .reporting import Reporter, json_writer

PREDICTION_SUFFIX = ".nii.gz"


def find_cases(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case name, image, labels) for every image in ``folder/images`` with a same-named file in ``folder/labels``."""
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{folder} must contain 'images/' and 'labels/' folders with same-named files.")
    cases: dict[str, tuple[str, Path, Path]] = {}
    for image in sorted(images.iterdir()):
        if suffix_of(image, IMAGE_SUFFIXES) and (labels / image.name).is_file():
            name = file_stem(image, IMAGE_SUFFIXES)
            if name in cases:
                raise InputError(
                    f"{images} holds two labelled images of case '{name}' ({cases[name][1].name}, {image.name}); "
                    "keep one of them (each case's prediction is written as <case>.nii.gz)."
                )
            cases[name] = (name, image, labels / image.name)
    return list(cases.values())


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric per label over the queries (infinite distances left out)."""
    summary: dict[str, dict[str, float]] = {}
    for label in sorted({row["label"] for row in rows}):
        entry: dict[str, float] = {}
        for metric in ("dice", "hd95", "assd"):
            values = [row[metric] for row in rows if row["label"] == label and math.isfinite(row[metric])]
            entry[f"{metric}_mean"] = float(np.mean(values)) if values else float("nan")
            entry[f"{metric}_std"] = float(np.std(values)) if values else float("nan")
        summary[str(label)] = entry
    return summary


def format_table(summary: dict[str, dict[str, float]], names: dict[int, str]) -> str:
    """A plain-text table: one row per label, then the mean over labels."""
    lines = [f"{'label':<24}{'Dice':>16}{'HD95 mm':>18}{'ASSD mm':>18}"]
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


def run_crossval(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Segment each query case from the first ``--shots`` cases and evaluate against its labels.

    Every output path and every input is checked before the model is loaded; the predictions and the JSON report
    are published together at the end (all or none: a failed or cancelled run writes nothing).
    """
    folder = Path(args.folder)
    support_cases, queries = split_cases(find_cases(folder), args.shots, args.cases, folder, reporter)
    folder_out = Path(args.output_dir) if args.output_dir else None
    predictions = {name: folder_out / f"{name}{PREDICTION_SUFFIX}" for name, _, _ in queries} if folder_out else {}
    check_outputs([*predictions.values(), args.json], args.overwrite)
    settings = settings_from_args(args)
    normalization = Normalization.from_settings(settings)
    reporter.progress(0.0, f"Reading {len(support_cases)} supports and checking {len(queries)} queries")
    supports: list[SupportCase] = [load_support(image, labels) for _, image, labels in support_cases]
    for _, image, labels in queries:  # a damaged query is refused now, not after hours of work
        load_support(image, labels)
    engine = engine_from_settings(settings, reporter, cancel, StageProgress(reporter.progress, 0.0, 0.05))
    rows, names = [], {}
    n = len(queries)
    with OutputFiles(args.overwrite) as outputs:
        for q, (name, image, labels) in enumerate(queries):
            query = load_support(image, labels)
            result = segment_volume(
                engine,
                supports,
                query.image,
                segments=args.segments,
                slice_axis=settings.slice_axis,
                normalization=normalization,
                progress=StageProgress(reporter.progress, 0.05 + 0.95 * q / n, 0.05 + 0.95 * (q + 1) / n),
                cancel=cancel,
            )
            if name in predictions:
                path = predictions[name]
                outputs.add(path, label_map_writer(result.labels, path, result.segments), PREDICTION_SUFFIX)
            scores = evaluate_labels(result.labels, query.labels, [s.value for s in result.segments])
            names.update({s.value: s.name for s in result.segments})
            rows.extend({"case": name, "label": label, **metrics} for label, metrics in scores.items())
        cancel.raise_if_cancelled()
        summary = summarize(rows)
        if args.json:
            report = {
                "shots": args.shots,
                "supports": [c for c, _, _ in support_cases],
                "rows": rows,
                "summary": summary,
            }
            outputs.add(args.json, json_writer(report))
    reporter.done(format_table(summary, names))
    return 0


def add_crossval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam crossval``."""
    parser = subparsers.add_parser("crossval", help="few-shot evaluation over a folder of labelled cases")
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
    add_model_arguments(parser)
    parser.set_defaults(func=run_crossval, reporting=True)
