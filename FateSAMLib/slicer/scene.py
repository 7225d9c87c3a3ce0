"""Scene adapter: MRML volumes and segmentations to arrays with geometry, and back, and to/from files.

Only MRML/vtk classes and numpy are used (no Qt, no ``slicer.app``), so that this module runs inside 3D Slicer and,
with the ``slicer-core`` wheel, outside it. Arrays are indexed ``[k, j, i]`` (slice, row, column) as in Slicer;
geometry is the node's own 4x4 IJK-to-RAS matrix (its coordinates before any parent transform). This tier cannot
import ``io``, so index-to-physical conversions here go through MRML's matrices (:func:`ijk_to_ras`); the SimpleITK
side has its own, ``io.geometry.ijk_to_lps``. The two frames differ only in the sign of the first two axes
(:func:`lps_to_ras`).

Nodes built here are not added to a scene: the caller decides when the scene changes (``scene.AddNode(node)``),
so that a failed step leaves the scene as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..atomic import write_file_atomically
from ..errors import InputError
from ..formats import NRRD_SUFFIX, SEGMENTATION_SUFFIX, file_stem, suffix_of
from ..segments import MAX_LABEL_VALUE, Segment, segment_key

BINARY_LABELMAP = "Binary labelmap"
CLOSED_SURFACE = "Closed surface"

_CONVERTER_RULES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)


@dataclass(frozen=True)
class SegmentInfo:
    """A segment of a segmentation node: its ID, name, RGB colour in [0, 1] and terminology ("" when none)."""

    segment_id: str
    name: str
    color: tuple[float, float, float]
    terminology: str


def register_segmentation_converters() -> None:
    """Register the segmentation representation converters, as the Slicer application does at start-up.

    Idempotent: a rule already registered (by Slicer or an earlier call) is not registered again.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for class_name in _CONVERTER_RULES:
        if class_name not in registered:
            factory.RegisterConverterRule(getattr(slicer, class_name)())


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    array = np.asarray(array, dtype=float)
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise InputError(f"An IJK-to-RAS matrix must be a finite 4x4 array (got shape {array.shape}).")
    if abs(np.linalg.det(array[:3, :3])) < 1e-12:
        raise InputError("The IJK-to-RAS matrix is singular: every voxel axis needs a non-zero spacing.")
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def node_label(node: vtk.vtkObject) -> str:
    """The node's name for messages (its class name if it has none)."""
    return node.GetName() or node.GetClassName()


