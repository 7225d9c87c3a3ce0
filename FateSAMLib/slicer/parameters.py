"""The module's settings, as its parameter node holds them, turned into what a run needs; without Qt.

``FateSAM/FateSAM.py`` declares the parameter node with Slicer's ``parameterNodeWrapper`` (available inside Slicer
only); the functions here read any object with the same attributes (:class:`ModuleSettings`), so that they are
tested with the slicer-core wheel. Segment names match by :func:`~FateSAMLib.segments.segment_key`, as in :mod:`.run`.
Where runs go (:class:`ServerChoice`) is kept with Slicer's settings of this computer, never in the parameter node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import slicer

from ..errors import InputError
from ..segments import segment_key
from .plan import segment_names
from .scene import reference_volume, segmentations_with_reference_volume

Pair = tuple[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLSegmentationNode]
SETTINGS_OF_PARAMETERS = {
    "model": "model",
    "device": "device",
    "topK": "top_k",
    "sliceAxis": "slice_axis",
    "normalization": "normalization",
}
"""The parameter node's settings by name -> the :class:`~FateSAMLib.options.RunSettings` field each one sets (and
takes its default from)."""
HINTED_PARAMETERS = ("model", "topK", "sliceAxis", "normalization")
"""The settings a saved support set records, as hints for whoever loads it."""
DEFAULT_WINDOW = (40.0, 400.0)
"""The window (level, width) the module offers first, soft tissue in CT; used with window normalisation only."""
DEFAULT_SUPPORT_SET_FOLDER = "support set"
_UNSAFE_IN_FILE_NAMES = re.compile(r'[\\/:*?"<>|]+')
RUN_ON_CHOICES = ("this computer", "server")
"""Where a run goes: the engine on this computer, or a ``fatesam serve`` server."""
RUN_ON_KEY = "FateSAM/RunOn"
SERVER_URL_KEY = "FateSAM/ServerURL"
SERVER_TOKEN_KEY = "FateSAM/ServerToken"
"""The keys of :class:`ServerChoice` in Slicer's settings (``qt.QSettings()``): this computer's, not the scene's."""


class Support(Protocol):
    """One support of the parameter node: either node is None until chosen, or after it left the scene."""

    volume: slicer.vtkMRMLScalarVolumeNode | None
    segmentation: slicer.vtkMRMLSegmentationNode | None


class ModuleSettings(Protocol):
    """What the module's parameter node holds (``FateSAMParameterNode`` in ``FateSAM.py``)."""

    supports: Sequence[Support]
    uncheckedSegments: Sequence[str]
    model: str
    device: str
    topK: int
    sliceAxis: str
    normalization: str
    windowLevel: float
    windowWidth: float


def complete_pairs(supports: Iterable[Support]) -> list[Pair]:
    """The (volume, segmentation) pairs of the supports that have both nodes."""
    pairs = ((support.volume, support.segmentation) for support in supports)
    return [(volume, segmentation) for volume, segmentation in pairs if volume is not None and segmentation is not None]


def is_checked(name: str, unchecked: Iterable[str]) -> bool:
    """Whether a segment is to be transferred: its name does not match an unticked one."""
    return segment_key(name) not in {segment_key(other) for other in unchecked}


def chosen_segment_names(pairs: Sequence[Pair], unchecked: Iterable[str]) -> list[str]:
    """The supports' segment names (see :func:`.plan.segment_names`) but the unticked ones."""
    unchecked = list(unchecked)
    return [name for name in segment_names([segmentation for _, segmentation in pairs]) if is_checked(name, unchecked)]


def run_options(settings: ModuleSettings) -> dict[str, object]:
    """The run options (``process(...)``/``createRun(...)`` keywords) of the module's settings.

    The window (level, width) is passed only with window normalisation: it is ignored otherwise.
    """
    options = {name: getattr(settings, parameter) for parameter, name in SETTINGS_OF_PARAMETERS.items()}
    window = (settings.windowLevel, settings.windowWidth) if settings.normalization == "window" else None
    return {**options, "window": window}


def model_hints(settings: ModuleSettings) -> dict[str, object]:
    """The settings a saved support set records (:data:`HINTED_PARAMETERS`), by their run-setting names."""
    return {SETTINGS_OF_PARAMETERS[parameter]: getattr(settings, parameter) for parameter in HINTED_PARAMETERS}


