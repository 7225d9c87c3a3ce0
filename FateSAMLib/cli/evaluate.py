"""``fatesam evaluate``: per-label Dice, HD95 and ASSD of a prediction against a reference label volume."""

from __future__ import annotations

import argparse
import json

import numpy as np
import SimpleITK as sitk

from ..atomic import strict_json
from ..io.geometry import ijk_to_lps
from ..io.labels import read_labels, read_labels_on_grid
from ..measurements import segment_volumes
from ..metrics import METRICS, evaluate_labels
from ..progress import CancelToken
from ..segments import default_segment
from .arguments import add_label_names_argument
from .reporting import Reporter


def mean_scores(scores: dict[int, dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over labels (infinite when a label's distance is: one structure was missed)."""
    return {metric: float(np.mean([row[metric] for row in scores.values()])) for metric in METRICS}


def with_volumes(scores: dict[int, dict[str, float]], prediction: sitk.Image, reference: sitk.Image) -> dict:
    """``scores`` with each label's voxel count and volume (mL) in the prediction and in the reference."""
    segments = [default_segment(label) for label in scores]
    sizes = [
        segment_volumes(sitk.GetArrayViewFromImage(image), ijk_to_lps(image), segments)
        for image in (prediction, reference)
    ]
    return {
        label: {
            **row,
            "voxels": predicted.voxels,
            "volume_ml": predicted.volume_ml,
            "reference_voxels": expected.voxels,
            "reference_volume_ml": expected.volume_ml,
        }
        for (label, row), predicted, expected in zip(scores.items(), *sizes, strict=True)
    }


def format_scores(scores: dict[int, dict[str, float]], names: dict[int, str]) -> str:
    """A plain-text table: one row per label (its metrics, and its volume in the prediction and the reference), then
    the mean of the metrics over labels."""
    lines = [f"{'label':>6}  {'name':<24}{'Dice':>8}{'HD95 mm':>10}{'ASSD mm':>10}{'Vol mL':>10}{'Ref mL':>10}"]
    for label, row in scores.items():
        lines.append(
            f"{label:>6}  {names.get(label, '')[:24]:<24}{row['dice']:>8.4f}{row['hd95']:>10.3f}{row['assd']:>10.3f}"
            f"{row['volume_ml']:>10.3f}{row['reference_volume_ml']:>10.3f}"
        )
    if scores:
        mean = mean_scores(scores)
        lines.append(f"{'mean':>6}  {'':<24}{mean['dice']:>8.4f}{mean['hd95']:>10.3f}{mean['assd']:>10.3f}")
    return "\n".join(lines)


def scores_json(scores: dict[int, dict[str, float]], names: dict[int, str]) -> str:
    """Strict JSON: per label its name and metrics, and the means; an infinite distance is written as null."""
    report = {
        "labels": {str(label): {"name": names.get(label, ""), **row} for label, row in scores.items()},
        "mean": mean_scores(scores) if scores else None,
    }
    return json.dumps(strict_json(report), indent=2, allow_nan=False)


def run_evaluate(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Read both label volumes (label maps or .seg.nrrd), score every label, print a table or JSON."""
    reference, reference_segments = read_labels(args.reference, args.label_names)
    what = f"{args.prediction} does not match {args.reference}"
    prediction, prediction_segments = read_labels_on_grid(args.prediction, reference, what, args.label_names)
    names = {s.value: s.name for s in prediction_segments}
    names.update({s.value: s.name for s in reference_segments})
    scores = with_volumes(evaluate_labels(prediction, reference), prediction, reference)
    reporter.stdout.write((scores_json(scores, names) if args.json else format_scores(scores, names)) + "\n")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice, HD95 and ASSD (mm) per label against a reference",
        description="Both inputs are label maps (.nii.gz, .nrrd, .mha) or Slicer .seg.nrrd files on one voxel grid; "
        "labels are matched by value. A label in only one of them scores Dice 0 and infinite distances "
        "(null in JSON); the mean over labels is then infinite too.",
    )
    parser.add_argument("--prediction", required=True, help="predicted label volume")
    parser.add_argument("--reference", required=True, help="reference (ground-truth) label volume on the same grid")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_label_names_argument(parser)
    parser.set_defaults(func=run_evaluate, reporting=True)
