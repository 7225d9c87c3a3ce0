"""The support slice a prediction leaned on, shown beside it: one slice view set to show that support volume, its
segmentation and the slice itself; and the engine's slice index of the slice the views are on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer

from ..errors import InputError
from .provenance import SupportSliceRef
from .review import slice_array_axis
from .scene import ijk_to_ras, node_label, to_world

# The slice orientation preset of each slice axis (the presets every Slicer slice view has).
ORIENTATIONS = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
# The engine's stacks run along each axis towards (io.geometry): superior (+S), posterior (-A) and left (-R) in RAS.
_STACK_DIRECTION = {"axial": (2, 1.0), "coronal": (1, -1.0), "sagittal": (0, -1.0)}


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


def stack_index(volume: slicer.vtkMRMLScalarVolumeNode, slice_axis: str, point_ras: Sequence[float]) -> int:
    """The engine's slice index (along ``slice_axis``, in its stack order) of the slice of ``volume`` through
    ``point_ras`` (in the volume's own coordinates), as the stats number slices; :class:`InputError` if outside."""
    matrix = ijk_to_ras(volume)
    voxel_axis = 2 - slice_array_axis(matrix, slice_axis)
    index = int(round(np.linalg.solve(matrix, [*point_ras, 1.0])[voxel_axis]))
    count = volume.GetImageData().GetDimensions()[voxel_axis]
    if not 0 <= index < count:
        raise InputError(f"The slice views are outside '{node_label(volume)}'; go to one of its slices first.")
    ras_axis, towards = _STACK_DIRECTION[slice_axis]
    return index if matrix[ras_axis, voxel_axis] * towards > 0 else count - 1 - index
