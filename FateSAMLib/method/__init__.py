"""The FATE-SAM method on SAM2's frozen modules: intensities to model input (``normalization``), encoder features
and their cache (``encoder``), support retrieval (``retrieval``), SAM2's memories and tracking (``tracking``,
``holes``), the engine over slice stacks (``engine``) and volumes to a label volume on the query's grid
(``pipeline``).

May import the top level, ``io``, ``models``, torch and sam2; never MRML or the command line.
"""

from .engine import EngineOptions, FateSamEngine
from .pipeline import Normalization, SegmentationResult, SupportCase, load_support, segment_volume

__all__ = [
    "EngineOptions",
    "FateSamEngine",
    "Normalization",
    "SegmentationResult",
    "SupportCase",
    "load_support",
    "segment_volume",
]
