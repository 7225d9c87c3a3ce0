"""The module's settings, as its parameter node holds them, turned into what a run needs; without Qt.

``FateSAM/FateSAM.py`` declares the parameter node with Slicer's ``parameterNodeWrapper`` (available inside Slicer
only); the functions here read any object with the same attributes (:class:`ModuleSettings`), so that they are
tested with the slicer-core wheel. Segment names match by :func:`~FateSAMLib.segments.segment_key`, as in :mod:`.run`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

import slicer

from ..segments import segment_key
from .run import segment_names
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
    """The supports' segment names (see :func:`.run.segment_names`) but the unticked ones."""
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