def ijk_to_ras(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The volume node's 4x4 IJK-to-RAS matrix (spacing, directions and origin), without parent transforms."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return _matrix_to_numpy(matrix)


def lps_to_ras(point_lps: Sequence[float]) -> tuple[float, float, float]:
    """A point in DICOM/ITK LPS coordinates (as the engine reports them) in Slicer's RAS coordinates."""
    left, posterior, superior = (float(value) for value in point_lps)
    return -left, -posterior, superior


def _through_parents(
    node: slicer.vtkMRMLTransformableNode, point: Sequence[float], to_world: bool
) -> tuple[float, float, float]:
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return tuple(float(value) for value in point)
    transform = vtk.vtkGeneralTransform()
    if to_world:
        transform_node.GetTransformToWorld(transform)
    else:
        transform_node.GetTransformFromWorld(transform)
    return tuple(float(value) for value in transform.TransformPoint([float(v) for v in point]))


def to_world(node: slicer.vtkMRMLTransformableNode, point_ras: Sequence[float]) -> tuple[float, float, float]:
    """A point given in ``node``'s own RAS coordinates, through its parent transforms (linear or not) to world RAS."""
    return _through_parents(node, point_ras, to_world=True)


def from_world(node: slicer.vtkMRMLTransformableNode, point_world: Sequence[float]) -> tuple[float, float, float]:
    """A world RAS point (e.g. where a slice view is) in ``node``'s own coordinates: the inverse of :func:`to_world`."""
    return _through_parents(node, point_world, to_world=False)


def volume_to_array(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a scalar volume's voxels as a ``[k, j, i]`` array, and its 4x4 IJK-to-RAS matrix."""
    image = volume_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{node_label(volume_node)}' has no voxels; load or select another volume.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{node_label(volume_node)}' has {image.GetNumberOfScalarComponents()} components per voxel; "
            "convert it to a scalar volume first (module 'Vector to Scalar Volume')."
        )
    columns, rows, slices = image.GetDimensions()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return voxels.reshape(slices, rows, columns).copy(), ijk_to_ras(volume_node)


def _image_from_array(array: np.ndarray, image: vtk.vtkImageData) -> vtk.vtkImageData:
    array = np.ascontiguousarray(array)
    if array.ndim != 3 or min(array.shape) < 1:
        raise InputError(f"A volume array must have three non-empty axes [k, j, i] (got shape {array.shape}).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    slices, rows, columns = array.shape
    image.SetDimensions(columns, rows, slices)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def array_to_volume(
    array: np.ndarray, ijk_to_ras_matrix: np.ndarray, name: str, labelmap: bool = False
) -> slicer.vtkMRMLScalarVolumeNode:
    """A new (scalar or label map) volume node, not yet in a scene, holding a copy of ``array`` [k, j, i]."""
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetIJKToRASMatrix(_numpy_to_matrix(ijk_to_ras_matrix))
    node.SetAndObserveImageData(_image_from_array(array, vtk.vtkImageData()))
    return node


def _oriented_image(shape: Sequence[int], ijk_to_ras_matrix: np.ndarray) -> slicer.vtkOrientedImageData:
    """An oriented image with the grid of a [k, j, i] array of ``shape`` and no voxels."""
    image = slicer.vtkOrientedImageData()
    slices, rows, columns = shape
    image.SetDimensions(columns, rows, slices)
    image.SetImageToWorldMatrix(_numpy_to_matrix(ijk_to_ras_matrix))
    return image


def segment_infos(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[SegmentInfo]:
    """The segments of a segmentation node, in display order."""
    segmentation = segmentation_node.GetSegmentation()
    infos = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        infos.append(
            SegmentInfo(
                segment_id=segmentation.GetNthSegmentID(index),
                name=segment.GetName(),
                color=tuple(float(channel) for channel in segment.GetColor()),
                terminology=segment.GetTerminology() if segment.HasTerminology() else "",
            )
        )
    return infos


def reference_volume(segmentation_node: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The scalar volume a segmentation was drawn on (its reference geometry node), or None."""
    node = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None


def segmentations_with_reference_volume(
    scene: slicer.vtkMRMLScene,
) -> list[tuple[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLSegmentationNode]]:
    """Every (volume, segmentation) pair of the scene where the segmentation has a reference volume."""
    pairs = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        segmentation_node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        volume_node = reference_volume(segmentation_node)
        if volume_node is not None:
            pairs.append((volume_node, segmentation_node))
    return pairs


def check_same_frame(segmentation_node: slicer.vtkMRMLSegmentationNode, volume_node: slicer.vtkMRMLVolumeNode) -> None:
    """:class:`InputError` unless the segmentation and the volume are under the same parent transform (or none)."""
    segmentation_transform = segmentation_node.GetTransformNodeID()
    volume_transform = volume_node.GetTransformNodeID()
    if segmentation_transform != volume_transform:
        raise InputError(
            f"Segmentation '{node_label(segmentation_node)}' and volume '{node_label(volume_node)}' are under "
            "different transforms; harden the transforms (Data module, right-click, 'Harden transform') or move "
            "both under the same one."
        )


def _with_binary_labelmap(segmentation_node: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLSegmentationNode:
    """The node itself if it has binary labelmaps, else a converted copy outside the scene (the node is untouched)."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.ContainsRepresentation(BINARY_LABELMAP):
        return segmentation_node
    register_segmentation_converters()
    copy = slicer.vtkMRMLSegmentationNode()
    copy.GetSegmentation().DeepCopy(segmentation)
    if not copy.GetSegmentation().CreateRepresentation(BINARY_LABELMAP):
        raise InputError(
            f"Segmentation '{node_label(segmentation_node)}' cannot be converted to a binary labelmap; "
            "open it in Segment Editor (which converts it) and save it, then try again."
        )
    return copy


def segmentation_to_label_array(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference_volume_node: slicer.vtkMRMLVolumeNode,
    label_values: Mapping[str, int],
) -> np.ndarray:
    """The segments named by ID in ``label_values`` as one label array [k, j, i] on the reference volume's grid.

    The segmentation's own geometry may differ (another spacing, extent or orientation): each segment is resampled
    (nearest neighbour) onto the reference grid. Voxels of overlapping segments take the value of the segment that
    comes last in ``label_values``. Segments not named are left out (background 0).
    """
    check_same_frame(segmentation_node, reference_volume_node)
    image = reference_volume_node.GetImageData()
    if image is None:
        raise InputError(f"Volume '{node_label(reference_volume_node)}' has no voxels; select another volume.")
    columns, rows, slices = image.GetDimensions()
    reference = _oriented_image((slices, rows, columns), ijk_to_ras(reference_volume_node))
    if not label_values:
        return np.zeros((slices, rows, columns), dtype=np.uint16)
    segmentation = segmentation_node.GetSegmentation()
    missing = [segment_id for segment_id in label_values if segmentation.GetSegment(segment_id) is None]
    if missing:
        raise InputError(
            f"Segmentation '{node_label(segmentation_node)}' has no segment with ID {', '.join(missing)}; "
            "refresh the segment list and try again."
        )
    segment_ids = vtk.vtkStringArray()
    values = vtk.vtkIntArray()
    for segment_id, value in label_values.items():
        if not 0 < int(value) <= MAX_LABEL_VALUE:
            raise InputError(f"Label value {value} is out of range; use values from 1 to {MAX_LABEL_VALUE}.")
        segment_ids.InsertNextValue(segment_id)
        values.InsertNextValue(int(value))
    merged = slicer.vtkOrientedImageData()
    source = _with_binary_labelmap(segmentation_node)
    if not source.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, reference, segment_ids, values
    ):
        raise InputError(
            f"Segmentation '{node_label(segmentation_node)}' could not be resampled onto volume "
            f"'{node_label(reference_volume_node)}'; check that both overlap in space."
        )
    voxels = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars())
    return voxels.reshape(slices, rows, columns).astype(np.uint16)


def label_array_to_segmentation(
    labels: np.ndarray,
    ijk_to_ras_matrix: np.ndarray,
    segments: Sequence[Segment],
    name: str,
    terminologies: Mapping[str, str] | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node, not yet in a scene, with one segment per ``segments`` entry.

    Each segment holds the voxels of ``labels`` equal to its value, keeps its name and colour, and takes the
    terminology that ``terminologies`` gives for its name (matched by :func:`segment_key`), if any. All segments share
    one labelmap on the label array's grid, which is also the node's reference geometry.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"A label array must hold integers (got {labels.dtype}).")
    image = _oriented_image(labels.shape, ijk_to_ras_matrix)
    _image_from_array(labels, image)
    by_key = {segment_key(name): value for name, value in (terminologies or {}).items()}
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(image),
    )
    for described in segments:
        segment = slicer.vtkSegment()
        segment.SetName(described.name)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*described.color)
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(int(described.value))
        if by_key.get(segment_key(described.name)):
            segment.SetTerminology(by_key[segment_key(described.name)])
        segment.AddRepresentation(BINARY_LABELMAP, image)
        segmentation.AddSegment(segment, "")
    return node


