"""``FateSamPredictor``: one loaded SAM2 model behind every door (``fatesam segment``, cohort workers, the server's
workers, notebooks), with the run settings, encoder batches sized to memory and the feature cache.

::

    from FateSAMLib import FateSamPredictor

    predictor = FateSamPredictor.from_settings(model="sam2.1-tiny")
    result = predictor.segment(query="case4.nii.gz", supports=[("case1.nii.gz", "case1_labels.nii.gz")])
    result.write("case4.seg.nrrd")

The model is loaded once, on first use (or by :meth:`FateSamPredictor.load`); supports given to
:meth:`~FateSamPredictor.prepare_supports` are read and checked once and their features and memories encoded once
(kept in the feature cache: on disk with ``feature_cache``, else in memory). Paths and SimpleITK images are accepted
alike and checked as the command line checks its files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..models.devices import available_memory_bytes, use_threads
from ..models.loading import RANDOM_WEIGHTS_WARNING, LoadedModel, load_model
from ..options import RunSettings
from ..progress import CancelToken, ProgressCallback, ignore_progress
from ..support_sets import read_support_set
from .encoder import FeatureCache, MemoryFeatureCache, encoder_batch_size
from .engine import EngineOptions, FateSamEngine, SliceLogitsCallback
from .pipeline import (
    CorrectionInput,
    ImageInput,
    Normalization,
    PreparedQuery,
    SegmentationResult,
    SupportCase,
    load_support,
    prepare_query,
    query_stack,
    segment_volume,
)

logger = logging.getLogger(__name__)

MEMORY_CACHE_SHARE = 4
"""A kept predictor's in-memory feature cache holds at most this share (1/4) of the memory free at its load."""

MODEL_SETTINGS = ("model", "checkpoint", "random_weights", "image_size", "device")
"""The settings that choose the loaded model: predictors that agree on them share it (see :meth:`with_settings`)."""

SupportsInput = Sequence[tuple[ImageInput, ImageInput]] | Sequence[SupportCase] | str | Path
"""Supports: (image, labels) pairs (paths or SimpleITK images), cases already read, or a saved support set folder."""


def model_identity(loaded: LoadedModel) -> str:
    """What makes two models' features interchangeable: name, input size and the weights' file (or seed)."""
    if loaded.checkpoint_path is None:
        weights = "random-seed-0"
    else:
        stat = Path(loaded.checkpoint_path).stat()
        weights = f"{Path(loaded.checkpoint_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{loaded.spec.name}|{loaded.image_size}|{weights}"


def read_supports(supports: SupportsInput, label_names: Mapping[int, str] | None = None) -> list[SupportCase]:
    """Supports read and checked (each image with its labels), from pairs, cases or a support set folder;
    ``label_names`` name plain label maps' values (``io.label_names``)."""
    if isinstance(supports, str | Path):
        supports = read_support_set(supports).pairs()
    return [
        entry if isinstance(entry, SupportCase) else load_support(*entry, f"support {index}", label_names)
        for index, entry in enumerate(supports, start=1)
    ]


