"""Running a cohort: finished cases skipped, the others handed to a pool of workers, every record kept, and the
summary (``summary.csv`` and ``summary.json``) written atomically, also when the run fails or is cancelled (not at
all for a cohort that writes nothing)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..atomic import write_file_atomically
from ..errors import InputError
from ..json_input import parse_json
from ..metrics import METRICS
from ..progress import CancelToken, Eta, ProgressCallback
from ..remote import file_digest
from .cases import Case
from .worker import CaseWorker, CohortSettings, PredictorFactory

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MAX_BYTES = 512 * 1024**2
"""The largest earlier summary read back (a cohort of thousands of cases with per-slice records stays far below)."""
RecordCallback = Callable[[dict], None]
CSV_COLUMNS = (
    "id",
    "status",
    "error",
    "seconds",
    "encoder_passes",
    "support_slices_encoded",
    "support_memories_encoded",
    "doubtful_slices",
)
VOLUME_COLUMNS = ("volume_ml", "voxels")
"""Per label, after its metrics: the segment's volume (mL) and voxel count (the mean row: the mean volume)."""


class CasePool(Protocol):
    """Where cases run: :class:`LocalPool` in this process, ``ray_pool.RayPool`` on Ray actors."""

    def run(
        self, cases: list[Case], on_record: RecordCallback, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        """Run every case, calling ``on_record`` with each record as it is finished."""

    def close(self) -> None:
        """Release the workers."""


class LocalPool:
    """One worker in this process; the model is loaded when the first case starts (not at all when none is left)."""

    def __init__(self, settings: CohortSettings, predictor_factory: PredictorFactory) -> None:
        self.worker = CaseWorker(settings, predictor_factory)

    def run(
        self, cases: list[Case], on_record: RecordCallback, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        together = max(1, self.worker.settings.queries_encoded_together)
        for first in range(0, len(cases), together):
            group = cases[first : first + together]
            if together > 1:
                cancel.raise_if_cancelled()
                self.worker.encode_together(group, cancel)
            for case in group:
                cancel.raise_if_cancelled()
                on_record(self.worker.run(case, lambda f, m, case=case: progress(f, f"{case.id}: {m}"), cancel))

    def close(self) -> None:
        self.worker = None


class CohortProgress:
    """The cohort's progress line: cases done and failed, the estimated time left, and the running cases' stages."""

    def __init__(self, total: int, callback: ProgressCallback) -> None:
        self.total = max(total, 1)
        self.callback = callback
        self.finished = self.failed = 0
        self.eta = Eta(self.total)

    def stage(self, fraction: float, message: str) -> None:
        """The running cases' progress (``fraction``: how much of one case they have done together) and stages."""
        head = f"{self.finished}/{self.total} cases, {self.failed} failed, {self.eta.text(self.finished)}"
        done = self.finished + min(max(fraction, 0.0), self.total - self.finished)
        self.callback(done / self.total, f"{head} | {message}")

    def case_done(self, record: dict) -> None:
        """One more case finished (``record`` says whether it failed)."""
        self.finished += 1
        self.failed += record["status"] == "failed"
        self.stage(0.0, f"{record['id']} {record['status']}")


def _earlier_summary(output_dir: Path) -> dict:
    """An earlier run's ``summary.json`` (empty when it is missing or unreadable)."""
    try:
        data = parse_json(output_dir / SUMMARY_JSON, SUMMARY_JSON, "", max_bytes=SUMMARY_MAX_BYTES)
    except InputError:
        return {}
    return data if isinstance(data, dict) else {}


def previous_records(output_dir: Path) -> dict[str, dict]:
    """The records of an earlier run's ``summary.json`` by case id (none when it is missing or unreadable)."""
    try:
        return {record["id"]: record for record in _earlier_summary(output_dir)["cases"]}
    except (KeyError, TypeError):
        return {}


def content_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, or of a folder's files (a DICOM series) by name and content."""
    if not path.is_dir():
        return file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    text = "".join(f"{p.relative_to(path).as_posix()!r} {file_digest(p)}\n" for p in files)
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(settings: CohortSettings, run_settings: dict[str, object]) -> dict:
    """What makes a cohort's outputs what they are: the supports, by content, and ``run_settings`` (those that change
    the masks) with the cohort's segments and output format. ``summary.json`` (and ``crossval --json``) records it."""
    supports = [
        {"image": str(image), "image_sha256": content_digest(image), "labels": str(labels),
         "labels_sha256": content_digest(labels)}
        for image, labels in settings.supports
    ]  # fmt: skip
    segments = list(settings.segments or ())
    return {"supports": supports, "settings": {**run_settings, "segments": segments, "format": settings.output_format}}


def _differences(earlier: dict, now: dict) -> list[str]:
    """What differs between two :func:`provenance` records, in words."""
    digests = [[(s["image_sha256"], s["labels_sha256"]) for s in record["supports"]] for record in (earlier, now)]
    found = [] if digests[0] == digests[1] else ["other supports (files or content)"]
    then, current = earlier["settings"], now["settings"]
    for name in sorted(then.keys() | current.keys()):
        if then.get(name) != current.get(name):
            found.append(f"{name} {json.dumps(then.get(name))} (now {json.dumps(current.get(name))})")
    return found


def check_resume(cases: list[Case], settings: CohortSettings, origin: dict) -> None:
    """Refuse (:class:`InputError`), before any work, a rerun that would keep outputs which other supports or
    settings made (or which no summary describes) as if this run had made them; ``--overwrite`` redoes them."""
    if settings.output_dir is None or settings.overwrite:
        return
    kept = [output.name for case in cases if (output := settings.output_path(case)).exists()]
    if not kept:
        return
    earlier = _earlier_summary(settings.output_dir).get("run")
    now = json.loads(json.dumps(origin))  # as it reads back from summary.json
    examples = f"{', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}"
    fix = (
        "Pass --overwrite to segment every case again with this run's supports and settings, or choose another "
        "--output-dir."
    )
    try:
        differences = _differences(earlier, now)
    except (KeyError, TypeError):
        raise InputError(
            f"{settings.output_dir} holds outputs ({examples}) that no {SUMMARY_JSON} of this FateSAM describes, so "
            f"which supports and settings made them is unknown; resuming would keep them. {fix}"
        ) from None
    if differences:
        raise InputError(
            f"{settings.output_dir} holds {len(kept)} outputs ({examples}) of an earlier run made with "
            f"{'; '.join(differences)}; resuming would keep them as they are. {fix}"
        )


def _mean(values: list[float | None]) -> float | None:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else None


def cohort_means(records: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per label, the mean of each metric over the cases scored for it (infinite distances left out; None if none),
    and the mean volume (mL) over the cases segmented with it; ``cases``: how many were scored."""
    means: dict[str, dict[str, float | None]] = {}
    labels = sorted({label for r in records for key in ("metrics", "volumes") for label in r.get(key, {})}, key=int)
    for label in labels:
        rows = [r["metrics"][label] for r in records if label in r.get("metrics", {})]
        means[label] = {m: _mean([row[m] for row in rows]) for m in METRICS}
        means[label]["cases"] = len(rows)
        means[label]["volume_ml"] = _mean(
            [r["volumes"][label]["volume_ml"] for r in records if label in r.get("volumes", {})]
        )
    return means


def _csv_text(records: list[dict], means: dict[str, dict]) -> str:
    labels = list(means)
    metric_columns = [f"{m}_{label}" for label in labels for m in (*METRICS, *VOLUME_COLUMNS)]
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, "output", *metric_columns])
    for record in records:
        cells = [record.get(column, "") for column in CSV_COLUMNS]
        cells[CSV_COLUMNS.index("doubtful_slices")] = " ".join(str(i) for i in record.get("doubtful_slices", []))
        metrics, volumes = record.get("metrics", {}), record.get("volumes", {})
        scores = [
            cell
            for label in labels
            for cell in (
                *(metrics.get(label, {}).get(m, "") for m in METRICS),
                *(volumes.get(label, {}).get(v, "") for v in VOLUME_COLUMNS),
            )
        ]
        writer.writerow([*cells, record.get("output", ""), *scores])
    if labels:
        mean_cells = [means[label].get(m, "") for label in labels for m in (*METRICS, *VOLUME_COLUMNS)]
        writer.writerow(["mean", *[""] * len(CSV_COLUMNS), *mean_cells])
    return stream.getvalue()


def cohort_summary(records: list[dict]) -> dict:
    """The summary of a cohort's records: the counts of each status, the per-label means and the records."""
    counts = {status: sum(r["status"] == status for r in records) for status in ("done", "skipped", "failed")}
    return {"counts": counts, "mean": cohort_means(records), "cases": records}


def write_summary(output_dir: Path, records: list[dict], origin: dict | None = None) -> dict:
    """Write ``summary.json`` (:func:`cohort_summary`, with the run's :func:`provenance` ``origin`` as ``run``) and
    ``summary.csv`` atomically, as UTF-8 (a character that is no text, from a file name in another encoding, as a
    backslash escape); returns the JSON data."""
    data = cohort_summary(records) | ({} if origin is None else {"run": origin})
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    for name, content in ((SUMMARY_JSON, text), (SUMMARY_CSV, _csv_text(records, data["mean"]))):
        write_file_atomically(
            output_dir / name,
            lambda target, content=content: target.write_text(content, encoding="utf-8", errors="backslashreplace"),
            True,
        )
    return data


def run_cohort(
    cases: list[Case],
    settings: CohortSettings,
    pool: CasePool,
    progress: ProgressCallback,
    cancel: CancelToken,
    on_record: RecordCallback | None = None,
    origin: dict | None = None,
) -> dict:
    """Run the cases whose output is missing (every case with ``settings.overwrite``) on ``pool``; returns the summary.

    A skipped case keeps the record of the run that wrote its output (:func:`check_resume` first refuses outputs
    that another run made). The summary lists every case that is done, skipped or failed, with the run's
    :func:`provenance` ``origin``; it is written before the first case (so that a run killed midway still says what
    made its outputs) and at the end, also when the run is cancelled or fails, so it stays true. A cohort without an
    output folder skips no case and writes no summary.
    """
    earlier = {} if settings.output_dir is None else previous_records(settings.output_dir)
    records: dict[str, dict] = {}
    todo = []
    for case in cases:
        output = settings.output_path(case)
        if output is not None and output.exists() and not settings.overwrite:
            record = earlier.get(case.id, {})
            if Path(record.get("output", "")).name != output.name:  # not the earlier run's output: nothing known
                record = {"id": case.id, "query": str(case.query), "error": ""}
            records[case.id] = {**record, "output": str(output), "status": "skipped"}  # the folder may have moved
        else:
            todo.append(case)
    folder = settings.output_dir
    if folder is not None and todo:
        write_summary(folder, [records[c.id] for c in cases if c.id in records], origin)
    tracker = CohortProgress(len(todo), progress)

    def record_done(record: dict) -> None:
        records[record["id"]] = record
        tracker.case_done(record)
        if on_record is not None:
            on_record(record)

    try:
        if todo:
            pool.run(todo, record_done, tracker.stage, cancel)
    finally:
        finished = [records[c.id] for c in cases if c.id in records]
        summary = cohort_summary(finished) if folder is None else write_summary(folder, finished, origin)
    return summary
