"""Loading a SAM2 model: its architecture, its verified weights (or seeded random ones), frozen on a device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from sam2.modeling.sam2_base import SAM2Base

from ..errors import ModelError
from ..progress import CancelToken, ProgressCallback, StageProgress, ignore_progress
from .architecture import build_architecture
from .checkpoints import check_checkpoint_file, ensure_checkpoint, load_checkpoint_into
from .devices import resolve_device, use_tf32
from .registry import DEFAULT_MODEL, ModelSpec, check_image_size, get_model_spec

RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS: the model is untrained, its masks are meaningless (tests and smoke runs)."

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A frozen SAM2 model ready to run, and what it was built from."""

    model: SAM2Base
    spec: ModelSpec
    device: torch.device
    image_size: int
    random_weights: bool
    checkpoint_path: Path | None


def load_model(
    name: str = DEFAULT_MODEL,
    checkpoint: str | Path | None = None,
    random_weights: bool = False,
    image_size: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: ProgressCallback = ignore_progress,
    cancel: CancelToken | None = None,
) -> LoadedModel:
    """Build SAM2 model ``name`` (a SAM2Base with the video tracking settings), frozen and in eval mode.

    Weights come from ``checkpoint`` (a local file), else from the verified cached download; with
    ``random_weights`` they are seeded random numbers (tests only), and the ``FateSAMLib`` logger warns that
    they are. ``image_size`` overrides the input size. On CUDA it switches TF32 on, for the whole process.
    """
    cancel = cancel or CancelToken()
    spec = get_model_spec(name)
    if image_size is not None:
        check_image_size(image_size)
    if random_weights and checkpoint is not None:
        raise ModelError("--random-weights and --checkpoint exclude each other; leave out one of them.")
    target = resolve_device(device)
    checkpoint_path = None
    if checkpoint is not None:
        checkpoint_path = Path(checkpoint).expanduser()
        check_checkpoint_file(checkpoint_path, spec)
    elif not random_weights:
        checkpoint_path = ensure_checkpoint(spec, StageProgress(progress, 0.0, 0.8), cancel)
    cancel.raise_if_cancelled()
    progress(0.8, f"Building {spec.name}")
    model = build_architecture(spec, image_size=image_size, device="cpu", seed=seed)
    if random_weights:
        logger.warning(RANDOM_WEIGHTS_WARNING)
    else:
        cancel.raise_if_cancelled()
        progress(0.9, f"Loading weights from {checkpoint_path.name}")
        load_checkpoint_into(model, checkpoint_path, spec)
    model = model.to(target).eval().requires_grad_(False)
    use_tf32(target)
    progress(1.0, f"{spec.name} ready on {target}")
    return LoadedModel(model, spec, target, model.image_size, random_weights, checkpoint_path)
