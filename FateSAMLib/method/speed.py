"""Measuring this machine's speed with each model, once: a few encoder passes per architecture and, per input size,
the engine's own memory encoding and one memory-attention-and-decoding step over a full memory bank (3 supports and
6 neighbours), with seeded random weights (the time does not depend on the weights). The results are kept by
``FateSAMLib.estimates``, which turns them into the time of a typical volume.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable

import torch

from ..estimates import StepTimes, architecture_key, read_estimates, record_estimate
from ..models.architecture import build_architecture
from ..models.devices import resolve_device
from ..models.registry import ModelSpec
from ..progress import CancelToken, ProgressCallback, ignore_progress
from .encoder import SliceEncoder
from .tracking import SliceQuery, SliceTracker

ENCODER_PASSES = 2  # the fastest counts: the first also pays for allocations
SUPPORTS, NEIGHBOURS, LABELS = 3, 6, 2


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _encode_seconds(model: torch.nn.Module, device: torch.device, cancel: CancelToken) -> float:
    encoder = SliceEncoder(model, device, batch_size=1)
    images = torch.rand(
        ENCODER_PASSES, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0)
    )
    return min(_seconds(lambda i=i: encoder.encode(images[i : i + 1], cancel)) for i in range(ENCODER_PASSES))


def _tracking_seconds(model: torch.nn.Module, device: torch.device, cancel: CancelToken) -> tuple[float, float]:
    """(memory attention and decoding, memory encoding) seconds per slice and label, with a full memory bank."""
    encoder = SliceEncoder(model, device, batch_size=1)
    image = torch.rand(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1))
    levels = encoder.encode(image, cancel).slice_levels(0)
    tracker = SliceTracker(model, encoder.geometry, device, num_query_slices=NEIGHBOURS + 1)
    size = model.image_size
    masks = torch.zeros(LABELS, 1, size, size)
    masks[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    support = tracker.encode_support(levels, masks)
    query = SliceQuery(0, levels, [support] * SUPPORTS, reverse=False)
    step = tracker.attend_and_decode([query])  # warm-up, with no neighbour yet
    cancel.raise_if_cancelled()
    memory = _seconds(lambda: tracker.remember(step, pending={NEIGHBOURS}))
    tracker.predicted = dict.fromkeys(range(NEIGHBOURS), tracker.predicted[0])
    cancel.raise_if_cancelled()
    last = SliceQuery(NEIGHBOURS, levels, [support] * SUPPORTS, reverse=False)
    track = _seconds(lambda: tracker.attend_and_decode([last]))
    return track / LABELS, memory / LABELS


def measure_estimates(
    specs: Iterable[ModelSpec],
    device: str = "auto",
    image_size: int | None = None,
    again: bool = False,
    progress: ProgressCallback = ignore_progress,
    cancel: CancelToken | None = None,
) -> dict[str, StepTimes]:
    """Measure the step times of the models' architectures not yet measured on this machine (all with ``again``) at
    ``image_size`` (default each model's own), record them, and return every architecture's times."""
    cancel = cancel or CancelToken()
    target = resolve_device(device)
    known = {} if again else read_estimates()
    wanted = {architecture_key(spec, image_size): spec for spec in specs}
    missing = [(key, spec) for key, spec in wanted.items() if key not in known]
    tracking: dict[int, tuple[float, float]] = {}  # per input size: attention and memory do not depend on the trunk
    for done, (key, spec) in enumerate(missing):
        cancel.raise_if_cancelled()
        progress(done / len(missing), f"Measuring this machine's speed with {key} (once)")
        model = build_architecture(spec, image_size, device="cpu").to(target).eval().requires_grad_(False)
        encode = _encode_seconds(model, target, cancel)
        if model.image_size not in tracking:
            tracking[model.image_size] = _tracking_seconds(model, target, cancel)
        track, memory = tracking[model.image_size]
        known[key] = StepTimes(encode, track, memory, target.type, datetime.date.today().isoformat())
        record_estimate(key, known[key])
    if missing:
        progress(1.0, "Measured this machine's speed")
    return known
