"""The files of a Slicer run: the scene's inputs exported to its folder, the engine's result imported back.

Volumes are exported as NRRD, each support's chosen segments as one ``.seg.nrrd`` label map on its volume's grid
whose label values are assigned by segment name; nothing in the scene changes until the result is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from ..errors import InputError
from ..formats import NRRD_SUFFIX, SEGMENTATION_SUFFIX
from ..segments import Segment, segment_key
from .apply_result import KeptSegments, apply_result
from .plan import SupportPair
from .scene import (
    add_to_scene,
    check_same_frame,
    ijk_to_ras,
    label_array_to_segmentation,
    node_label,
    read_segmentation,
    save_segmentation,
    save_volume,
    segment_infos,
    segmentation_to_label_array,
)

RESULT_SUFFIX = " FateSAM"


@dataclass(frozen=True)
class RunInputs:
    """The files of one run inside its temporary folder."""

    supports: list[tuple[Path, Path]]
    query: Path
    output: Path
    stats: Path
    warnings: list[str] = field(default_factory=list)
    pairs: list[SupportPair] = field(default_factory=list)  # the supports exported, in order (as the stats number)


def export_inputs(
    folder: Path, target: slicer.vtkMRMLScalarVolumeNode, supports: Sequence[SupportPair], segments: Sequence[Segment]
) -> RunInputs:
    """Write the target and the supports into ``folder``; nothing in the scene changes.

    Each support's segments are merged into one label map on its volume's grid, with the values of ``segments``
    (matched by name); empty segments are left out, and so is a support with none of them (with a warning).
    """
    if not supports:
        raise InputError("No support: add at least one (volume, segmentation) pair that shows the structures.")
    by_key = {segment_key(segment.name): segment for segment in segments}
    exported, warnings, pairs = [], [], []
    for index, pair in enumerate(supports, start=1):
        check_same_frame(pair.segmentation, pair.volume)
        chosen = [info for info in segment_infos(pair.segmentation) if segment_key(info.name) in by_key]
        values = {info.segment_id: by_key[segment_key(info.name)].value for info in chosen}
        labels = segmentation_to_label_array(pair.segmentation, pair.volume, values)
        present = [segment for segment in segments if (labels == segment.value).any()]
        if not present:
            warnings.append(f"Support '{node_label(pair.segmentation)}' has none of the chosen segments; left out.")
            continue
        label_node = label_array_to_segmentation(labels, ijk_to_ras(pair.volume), present, f"support {index}")
        exported.append(
            (
                save_volume(pair.volume, folder / f"support-{index}{NRRD_SUFFIX}"),
                save_segmentation(label_node, folder / f"support-{index}{SEGMENTATION_SUFFIX}"),
            )
        )
        pairs.append(pair)
    if not exported:
        raise InputError("None of the supports has the chosen segments; check other segments or add supports.")
    query = save_volume(target, folder / f"query{NRRD_SUFFIX}")
    result, stats = folder / f"result{SEGMENTATION_SUFFIX}", folder / "stats.json"
    return RunInputs(exported, query, result, stats, warnings, pairs)


def import_result(
    scene: slicer.vtkMRMLScene,
    result_path: Path,
    target: slicer.vtkMRMLScalarVolumeNode,
    output_node: slicer.vtkMRMLSegmentationNode | None = None,
    terminologies: Mapping[str, str] | None = None,
    keeping: KeptSegments | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """Put the engine's ``.seg.nrrd`` into ``output_node``, or a new node "<target> FateSAM"; returns the node.

    The result keeps its segment names and colours, takes the supports' terminology by name, lies under the target's
    parent transform and refers to the target as its reference geometry. The scene changes only once the file read.
    In ``output_node`` only the run's segments are replaced, as ``keeping`` says (:func:`apply_result`: locked and
    hand-edited segments are kept; its ``warnings`` say which).
    """
    if not scene.IsNodePresent(target):
        raise InputError("The target volume was removed from the scene during the run; select it again and rerun.")
    result = read_segmentation(result_path)
    by_key = {segment_key(name): term for name, term in (terminologies or {}).items()}
    segmentation = result.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if by_key.get(segment_key(segment.GetName())):
            segment.SetTerminology(by_key[segment_key(segment.GetName())])
    if output_node is None:
        result.SetName(scene.GenerateUniqueName(f"{node_label(target)}{RESULT_SUFFIX}"))
        output_node = add_to_scene(scene, result)
    else:
        keeping = keeping or KeptSegments()
        keeping.warnings += apply_result(output_node, result, keeping.locked, keeping.untouched, keeping.replace_edited)
    output_node.SetReferenceImageGeometryParameterFromVolumeNode(target)
    output_node.SetAndObserveTransformNodeID(target.GetTransformNodeID())
    return output_node