def first_scene_support(
    scene: slicer.vtkMRMLScene,
) -> tuple[slicer.vtkMRMLScalarVolumeNode | None, slicer.vtkMRMLSegmentationNode | None]:
    """A new support's first guess: the scene's first segmentation and the volume it was drawn on (either None)."""
    segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    return (reference_volume(segmentation) if segmentation is not None else None), segmentation


def first_target_volume(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The target's first guess: the scene's first volume that the target selector shows (a scalar volume, not a
    label map or another subclass, and not hidden from editors), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not node.GetHideFromEditors():
            return node
    return None


def with_scene_supports(
    pairs: Sequence[Pair], scene: slicer.vtkMRMLScene, target: slicer.vtkMRMLScalarVolumeNode | None
) -> list[Pair]:
    """``pairs`` followed by every other segmentation of the scene drawn on a volume, but those on the target."""
    found = list(pairs)
    for pair in segmentations_with_reference_volume(scene):
        if pair[0] is not target and pair not in found:
            found.append(pair)
    return found


def support_set_folder_name(name: str) -> str:
    """A folder name for a support set called ``name``: characters that file systems refuse become ``_``."""
    return _UNSAFE_IN_FILE_NAMES.sub("_", name).strip(" .") or DEFAULT_SUPPORT_SET_FOLDER


class SettingsStore(Protocol):
    """Where :class:`ServerChoice` is kept: ``qt.QSettings()`` in Slicer (its ``value``/``setValue``)."""

    def value(self, key: str, defaultValue: object = None) -> object: ...

    def setValue(self, key: str, value: object) -> None: ...


@dataclass(frozen=True)
class ServerChoice:
    """Where runs go: ``run_on`` one of :data:`RUN_ON_CHOICES`, the server's ``url`` and its bearer ``token``.

    Kept in Slicer's settings of this computer (:meth:`load`, :meth:`save`), never in the parameter node, the scene
    or a support set, so that a shared scene or support set carries no token.
    """

    run_on: str = RUN_ON_CHOICES[0]
    url: str = ""
    token: str = ""

    @classmethod
    def load(cls, store: SettingsStore) -> ServerChoice:
        """The choice saved in ``store`` (this computer, with no server, when nothing is saved)."""
        run_on = str(store.value(RUN_ON_KEY, RUN_ON_CHOICES[0]) or RUN_ON_CHOICES[0])
        return cls(
            run_on if run_on in RUN_ON_CHOICES else RUN_ON_CHOICES[0],
            str(store.value(SERVER_URL_KEY, "") or ""),
            str(store.value(SERVER_TOKEN_KEY, "") or ""),
        )

    def save(self, store: SettingsStore) -> None:
        """Keep the choice in ``store`` (URL and token trimmed)."""
        store.setValue(RUN_ON_KEY, self.run_on)
        store.setValue(SERVER_URL_KEY, self.url.strip())
        store.setValue(SERVER_TOKEN_KEY, self.token.strip())

    @property
    def remote(self) -> bool:
        """Whether runs go to the server."""
        return self.run_on == RUN_ON_CHOICES[1]

    def run_keywords(self) -> dict[str, str | None]:
        """The ``server``/``token`` keywords of the logic's ``createRun``/``process``: none to run on this computer.

        Raises InputError when the server is chosen without its URL.
        """
        if not self.remote:
            return {}
        if not self.url.strip():
            raise InputError(
                "Run on server is chosen but no server URL is given: enter the address 'fatesam serve' printed "
                "(e.g. http://gpu-box:8765), or choose Run on: this computer."
            )
        return {"server": self.url.strip(), "token": self.token.strip() or None}


def connection_summary(url: str, models: Mapping[str, object]) -> str:
    """One line on a reachable server, from its ``GET /v1/models`` answer (``ServerClient.models()``)."""
    defaults = models.get("defaults")
    defaults = defaults if isinstance(defaults, Mapping) else {}
    names = ", ".join(str(name) for name in models.get("models") or []) or "none"
    return (
        f"Connected to {url}: default model {defaults.get('model', '?')} on {defaults.get('device', '?')}; "
        f"models: {names}."
    )
