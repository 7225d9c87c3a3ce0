"""One segmentation job, whoever asks for it (``fatesam segment``, a server job): a typed request, read and checked
before any model work, segmented by a :class:`~.predictor.FateSamPredictor`, its label volume and statistics written
all or nothing."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import OutputFiles, json_writer
from ..formats import output_suffix
from ..io.labels import label_map_writer
from ..io.probabilities import probability_suffix, probability_writer
from ..progress import CancelToken, ProgressCallback, StageProgress
from ..summary import RunSummary, SegmentEntry
from .pipeline import (
    CorrectionInput,
    ImageInput,
    PreparedQuery,
    SegmentationResult,
    merge_segments,
    select_segments,
)
from .predictor import FateSamPredictor, SupportsInput, read_supports


@dataclass(frozen=True)
class SegmentJob:
    """A request: segment ``query`` from ``supports`` (a refine with ``corrections``), write the label volume to
    ``output`` (format by suffix) and, when given, the statistics to ``stats_json`` and the probabilities to
    ``probabilities``; only ``segments`` when given."""

    query: ImageInput | PreparedQuery
    supports: SupportsInput
    output: Path
    stats_json: Path | None = None
    segments: Sequence[str] | None = None
    corrections: CorrectionInput | None = None
    probabilities: Path | None = None  # also write each segment's probabilities here (``.probabilities``)
    label_names: Mapping[int, str] | None = None  # names of plain label maps' values (``io.label_names``)


def run_summary(result: SegmentationResult, seconds: dict[str, float], predictor: FateSamPredictor) -> RunSummary:
    """The statistics of a run: the engine's counts, ``seconds`` (every step of the job), the slice axis and
    segments, the model and settings it ran with, the segments' volumes, the doubtful slices, per-slice confidence and
    each slice's provenance."""
    stats, settings, loaded = result.stats, predictor.settings, predictor.load()
    return RunSummary(
        encoder_passes=stats.encoder_passes,
        query_slices=stats.query_slices,
        support_slices_encoded=stats.support_slices_encoded,
        support_slices_retrievable=stats.support_slices_retrievable,
        labels=list(stats.labels),
        seconds=seconds,
        corrected_slices=list(stats.corrected_slices),
        support_memories_encoded=stats.support_memories_encoded,
        slice_axis=result.slice_axis,
        segments=[SegmentEntry(s.value, s.name, list(s.color)) for s in result.segments],
        model=settings.model,
        image_size=loaded.image_size,
        device=str(loaded.device),
        random_weights=settings.random_weights,
        reuse_features=settings.reuse_features,
        top_k=settings.top_k,
        threads=torch.get_num_threads(),
        volumes=list(result.volumes),
        doubtful_slices=list(result.doubtful_slices),
        confidence=list(result.confidence),
        provenance=list(result.provenance),
    )


def run_job(
    predictor: FateSamPredictor,
    job: SegmentJob,
    progress: ProgressCallback,
    cancel: CancelToken,
    overwrite: bool = False,
) -> SegmentationResult:
    """Read and check the inputs, load the model (once per predictor), segment, and write the outputs atomically."""
    started = time.perf_counter()
    progress(0.0, "Reading volumes")
    supports = read_supports(job.supports, job.label_names)
    select_segments(merge_segments(supports)[0], job.segments)  # an unknown name is refused before the model loads
    query = predictor.prepare_query(job.query, job.corrections)
    read_seconds = time.perf_counter() - started
    predictor.load(StageProgress(progress, 0.01, 0.1), cancel)
    model_seconds = time.perf_counter() - started - read_seconds
    result = predictor.segment(
        query,
        supports,
        job.segments,
        progress=StageProgress(progress, 0.1, 0.98),
        cancel=cancel,
        probabilities=job.probabilities is not None,
    )
    cancel.raise_if_cancelled()
    write_started = time.perf_counter()
    with OutputFiles(overwrite) as outputs:
        writer = label_map_writer(result.labels, job.output, result.segments)
        outputs.add(job.output, writer, output_suffix(job.output))
        if job.probabilities is not None:
            writer = probability_writer(result.probabilities)
            outputs.add(job.probabilities, writer, probability_suffix(job.probabilities))
        seconds = {
            "read": read_seconds,
            "model_load": model_seconds,
            **result.stats.seconds,
            "write": time.perf_counter() - write_started,
            "total": time.perf_counter() - started,
        }
        if job.stats_json:
            outputs.add(job.stats_json, json_writer(run_summary(result, seconds, predictor).to_json()))
    return result
