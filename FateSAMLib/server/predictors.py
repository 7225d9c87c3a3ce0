"""The server's warm predictors: one loaded model per served model (the settings that choose it), shared by the
workers, the server's default loaded at start-up; a job takes the one its settings name, so a second job on a model
loads nothing, and the shared feature cache (keyed by content) gives it the support slices encoded before."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ..method.predictor import MODEL_SETTINGS, FateSamPredictor
from ..options import RunSettings

LOG = logging.getLogger("fatesam.server")


class WarmPredictors:
    """Loaded predictors by model; at most ``max_models`` kept (the least recently used one is dropped first, so that
    the models held stay within the device's memory)."""

    def __init__(self, defaults: RunSettings, max_models: int = 2) -> None:
        self.defaults = defaults
        self.max_models = max_models
        self._predictors: OrderedDict[tuple, FateSamPredictor] = OrderedDict()
        self._lock = threading.Lock()
        self._dropped_loads = 0  # the loads of the predictors dropped since

    @staticmethod
    def _key(settings: RunSettings) -> tuple:
        return tuple(getattr(settings, name) for name in MODEL_SETTINGS)

    def warm_up(self) -> None:
        """Load the server's default model (the start-up of each worker; loaded once for all of them)."""
        self.for_settings(self.defaults)

    def for_settings(self, settings: RunSettings) -> FateSamPredictor:
        """A predictor with ``settings`` on their model, loaded now unless a job loaded it before."""
        key = self._key(settings)
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is None:
                predictor = FateSamPredictor(settings)
                self._predictors[key] = predictor
                while len(self._predictors) > self.max_models:
                    _, dropped = self._predictors.popitem(last=False)  # a job running on it keeps it until it ends
                    self._dropped_loads += dropped.model_loads
            self._predictors.move_to_end(key)
        if predictor.loaded is None:
            predictor.load()  # once, whichever thread asks first (the others wait for it)
            LOG.info("Model %s loaded (input %d)", settings.model, predictor.loaded.image_size)
        return predictor.with_settings(settings)

    @property
    def loads(self) -> int:
        """How many times a model was loaded since the server started."""
        with self._lock:
            return self._dropped_loads + sum(p.model_loads for p in self._predictors.values())

    def counts(self) -> dict[str, int]:
        """How many models are held, and how many times one was loaded since the server started."""
        loads = self.loads
        with self._lock:
            return {"models_loaded": sum(p.loaded is not None for p in self._predictors.values()), "model_loads": loads}
