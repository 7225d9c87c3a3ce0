"""The engine's probabilities (``--probabilities``: one uint8 component per segment, 255 = 1) as scalar volumes the
reader can overlay on the target, one per segment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
from vtk.util import numpy_support

from ..errors import InputError
from .scene import add_to_scene, array_to_volume, ijk_to_ras, node_label


def read_probabilities(
    path: Path, target: slicer.vtkMRMLScalarVolumeNode, names: Sequence[str]
) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """One volume "<target> FateSAM P(<name>)" per segment (``names``: the file's component order) on the file's
    grid (the target's), not yet in a scene (:func:`place_probabilities` adds them)."""
    read = slicer.vtkMRMLVectorVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(read) or read.GetImageData() is None:
        raise InputError(f"The probabilities {path} could not be read; run again.")
    image = read.GetImageData()
    components = image.GetNumberOfScalarComponents()
    if components != len(names):
        raise InputError(f"The probabilities hold {components} segments, not {len(names)}; run again.")
    columns, rows, slices = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(slices, rows, columns, components)
    label = node_label(target)
    return [
        array_to_volume(np.ascontiguousarray(values[..., j]), ijk_to_ras(read), f"{label} FateSAM P({name})")
        for j, name in enumerate(names)
    ]


def place_probabilities(
    scene: slicer.vtkMRMLScene, nodes: Sequence[slicer.vtkMRMLScalarVolumeNode], target: slicer.vtkMRMLScalarVolumeNode
) -> None:
    """Add the probability volumes to the scene, under the target's parent transform."""
    for node in nodes:
        add_to_scene(scene, node).SetAndObserveTransformNodeID(target.GetTransformNodeID())


def overlay(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLScalarVolumeNode, opacity: float = 0.5) -> None:
    """Show ``volume`` over the background in every slice view, with ``opacity``."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetForegroundVolumeID(volume.GetID())
        composite.SetForegroundOpacity(opacity)
