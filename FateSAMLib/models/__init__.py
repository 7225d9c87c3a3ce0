"""SAM2 models: the registry of names and checkpoint locations (``registry``, standard library only: the Slicer
module lists models before torch is installed), checkpoint download and verification (``checkpoints``), building
the architecture (``architecture``), loading it with its weights (``loading``) and devices (``devices``).

Only the registry is exported here, so that importing this package loads no torch; the other modules import torch
and sam2 and are imported by name.
"""

from .registry import DEFAULT_MODEL, MODELS, ModelSpec, get_model_spec, model_names

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "get_model_spec", "model_names"]
