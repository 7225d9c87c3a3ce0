"""The support slice a prediction leaned on, shown beside it: the engine's per-slice provenance (``--stats-json``)
read back, and one slice view set to show that support volume, its segmentation and the slice itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import slicer

from ..errors import InputError
from .scene import lps_to_ras, node_label, to_world

# The slice orientation preset of each slice axis (the presets every Slicer slice view has).
ORIENTATIONS = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}


@dataclass(frozen=True)
class SupportSliceRef:
    """A support slice a query slice was predicted from: its rank (1: closest), the support (index in the run's
    supports as exported, and its file name), its index along the slice axis, its centre (RAS, in the support volume's
    coordinates), its feature distance and the segments it shows."""

    rank: int
    support: int
    support_name: str
    slice_index: int
    center_ras: tuple[float, float, float]
    distance: float
    segments: tuple[str, ...]


def read_provenance(stats: dict) -> dict[int, list[SupportSliceRef]]:
    """The ``provenance`` of the engine's stats by query slice index, closest support first (empty when none);
    :class:`InputError` when it is malformed."""
    try:
        return {
            int(entry["slice_index"]): [
                SupportSliceRef(
                    rank=int(used["rank"]),
                    support=int(used["support"]),
                    support_name=str(used["support_name"]),
                    slice_index=int(used["slice_index"]),
                    center_ras=lps_to_ras(used["center_lps"]),
                    distance=float(used["distance"]),
                    segments=tuple(str(name) for name in used["segments"]),
                )
                for used in sorted(entry["supports"], key=lambda used: used["rank"])
            ]
            for entry in stats.get("provenance", [])
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"The engine's provenance is malformed ({error}); run again.") from error


def composite_node(scene: slicer.vtkMRMLScene, slice_node: slicer.vtkMRMLSliceNode) -> slicer.vtkMRMLSliceCompositeNode:
    """The composite node (which volumes a slice view shows) of ``slice_node``'s view."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == slice_node.GetLayoutName():
            return node
    raise InputError(f"The slice view '{slice_node.GetLayoutName()}' has no composite node; pick another view.")


def show_support_slice(
    scene: slicer.vtkMRMLScene,
    slice_node: slicer.vtkMRMLSliceNode,
    volume: slicer.vtkMRMLScalarVolumeNode,
    segmentation: slicer.vtkMRMLSegmentationNode,
    used: SupportSliceRef,
    slice_axis: str,
) -> tuple[float, float, float]:
    """Show in one slice view the support slice ``used`` (of ``volume``, with ``segmentation`` drawn on it): the view
    gets the volume as background, the run's slice orientation and is centred on the slice. Returns the world point."""
    if slice_axis not in ORIENTATIONS:
        raise InputError(f"Unknown slice axis '{slice_axis}'; use one of {', '.join(ORIENTATIONS)}.")
    for node in (volume, segmentation):
        if not scene.IsNodePresent(node):
            raise InputError(f"The support '{node_label(node)}' was removed from the scene; add it back to show it.")
    composite_node(scene, slice_node).SetBackgroundVolumeID(volume.GetID())
    segmentation.CreateDefaultDisplayNodes()
    display = segmentation.GetDisplayNode()
    display.SetVisibility(True)
    if display.GetNumberOfViewNodeIDs() and not display.IsViewNodeIDPresent(slice_node.GetID()):
        display.AddViewNodeID(slice_node.GetID())  # shown in some views only: add this one
    slice_node.SetOrientation(ORIENTATIONS[slice_axis])
    world = to_world(volume, used.center_ras)
    slice_node.JumpSliceByCentering(*world)
    return world


def leaned_on(provenance: dict[int, list[SupportSliceRef]], slice_index: int) -> SupportSliceRef:
    """The support slice query slice ``slice_index`` leaned on most (the closest); :class:`InputError` if none."""
    used: Sequence[SupportSliceRef] = provenance.get(slice_index, [])
    if not used:
        raise InputError(f"Slice {slice_index} was not predicted from a support (a corrected slice?); pick another.")
    return used[0]
