"""Segment volumes of a segmentation node in the module's result panel, measured on its volume's grid by the rule
of :mod:`FateSAMLib.measurements` (the engine's stats use the same)."""

from __future__ import annotations

import numpy as np
import slicer

from ..measurements import voxel_volume_ml
from ..summary import SegmentVolume
from .scene import ijk_to_ras, segment_infos, segmentation_to_label_array


def segmentation_volumes(
    segmentation: slicer.vtkMRMLSegmentationNode, volume: slicer.vtkMRMLScalarVolumeNode
) -> list[SegmentVolume]:
    """Voxel count and volume (mL) of each segment, in display order, on ``volume``'s grid (each segment on its
    own, so overlapping segments are measured whole); ``value`` is the segment's position (1: first)."""
    voxel_ml = voxel_volume_ml(ijk_to_ras(volume))
    volumes = []
    for position, info in enumerate(segment_infos(segmentation), start=1):
        voxels = int(np.count_nonzero(segmentation_to_label_array(segmentation, volume, {info.segment_id: 1})))
        volumes.append(SegmentVolume(position, info.name, voxels, voxels * voxel_ml))
    return volumes