class FateSamPredictor:
    """FATE-SAM with one SAM2 model, loaded once, and one run's settings.

    ``settings`` are the :class:`~FateSAMLib.options.RunSettings` of the command line (same defaults and checks).
    Encoded features are kept between calls in the ``feature_cache`` folder when the settings name one, else in
    memory unless ``keep_features`` is False (a single run, as ``fatesam segment``, then keeps none). ``on_load`` is
    called with the model once it is loaded; ``loaded``: a model loaded already (by ``models.loading.load_model``),
    used instead of loading the one the settings name. Loading is thread-safe; :meth:`segment` may run in several
    threads at once (each call is its own engine run).
    """

    def __init__(
        self,
        settings: RunSettings | None = None,
        keep_features: bool = True,
        on_load: Callable[[LoadedModel], None] | None = None,
        loaded: LoadedModel | None = None,
        *,
        _shared: _SharedModel | None = None,
    ) -> None:
        self.settings = settings or RunSettings()
        self._shared = _shared or _SharedModel(keep_features, on_load)
        if loaded is not None:
            self._shared.adopt(loaded, self.settings)
        self.supports: list[SupportCase] = []
        self._warned: set[str] = set()

    @classmethod
    def from_settings(cls, preset: str | None = None, **values: object) -> FateSamPredictor:
        """A predictor for these setting ``values`` (fields of ``RunSettings``; ``preset``'s where left out, then the
        defaults), checked as the command line checks its options."""
        return cls(RunSettings.from_preset(preset, **values))

    def with_settings(self, settings: RunSettings) -> FateSamPredictor:
        """A predictor with other method settings (top-k, slice axis, intensities, ...) on this one's model and
        feature cache; ``settings`` must choose the same model (:data:`MODEL_SETTINGS`)."""
        differing = [name for name in MODEL_SETTINGS if getattr(settings, name) != getattr(self.settings, name)]
        if differing:
            raise ValueError(f"with_settings keeps the model: {', '.join(differing)} differ; make a new predictor.")
        if settings.feature_cache != self.settings.feature_cache:
            raise ValueError("with_settings keeps the feature cache; make a new predictor for another one.")
        return FateSamPredictor(settings, _shared=self._shared)

    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded model (None until :meth:`load`)."""
        return self._shared.loaded

    @property
    def model_loads(self) -> int:
        """How many times this predictor's model was loaded: 1 once loaded, whatever it has segmented."""
        return self._shared.loads

    def load(self, progress: ProgressCallback = ignore_progress, cancel: CancelToken | None = None) -> LoadedModel:
        """Load the model (download, build, weights), once; later calls return it."""
        loaded, loaded_now = self._shared.load(self.settings, progress, cancel)
        if loaded_now and loaded.random_weights:
            self._warned.add(RANDOM_WEIGHTS_WARNING)  # load_model has just warned
        return loaded

    @property
    def engine(self) -> FateSamEngine:
        """The engine with this predictor's settings on the loaded model (loads it first if needed)."""
        loaded = self.load()
        sized_batch = encoder_batch_size(loaded.device, loaded.image_size, available_memory_bytes(loaded.device))
        options = EngineOptions.from_settings(self.settings, sized_batch)
        return FateSamEngine(loaded, options, self._shared.feature_cache)

    def prepare_supports(
        self, supports: SupportsInput, label_names: Mapping[int, str] | None = None
    ) -> list[SupportCase]:
        """Read and check the supports once (``label_names``: see :func:`read_supports`) and keep them for later
        :meth:`segment` calls; their features and memories are encoded by the first segmentation and then kept in the
        feature cache."""
        self.supports = read_supports(supports, label_names)
        return self.supports

    def prepare_query(
        self, query: ImageInput | PreparedQuery, corrections: CorrectionInput | None = None
    ) -> PreparedQuery:
        """The query read and checked, with its slice frame along the settings' axis and its corrections checked."""
        if isinstance(query, PreparedQuery):
            return query
        return prepare_query(query, self.settings.slice_axis, corrections)

    def encode_queries(self, queries: Sequence[ImageInput | PreparedQuery], cancel: CancelToken | None = None) -> int:
        """Encode the slices of several queries in shared encoder batches into the feature cache, so that their
        :meth:`segment` calls encode none (fuller batches where queries are short); returns how many were encoded."""
        normalization = Normalization.from_settings(self.settings)
        stacks = [query_stack(self.prepare_query(query), normalization) for query in queries]
        return self.engine.encode_queries(stacks, cancel)

    def segment(
        self,
        query: ImageInput | PreparedQuery,
        supports: SupportsInput | None = None,
        segments: Sequence[str] | None = None,
        corrections: CorrectionInput | None = None,
        progress: ProgressCallback = ignore_progress,
        cancel: CancelToken | None = None,
        on_slice_logits: SliceLogitsCallback | None = None,
        probabilities: bool = False,
    ) -> SegmentationResult:
        """Segment ``query`` from ``supports`` (default: those of :meth:`prepare_supports`); a refine when
        ``corrections`` are given (or the prepared query has them). The result lies on the query's grid and carries
        its stats, each slice's provenance, the segments' volumes and, with ``probabilities``, each segment's
        probabilities; the ``FateSAMLib`` logger warns as the command line does (e.g. a top-k above the candidates)."""
        cases = read_supports(supports) if supports is not None else self.supports
        prepared = self.prepare_query(query, corrections)
        engine = self.engine
        result = segment_volume(
            engine,
            cases,
            prepared,
            segments=list(segments) if segments else None,
            normalization=Normalization.from_settings(self.settings),
            progress=progress,
            cancel=cancel,
            on_slice_logits=on_slice_logits,
            probabilities=probabilities,
        )
        if self.load().random_weights:
            self._warn_once(RANDOM_WEIGHTS_WARNING)  # also in a job on a model loaded before (a server's)
        self.warn_if_top_k_exceeds_candidates(result.stats.support_slices_retrievable)
        return result

    def warn_if_top_k_exceeds_candidates(self, candidates: int) -> None:
        """Warn (once per predictor) when fewer support slices than top-k show the chosen segments."""
        top_k = self.settings.top_k
        if top_k > candidates:
            self._warn_once(
                f"--top-k {top_k} is more than the {candidates} support slices that show the chosen segments: every "
                f"query slice used those {candidates}. Add supports, or lower --top-k to silence this warning."
            )

    def _warn_once(self, message: str) -> None:
        """Warn through the ``FateSAMLib`` logger, once per predictor."""
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)


class _SharedModel:
    """The loaded model and feature cache that a predictor and those made by ``with_settings`` share."""

    def __init__(self, keep_features: bool, on_load: Callable[[LoadedModel], None] | None) -> None:
        self.keep_features = keep_features
        self.on_load = on_load
        self.loaded: LoadedModel | None = None
        self.feature_cache: FeatureCache | None = None
        self.loads = 0
        self._lock = threading.Lock()

    def load(
        self, settings: RunSettings, progress: ProgressCallback, cancel: CancelToken | None
    ) -> tuple[LoadedModel, bool]:
        """The loaded model, and whether this call loaded it (the other threads asking meanwhile wait for it)."""
        with self._lock:
            if self.loaded is not None:
                return self.loaded, False
            use_threads(settings.threads)  # --threads, else one per physical core this process may use
            loaded = load_model(
                name=settings.model,
                checkpoint=settings.checkpoint,
                random_weights=settings.random_weights,
                image_size=settings.image_size,
                device=settings.device,
                progress=progress,
                cancel=cancel,
            )
            self.adopt(loaded, settings)
            self.loads += 1
            if self.on_load is not None:
                self.on_load(loaded)
            return loaded, True

    def adopt(self, loaded: LoadedModel, settings: RunSettings) -> None:
        """Hold ``loaded``, with the feature cache the settings ask for."""
        if settings.feature_cache:
            self.feature_cache = FeatureCache(settings.feature_cache, model_identity(loaded))
        elif self.keep_features:
            self.feature_cache = MemoryFeatureCache(available_memory_bytes(loaded.device) // MEMORY_CACHE_SHARE)
        self.loaded = loaded
