"""``fatesam crossval``: K labelled cases as supports, the others as queries, per-label Dice/HD95/ASSD tables."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from .cli_reporting import Reporter, write_json_atomic
from .errors import InputError
from .label_io import write_label_map
from .metrics import evaluate_labels
from .pipeline import SupportCase, load_support, segment_volume
from .progress import CancelToken, StageProgress
from .run_options import add_model_arguments, engine_from_args, normalization_from_args

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def find_cases(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case name, image, labels) for every image in ``folder/images`` with a same-named file in ``folder/labels``."""
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{folder} must contain 'images/' and 'labels/' folders with same-named files.")
    cases = []
    for image in sorted(images.iterdir()):
        if image.name.endswith(IMAGE_SUFFIXES) and (labels / image.name).is_file():
            name = next(image.name[: -len(s)] for s in IMAGE_SUFFIXES if image.name.endswith(s))
            cases.append((name, image, labels / image.name))
    return cases


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


def run_crossval(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Segment each query case from the first ``--shots`` cases and evaluate against its labels."""
    cases = find_cases(Path(args.folder))
    if args.shots < 1 or len(cases) <= args.shots:
        raise InputError(f"--shots must be at least 1 and below the number of cases ({len(cases)}) in {args.folder}.")
    normalization = normalization_from_args(args)
    supports: list[SupportCase] = [load_support(image, labels) for _, image, labels in cases[: args.shots]]
    queries = cases[args.shots :][: args.cases] if args.cases else cases[args.shots :]
    engine = engine_from_args(args, reporter, cancel, StageProgress(reporter.progress, 0.0, 0.05))
    rows, names = [], {}
    n = len(queries)
    for q, (name, image, labels) in enumerate(queries):
        query = load_support(image, labels)
        result = segment_volume(
            engine,
            supports,
            query.image,
            segments=args.segments,
            slice_axis=args.slice_axis,
            normalization=normalization,
            progress=StageProgress(reporter.progress, 0.05 + 0.95 * q / n, 0.05 + 0.95 * (q + 1) / n),
            cancel=cancel,
        )
        if args.output_dir:
            write_label_map(result.labels, Path(args.output_dir) / f"{name}.nii.gz", result.segments, args.overwrite)
        scores = evaluate_labels(result.labels, query.labels, [s.value for s in result.segments])
        names.update({s.value: s.name for s in result.segments})
        rows.extend({"case": name, "label": label, **metrics} for label, metrics in scores.items())
    summary = summarize(rows)
    reporter.done(format_table(summary, names))
    if args.json:
        write_json_atomic(
            Path(args.json),
            {"shots": args.shots, "supports": [n for n, _, _ in cases[: args.shots]], "rows": rows, "summary": summary},
        )
    return 0


def add_crossval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam crossval``."""
    parser = subparsers.add_parser("crossval", help="few-shot evaluation over a folder of labelled cases")
    parser.add_argument("folder", help="a folder with images/ and labels/ holding same-named files")
    parser.add_argument("--shots", type=int, required=True, help="number of support cases (the first K by name)")
    parser.add_argument("--cases", type=int, help="evaluate only the first N remaining cases")
    parser.add_argument("--segments", nargs="+", metavar="NAME_OR_VALUE", help="only these segments")
    parser.add_argument("--json", type=Path, help="write per-case rows and the summary here")
    parser.add_argument("--output-dir", type=Path, help="also write each prediction here as NIfTI")
    parser.add_argument("--overwrite", action="store_true", help="replace existing predictions in --output-dir")
    parser.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    add_model_arguments(parser)
    parser.set_defaults(func=run_crossval, reporting=True)
