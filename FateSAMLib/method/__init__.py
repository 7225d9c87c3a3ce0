"""The FATE-SAM method on SAM2's frozen modules: intensities to model input (``normalization``), encoder features
and their cache (``encoder``), support retrieval (``retrieval``), SAM2's memories and tracking (``tracking``,
``holes``), the engine over slice stacks (``engine``), volumes to a label volume on the query's grid
(``pipeline``) and the one loaded model every entry point runs (``predictor``: :class:`FateSamPredictor`).

May import the top level, ``io``, ``models``, torch and sam2; never MRML or the command line.
"""

from .engine import EngineOptions, FateSamEngine
from .pipeline import Normalization, SegmentationResult, SupportCase, load_support, segment_volume
from .predictor import FateSamPredictor

__all__ = [
    "EngineOptions",
    "FateSamEngine",
    "FateSamPredictor",
    "Normalization",
    "SegmentationResult",
    "SupportCase",
    "load_support",
    "segment_volume",
]