def _check_writable(path: Path, suffix: str, overwrite: bool) -> Path:
    path = Path(path)
    if not suffix_of(path, (suffix,)):
        raise InputError(f"'{path}' does not end with {suffix}; choose a file name ending with {suffix}.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another file name or allow overwriting it.")
    return path


def _write_atomically(
    storage_node: slicer.vtkMRMLStorageNode, node: slicer.vtkMRMLNode, path: Path, suffix: str, overwrite: bool
) -> None:
    """Write ``node`` with a storage node kept out of the scene, through a temporary file and a rename."""

    def write(temporary: Path) -> None:
        storage_node.SetFileName(str(temporary))
        if not storage_node.WriteData(node):
            raise InputError(
                f"Could not write '{node_label(node)}' to {path}; check the folder's free space and rights."
            )

    write_file_atomically(path, write, overwrite, suffix)


def save_volume(volume_node: slicer.vtkMRMLVolumeNode, path: str | Path, overwrite: bool = False) -> Path:
    """Write a volume to an ``.nrrd`` file atomically; the node and its scene are not changed."""
    path = _check_writable(Path(path), NRRD_SUFFIX, overwrite)
    if volume_node.GetImageData() is None:
        raise InputError(f"Volume '{node_label(volume_node)}' has no voxels to save.")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(True)
    _write_atomically(storage, volume_node, path, NRRD_SUFFIX, overwrite)
    return path


def save_segmentation(
    segmentation_node: slicer.vtkMRMLSegmentationNode, path: str | Path, overwrite: bool = False
) -> Path:
    """Write a segmentation to a ``.seg.nrrd`` file atomically, with segment names, colours and terminology.

    The labelmap is not cropped: it covers the segmentation's reference geometry (or its segments' extent when it has
    none). A segmentation held as closed surfaces is written as binary labelmaps of a converted copy.
    """
    path = _check_writable(Path(path), SEGMENTATION_SUFFIX, overwrite)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)
    _write_atomically(storage, _with_binary_labelmap(segmentation_node), path, SEGMENTATION_SUFFIX, overwrite)
    return path


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"File {path} does not exist; check the path.")
    return path


def read_volume(path: str | Path, name: str | None = None) -> slicer.vtkMRMLScalarVolumeNode:
    """A new scalar volume node, not yet in a scene, read from an image file (NRRD, NIfTI, MHA...)."""
    path = _existing_file(path)
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise InputError(f"{path} could not be read as a volume; check that it is an image file (e.g. .nrrd).")
    node.SetName(name or file_stem(path))
    return node


def read_segmentation(path: str | Path, name: str | None = None) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node, not yet in a scene, read from a ``.seg.nrrd`` file."""
    path = _existing_file(path)
    scratch = slicer.vtkMRMLScene()  # the reader wants its node in a scene (for display nodes): not the user's
    read = scratch.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(read):
        raise InputError(f"{path} could not be read as a segmentation; check that it is a Slicer .seg.nrrd file.")
    node = slicer.vtkMRMLSegmentationNode()
    node.GetSegmentation().DeepCopy(read.GetSegmentation())
    node.SetName(name or file_stem(path))
    return node


def add_to_scene(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLDisplayableNode) -> slicer.vtkMRMLDisplayableNode:
    """Add a node built here to the scene, with its default display node; returns the node."""
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def replace_segments(
    target_node: slicer.vtkMRMLSegmentationNode, source_node: slicer.vtkMRMLSegmentationNode
) -> slicer.vtkMRMLSegmentationNode:
    """Replace every segment (and the geometry) of ``target_node`` with those of ``source_node``."""
    target_node.GetSegmentation().DeepCopy(source_node.GetSegmentation())
    return target_node
