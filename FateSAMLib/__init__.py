"""FateSAMLib: few-shot 3D segmentation with frozen SAM2 modules (FATE-SAM), without Slicer's GUI or Qt.

Subpackages by dependency tier (each may import the tiers above it, never those below):

- this top level (``errors``, ``progress``, ``segments``, ``options``, ``formats``, ``atomic``: the one atomic write
  of every output file and folder, ``support_sets``: a saved support set's manifest, ``summary``: a run's statistics,
  ``protocol`` and ``remote``: the server's API and its client, ...): the standard library only;
- ``slicer``: the 3D Slicer scene adapter and the engine process it starts; MRML and numpy, never torch, sam2,
  SimpleITK or slicerio (the module loads it before those may be installed);
- ``models.registry``: the model names and checkpoint locations, standard library only;
- ``io``: images and label maps read and written, voxel grids; numpy, SimpleITK, slicerio;
- ``models`` (the rest): checkpoints, building and loading SAM2, devices; torch and sam2;
- ``method``: the FATE-SAM method on SAM2's modules (encoder, retrieval, tracking, engine, pipeline) and the
  predictor every entry point runs; torch, sam2, io;
- ``cohort``: many queries with one support set, on this machine or Ray actors (Ray only when asked); method, io;
- ``server``: ``fatesam serve`` (FastAPI), warm predictors, users; method, io, never cli;
- ``cli``: the ``fatesam`` command line over all of it; ``metrics`` scores a result against a reference (io).

``Testing/test_tiers.py`` checks every import against this order.

The Python API, for notebooks and scripts, is :class:`FateSamPredictor` (``FateSAMLib.method.predictor``), exported
here lazily: ``import FateSAMLib`` loads no torch, ``from FateSAMLib import FateSamPredictor`` does.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"FateSamPredictor": "FateSAMLib.method.predictor", "RunSettings": "FateSAMLib.options"}


def __getattr__(name: str) -> Any:
    """The lazily exported names (PEP 562): imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'FateSAMLib' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
