"""What the module shows before Apply: how long the chosen model takes on this computer for a typical volume, the
faster choice when there is one, and the server. Read from the estimates measured once by the engine process
(``fatesam models estimate``), never by importing torch here."""

from __future__ import annotations

from ..estimates import TYPICAL, duration_text, estimate_device, estimate_seconds
from ..models.registry import MEDSAM2, MODELS, get_model_spec

SERVER_WORTH_S = 120  # a typical volume slower than this on a CPU: a GPU server is worth a mention
FASTER_BY = 2  # a model worth proposing is at least this many times faster


def _device_name(device: str | None) -> str:
    return {"cpu": "CPU", "cuda": "GPU", "mps": "Apple GPU"}.get(device or "", device or "computer")


def estimate_text(model: str, image_size: int | None = None, on_server: bool = False) -> str:
    """One line for the module, e.g. "About 14 min for a typical volume on this CPU; about 2 min with medsam2 at
    512; or run on a server." On a server the time is the server's; unmeasured, it says how to measure."""
    if on_server:
        return "Runs on the server: the time depends on its GPU."
    if model not in MODELS:
        return ""  # no model chosen yet
    seconds = estimate_seconds(model, image_size)
    if seconds is None:
        return "Time on this computer: not measured yet (Measure, about 2 min, once)."
    device = estimate_device(model, image_size)
    volume = f"{TYPICAL.query_slices} slices, {TYPICAL.labels} segments"
    parts = [f"{duration_text(seconds).capitalize()} for a typical volume ({volume}) on this {_device_name(device)}"]
    spec = get_model_spec(model)
    faster = estimate_seconds(MEDSAM2.name)
    if spec is not MEDSAM2 and faster is not None and faster * FASTER_BY <= seconds:
        parts.append(f"{duration_text(faster)} with {MEDSAM2.name} at {MEDSAM2.image_size}")
    if device == "cpu" and seconds > SERVER_WORTH_S:
        parts.append("or run on a GPU server (Where to run)")
    return "; ".join(parts) + "."
