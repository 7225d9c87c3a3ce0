"""How long a typical volume takes with each model on this machine: the step times measured once (by
``models.speed``, in a process that has torch), cached in the cache folder per machine and torch, and the
estimate made from them. Standard library only: the Slicer module reads the estimates without torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import write_file_atomically
from .errors import InputError
from .json_input import parse_json
from .models.registry import ModelSpec, cache_dir, get_model_spec
from .threads import usable_cpus

ESTIMATES_FILE = "speed-estimates.json"


@dataclass(frozen=True)
class TypicalVolume:
    """The volume an estimate is for: query slices, support slices that show a label, labels."""

    query_slices: int = 40
    support_slices: int = 80
    labels: int = 2


TYPICAL = TypicalVolume()
"""About the hippocampus benchmark (38 query slices, 76 labelled support slices, 2 labels) and a small organ CT."""


@dataclass(frozen=True)
class StepTimes:
    """Seconds of the engine's three repeated steps at one architecture and input size, measured on ``device``."""

    encode_s: float  # one slice through the image encoder
    track_s: float  # memory attention over 9 memories and mask decoding, one slice and label
    memory_s: float  # memory encoding of one slice and label
    device: str
    measured: str = ""  # the date, ISO

    def typical_seconds(self, volume: TypicalVolume = TYPICAL) -> float:
        """The engine's time for ``volume``: every slice encoded once, every query slice tracked per label, and a
        memory encoded per label for every query slice and every support slice."""
        encode = (volume.query_slices + volume.support_slices) * self.encode_s
        track = volume.query_slices * volume.labels * self.track_s
        memories = (volume.query_slices + volume.support_slices) * volume.labels * self.memory_s
        return encode + track + memories


def architecture_key(spec: ModelSpec, image_size: int | None = None) -> str:
    """What the speed depends on: the Hiera size (``t``, ``s``, ``b+``, ``l``) and the input, e.g. ``hiera_t@512``.
    SAM2.0 and SAM2.1 of one size, and MedSAM2 and SAM2.1 tiny, share it."""
    size = Path(spec.config).stem.rpartition("hiera_")[2]
    return f"hiera_{size}@{image_size or spec.image_size}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as stream:
            return next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def machine_key() -> str | None:
    """This machine as the estimates are kept: host, CPU, the CPUs this process may use and torch's version (None
    without torch: nothing can be measured)."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"{platform.node()} | {_cpu_model() or platform.machine()} | {usable_cpus()} CPUs | torch {torch_version}"


def _all_estimates(path: Path) -> dict:
    try:
        data = parse_json(path, str(path), "")
    except InputError:  # missing or damaged: measured again, and the file rewritten
        return {}
    return data if isinstance(data, dict) else {}


def read_estimates() -> dict[str, StepTimes]:
    """This machine's measured step times by architecture key (empty when none were measured or the file is bad)."""
    key = machine_key()
    entries = _all_estimates(cache_dir() / ESTIMATES_FILE).get(key, {}) if key else {}
    times = {}
    for architecture, entry in entries.items() if isinstance(entries, dict) else ():
        try:
            times[architecture] = StepTimes(**entry)
        except TypeError:
            continue  # an entry of another FateSAM version
    return times


def record_estimate(architecture: str, times: StepTimes) -> None:
    """Keep ``times`` for ``architecture`` on this machine (the file is rewritten atomically; other machines' entries
    stay)."""
    key = machine_key()
    if key is None:
        return
    path = cache_dir() / ESTIMATES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _all_estimates(path)
    data.setdefault(key, {})[architecture] = asdict(times)
    text = json.dumps(data, indent=2, sort_keys=True)
    write_file_atomically(path, lambda temporary: temporary.write_text(text), overwrite=True)


def estimate_seconds(model: str, image_size: int | None = None) -> float | None:
    """The measured time of a typical volume with ``model`` at ``image_size`` (default its own) here, or None."""
    spec = get_model_spec(model)
    times = read_estimates().get(architecture_key(spec, image_size))
    return None if times is None else times.typical_seconds()


def estimate_device(model: str, image_size: int | None = None) -> str | None:
    """The device the estimate of ``model`` was measured on (``cpu``, ``cuda``, ``mps``), or None."""
    times = read_estimates().get(architecture_key(get_model_spec(model), image_size))
    return None if times is None else times.device


def duration_text(seconds: float) -> str:
    """``about 40 s``, ``about 9 min``, ``about 1.5 h``."""
    if seconds < 90:
        return f"about {max(round(seconds / 10) * 10, 10):.0f} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min"
    return f"about {seconds / 3600:.1f} h"
