"""Segment volumes: voxel count times the voxel volume of the grid, whatever its spacing and direction."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_labels

from FateSAMLib.io.geometry import ijk_to_lps
from FateSAMLib.measurements import segment_volumes, voxel_volume_ml
from FateSAMLib.segments import Segment


def test_volumes_of_an_anisotropic_oblique_label_map_match_a_hand_computation():
    image = oblique_labels()  # spacing 0.5 x 0.75 x 3 mm, rotated 20 degrees and flipped: 1.125 mm^3 per voxel
    segments = [Segment(value, name, (1.0, 0.0, 0.0)) for value, name in ((2, "kidney"), (7, "dot"), (9, "none"))]
    volumes = segment_volumes(sitk.GetArrayViewFromImage(image), ijk_to_lps(image), segments)
    # label 2 fills [1:3, 2:4, 1:5] = 2 x 2 x 4 = 16 voxels = 18 mm^3; label 7 one voxel; label 9 none
    assert [(v.value, v.name, v.voxels) for v in volumes] == [(2, "kidney", 16), (7, "dot", 1), (9, "none", 0)]
    assert [v.volume_ml for v in volumes] == pytest.approx([0.018, 0.001125, 0.0], rel=1e-12)


def test_the_voxel_volume_is_the_same_in_lps_and_ras_and_ignores_the_direction():
    spacing = np.diag([1.25, 1.25, 7.7])
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    lps = np.eye(4)
    lps[:3, :3] = rotation @ spacing
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    assert voxel_volume_ml(lps) == voxel_volume_ml(ras) == pytest.approx(1.25 * 1.25 * 7.7 / 1000)
