"""One worker of a cohort: the model and the supports loaded once, then one case after another."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import OutputFiles
from ..errors import Cancelled, FateSAMError, InputError
from ..formats import OUTPUT_SUFFIXES
from ..io.dicom_seg import DICOM_SEG_SUFFIX, check_seg_source, dicom_seg_writer
from ..io.labels import label_map_writer, read_labels_on_grid
from ..memory import is_allocation_failure
from ..method.pipeline import load_support, merge_segments, select_segments
from ..method.predictor import FateSamPredictor
from ..metrics import evaluate_labels
from ..models.devices import run_memory_error
from ..progress import CancelToken, ProgressCallback, ignore_progress
from .cases import Case

OUTPUT_FORMATS = (*OUTPUT_SUFFIXES, DICOM_SEG_SUFFIX)

PredictorFactory = Callable[[], FateSamPredictor]
"""Builds the predictor (it may load the model, else the worker does); picklable when the workers are Ray actors."""


@dataclass(frozen=True)
class CohortSettings:
    """What every case of a cohort shares: the supports, where and how outputs go, the method's options.

    Without ``output_dir`` nothing is written: the cases are segmented and scored only (``fatesam crossval`` without
    ``--output-dir``)."""

    supports: tuple[tuple[Path, Path], ...]
    output_dir: Path | None
    output_format: str = ".nii.gz"
    segments: tuple[str, ...] | None = None
    overwrite: bool = False
    label_names: dict[int, str] | None = None  # names of plain label maps' values (``io.label_names``)
    queries_encoded_together: int = 1
    """Queries whose slices share the image encoder's batches, encoded before their runs (fuller batches on a GPU
    where queries are short; each query is then read twice). 1: each query is encoded in its own run."""

    def output_path(self, case: Case) -> Path | None:
        """Where ``case``'s segmentation is written: ``<output-dir>/<id><format>`` (None: it is not written)."""
        return None if self.output_dir is None else self.output_dir / f"{case.id}{self.output_format}"


def check_cohort(settings: CohortSettings, cases: list[Case]) -> None:
    """Refuse (:class:`InputError`), before any model work, a cohort that would fail in every case or after its work:
    a damaged support, a ``segments`` name that no support has, or a DICOM SEG output for a query it cannot reference
    (the message names the case)."""
    supports = [load_support(image, labels, label_names=settings.label_names) for image, labels in settings.supports]
    select_segments(merge_segments(supports)[0], list(settings.segments or ()))
    if settings.output_dir is not None and settings.output_format == DICOM_SEG_SUFFIX:
        for case in cases:
            try:
                check_seg_source(case.query)
            except InputError as error:
                raise InputError(f"Case '{case.id}': {error}") from None


def failed_record(case: Case, message: str, seconds: float = 0.0) -> dict:
    """The summary record of a case that could not be segmented."""
    return {"id": case.id, "query": str(case.query), "status": "failed", "error": message, "seconds": seconds}


class CaseWorker:
    """Segments cases one after another with one predictor and one set of supports, both loaded by :meth:`start`.

    Support features are kept between cases (in memory, or in the predictor's disk cache when it has one), so the
    supports are encoded for the first case only. A case's own failure (an input error, a file system error, too
    little memory) becomes a ``failed`` record; cancelling raises.
    """

    def __init__(self, settings: CohortSettings, predictor_factory: PredictorFactory) -> None:
        self.settings = settings
        self.predictor_factory = predictor_factory
        self.predictor: FateSamPredictor | None = None

    def start(self) -> None:
        """Read the supports and load the model (once; later calls do nothing)."""
        if self.predictor is not None:
            return
        predictor = self.predictor_factory()
        predictor.prepare_supports(self.settings.supports, self.settings.label_names)
        predictor.load()
        self.predictor = predictor

    def encode_together(self, cases: list[Case], cancel: CancelToken) -> None:
        """Encode the query slices of ``cases`` in shared encoder batches into the predictor's cache, so that their
        runs encode none. A case that cannot be read, or a group that does not fit in memory, is left to the runs,
        which encode (and record failures) as usual."""
        self.start()
        queries = []
        for case in cases:
            try:
                queries.append(self.predictor.prepare_query(case.query))
            except FateSAMError:
                continue
        try:
            self.predictor.encode_queries(queries, cancel)
        except (MemoryError, RuntimeError) as error:
            if not is_allocation_failure(error):
                raise

    def run(self, case: Case, progress: ProgressCallback = ignore_progress, cancel: CancelToken | None = None) -> dict:
        """Segment ``case`` and write its output atomically; its summary record (status ``done`` or ``failed``)."""
        started = time.perf_counter()
        self.start()
        try:
            record = self._segment(case, progress, cancel or CancelToken())
        except Cancelled:
            raise
        except FateSAMError as error:
            return failed_record(case, str(error), time.perf_counter() - started)
        except OSError as error:  # the file system refused this case's files (a name too long, a file gone...)
            message = f"{case.query}: {error}. Check this case's files (their names, that they are there and readable)."
            return failed_record(case, message, time.perf_counter() - started)
        except (MemoryError, RuntimeError) as error:
            memory = run_memory_error(error, self.predictor.loaded.device, "on this case")
            if memory is None:
                raise
            return failed_record(case, str(memory), time.perf_counter() - started)
        record["seconds"] = time.perf_counter() - started
        return record

    def _segment(self, case: Case, progress: ProgressCallback, cancel: CancelToken) -> dict:
        settings = self.settings
        output = settings.output_path(case)
        progress(0.0, "reading")
        query = self.predictor.prepare_query(case.query)
        reference = None
        if case.reference is not None:
            what = f"The reference {case.reference} does not match the query {case.query}"
            reference, _ = read_labels_on_grid(case.reference, query.image, what, settings.label_names)
        result = self.predictor.segment(query, segments=settings.segments, progress=progress, cancel=cancel)
        cancel.raise_if_cancelled()
        if output is not None:
            if settings.output_format == DICOM_SEG_SUFFIX:
                writer = dicom_seg_writer(result.labels, result.segments, case.query)
            else:
                writer = label_map_writer(result.labels, output, result.segments)
            with OutputFiles(settings.overwrite) as outputs:
                outputs.add(output, writer, settings.output_format)
        record = {
            "id": case.id,
            "query": str(case.query),
            "status": "done",
            "error": "",
            "output": "" if output is None else str(output),
            "encoder_passes": result.stats.encoder_passes,
            "support_slices_encoded": result.stats.support_slices_encoded,
            "support_memories_encoded": result.stats.support_memories_encoded,
            "doubtful_slices": [entry.slice_index for entry in result.doubtful_slices],
            "segments": {str(s.value): s.name for s in result.segments},
            "volumes": {
                str(v.value): {"name": v.name, "voxels": v.voxels, "volume_ml": v.volume_ml} for v in result.volumes
            },
            "provenance": [asdict(entry) for entry in result.provenance],
        }
        if reference is not None:
            scores = evaluate_labels(result.labels, reference, [s.value for s in result.segments])
            # An infinite distance (a structure missed) is kept as None: the summary is strict JSON.
            record["metrics"] = {
                str(label): {m: v if math.isfinite(v) else None for m, v in values.items()}
                for label, values in scores.items()
            }
        return record
