"""Synthetic volumes and segmentations with oblique geometry, built in a real MRML scene (slicer-core wheel)."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="the slicer-core wheel is needed for scene tests (pip install slicer-core)"
)

import vtk  # noqa: E402

from FateSAMLib.segments import Segment  # noqa: E402
from FateSAMLib.slicer.plan import SupportPair  # noqa: E402
from FateSAMLib.slicer.scene import (  # noqa: E402
    add_to_scene,
    array_to_volume,
    label_array_to_segmentation,
    register_segmentation_converters,
    save_segmentation,
)

LIVER = Segment(3, "Liver", (0.8, 0.3, 0.2))
SPLEEN = Segment(7, "Spleen", (0.2, 0.4, 0.9))
KIDNEY = Segment(12, "Left kidney", (0.9, 0.8, 0.1))
TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^"
)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A 3x3 rotation from angles in degrees about x, then y, then z."""
    x, y, z = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_geometry(
    spacing: tuple[float, float, float] = (0.7, 1.3, 2.9),
    origin: tuple[float, float, float] = (-12.5, 30.25, 7.0),
    angles: tuple[float, float, float] = (17.0, -8.0, 25.0),
) -> np.ndarray:
    """A 4x4 IJK-to-RAS matrix with rotated axes and non-unit, unequal spacing."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(*angles) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def vtk_matrix(array: np.ndarray):
    """A 4x4 numpy array as a vtkMatrix4x4."""
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def blob_labels(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A [k, j, i] label array with three boxes valued 3, 7 and 12 (non-contiguous values) and a few stray voxels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    k, j, i = shape
    labels[1 : k // 2, 2 : j // 2, 1 : i // 2] = LIVER.value
    labels[k // 2 : k - 1, j // 2 : j - 2, i // 2 : i - 1] = SPLEEN.value
    labels[1 : k - 1, j - 3 : j - 1, 1:3] = KIDNEY.value
    for _ in range(5):
        labels[tuple(rng.integers(0, n) for n in shape)] = SPLEEN.value
    return labels


def make_case(scene, name: str, shape=(9, 14, 12), geometry=None, segments=(LIVER, SPLEEN, KIDNEY), seed: int = 0):
    """A (volume, segmentation) pair in ``scene``: noisy intensities and blob labels on one oblique grid."""
    register_segmentation_converters()
    geometry = oblique_geometry() if geometry is None else geometry
    labels = blob_labels(shape, seed)
    intensities = (labels * 40 + np.random.default_rng(seed).normal(100, 10, shape)).astype(np.int16)
    volume = add_to_scene(scene, array_to_volume(intensities, geometry, name))
    segmentation = add_to_scene(
        scene, label_array_to_segmentation(labels, geometry, list(segments), f"{name} segmentation")
    )
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return volume, segmentation, labels


def scene_snapshot(scene) -> list[tuple[str, str, str | None, int]]:
    """Each node's ID, name, storage node ID and segment count: what a run must leave unchanged."""
    snapshot = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        storage = node.GetStorageNodeID() if hasattr(node, "GetStorageNodeID") else None
        segments = node.GetSegmentation().GetNumberOfSegments() if node.IsA("vtkMRMLSegmentationNode") else -1
        snapshot.append((node.GetID(), node.GetName(), storage, segments))
    return snapshot


def result_file(tmp_path, target_shape, geometry):
    """A result .seg.nrrd on the target grid, as the engine writes it (names and colours, values 1 and 2)."""
    labels = np.zeros(target_shape, np.uint8)
    labels[1:3, 2:5, 2:6] = 1
    labels[3:5, 5:8, 1:4] = 2
    segments = [Segment(1, "Liver", LIVER.color), Segment(2, "Spleen", SPLEEN.color)]
    node = label_array_to_segmentation(labels, geometry, segments, "r")
    return save_segmentation(node, tmp_path / "result.seg.nrrd"), labels


# Fixtures shared by the slicer tier's tests: a test module imports them (``scene_fixture``, ``supports_fixture``) and
# its tests ask for ``scene`` and ``supports``. (A conftest.py here would shadow Testing/conftest.py's module name.)


@pytest.fixture(name="scene")
def scene_fixture():
    """An empty MRML scene with the segmentation converters registered."""
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture(name="supports")
def supports_fixture(scene) -> tuple[list[SupportPair], list[np.ndarray]]:
    """Two supports whose segment names differ in case and in which segments they have, and their label arrays."""
    first = make_case(scene, "A", segments=(LIVER, SPLEEN))
    lower_spleen = Segment(SPLEEN.value, "spleen", (0.0, 1.0, 0.0))
    geometry = oblique_geometry(angles=(5, 0, -20))
    second = make_case(scene, "B", shape=(8, 12, 10), geometry=geometry, seed=1, segments=(lower_spleen, KIDNEY))
    second[1].GetSegmentation().GetNthSegment(0).SetTerminology(TERMINOLOGY)
    return [SupportPair(first[0], first[1]), SupportPair(second[0], second[1])], [first[2], second[2]]
