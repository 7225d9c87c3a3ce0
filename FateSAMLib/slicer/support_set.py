"""Support sets in the scene: the chosen supports saved once as a folder, and loaded back in a later session.

The folder and its manifest are described, and read back checked, in :mod:`FateSAMLib.support_sets`; saving writes
the nodes' files into a staged folder, and loading adds nodes to the scene only once every file has been read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import slicer

from ..atomic import staged_folder
from ..errors import InputError
from ..formats import NRRD_SUFFIX, SEGMENTATION_SUFFIX
from ..support_sets import MANIFEST_NAME, SupportCase, SupportSet, read_support_set, write_manifest
from .scene import (
    add_to_scene,
    node_label,
    read_segmentation,
    read_volume,
    save_segmentation,
    save_volume,
    segment_infos,
)


def _case_stem(name: str, index: int) -> str:
    """A safe, unique file stem for case ``index`` from its node name."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40]
    return f"case{index:02d}_{safe}" if safe else f"case{index:02d}"


def save_support_set(
    folder: str | Path,
    name: str,
    supports: Sequence[tuple[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLSegmentationNode]],
    model_hints: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> SupportSet:
    """Write the (volume, segmentation) pairs as a support set in ``folder``; the scene is not changed.

    The set is written to a temporary sibling folder and renamed into place, so that a failure leaves nothing
    half-written. An existing ``folder`` is replaced only if ``overwrite`` is true and it is itself a support set.
    """
    folder = Path(folder)
    if not name.strip():
        raise InputError("A support set needs a name; type one (e.g. 'Abdomen MRI, 3 cases').")
    if not supports:
        raise InputError("A support set needs at least one (volume, segmentation) pair; add supports first.")
    if folder.exists():
        if not overwrite:
            raise InputError(f"{folder} exists; choose a new folder name or allow overwriting it.")
        if not (folder / MANIFEST_NAME).is_file():
            raise InputError(f"{folder} exists and is not a support set; choose a new folder name.")
    with staged_folder(folder, overwrite) as staging:
        cases = []
        for index, (volume, segmentation) in enumerate(supports, start=1):
            stem = _case_stem(node_label(volume), index)
            volume_file, segmentation_file = Path(f"{stem}{NRRD_SUFFIX}"), Path(f"{stem}{SEGMENTATION_SUFFIX}")
            save_volume(volume, staging / volume_file)
            save_segmentation(segmentation, staging / segmentation_file)
            segments = tuple(info.name for info in segment_infos(segmentation))
            cases.append(SupportCase(node_label(volume), volume_file, segmentation_file, segments))
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_manifest(staging, name.strip(), created, cases, model_hints or {})
    return read_support_set(folder)


def load_support_set(
    scene: slicer.vtkMRMLScene, folder: str | Path
) -> tuple[SupportSet, list[tuple[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLSegmentationNode]]]:
    """Read a support set and add its volumes and segmentations to the scene; returns the set and the node pairs.

    Every file is read (and each segmentation's segments checked against the manifest) before the scene changes.
    """
    support_set = read_support_set(folder)
    read = []
    for case in support_set.cases:
        volume = read_volume(case.volume, case.name)
        segmentation = read_segmentation(case.segmentation, f"{case.name} segmentation")
        found = [info.name for info in segment_infos(segmentation)]
        if sorted(found) != sorted(case.segments):
            raise InputError(
                f"{case.segmentation} has segments {found}, but the manifest lists {list(case.segments)}; "
                "the files were changed after saving: save the support set again."
            )
        read.append((volume, segmentation))
    pairs = []
    for volume, segmentation in read:
        add_to_scene(scene, volume)
        add_to_scene(scene, segmentation)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        pairs.append((volume, segmentation))
    return support_set, pairs
