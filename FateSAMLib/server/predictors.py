"""The server's warm predictors: one loaded model per served model (the settings that choose it), shared by the
workers, the server's default loaded at start-up; a job takes the one its settings name, so a second job on a model
loads nothing, and the shared feature cache (keyed by content) gives it the support slices encoded before."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ..method.predictor import MODEL_SETTINGS, FateSamPredictor
from ..models.loading import LoadedModel
from ..options import RunSettings

LOG = logging.getLogger("fatesam.server")


class WarmPredictors:
    """Loaded predictors by model; at most ``max_models`` kept (the least recently used one is dropped first, so that
    the models held stay within the device's memory). ``max_models=0`` keeps none: every job loads its model, and the
    memory is free between jobs."""

    def __init__(self, defaults: RunSettings, max_models: int = 2) -> None:
        self.defaults = defaults
        self.max_models = max_models
        self._predictors: OrderedDict[tuple, FateSamPredictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loads = 0

    @staticmethod
    def _key(settings: RunSettings) -> tuple:
        return tuple(getattr(settings, name) for name in MODEL_SETTINGS)

    def warm_up(self) -> None:
        """Load the server's default model (the start-up of each worker; loaded once for all of them)."""
        if self.max_models:
            self.for_settings(self.defaults).load()

    def for_settings(self, settings: RunSettings) -> FateSamPredictor:
        """A predictor with ``settings`` on their model: loaded already when a job (or the start-up) loaded it, else
        loaded by the job that runs it (its statistics then show the loading)."""
        key = self._key(settings)
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is None:
                predictor = FateSamPredictor(settings, on_load=self._loaded)
                self._predictors[key] = predictor
            self._predictors.move_to_end(key)
            while len(self._predictors) > self.max_models:
                self._predictors.popitem(last=False)  # a job running on it keeps it until it ends
        return predictor.with_settings(settings)  # loads once, whichever thread asks first (the others wait)

    def _loaded(self, loaded: LoadedModel) -> None:
        with self._lock:
            self._loads += 1
        LOG.info("Model %s loaded (input %d)", loaded.spec.name, loaded.image_size)

    @property
    def loads(self) -> int:
        """How many times a model was loaded since the server started."""
        with self._lock:
            return self._loads

    def counts(self) -> dict[str, int]:
        """How many models are held, and how many times one was loaded since the server started."""
        loads = self.loads
        with self._lock:
            return {"models_loaded": sum(p.loaded is not None for p in self._predictors.values()), "model_loads": loads}
