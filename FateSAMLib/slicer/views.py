"""Showing a run's result in Slicer's views: the result's display, and jumping the slice views to a point."""

from __future__ import annotations

from collections.abc import Sequence

import slicer

from ..errors import InputError
from .scene import node_label, to_world


def jump_to(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLTransformableNode, point_ras: Sequence[float]) -> tuple:
    """Centre every slice view on a point given in ``node``'s coordinates (e.g. a doubtful slice of the target).

    The point goes through the node's parent transforms first, so that the views land where the node is shown.
    Returns the world point.
    """
    world = to_world(node, point_ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *world, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return world


def display_result(segmentation: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """Show an imported result in the slice views and as surfaces in 3D; returns warnings, never raises.

    The result is already in the scene: if showing it fails (no display node, the 3D surface cannot be built...),
    it stays there and the warning says how to show it by hand.
    """
    try:
        segmentation.CreateDefaultDisplayNodes()
        display = segmentation.GetDisplayNode()
        if display is None:
            raise InputError("it has no display node (was it removed from the scene?)")
        display.SetVisibility(True)
        if not segmentation.CreateClosedSurfaceRepresentation():
            raise InputError("its 3D surface could not be built")
    except Exception as error:  # showing is a convenience: the imported result must survive any failure here
        return [
            f"The result '{node_label(segmentation)}' was imported, but showing it failed: {error}. Show it from the "
            "Data module, and its 3D surface with 'Show 3D' in Segment Editor."
        ]
    return []
