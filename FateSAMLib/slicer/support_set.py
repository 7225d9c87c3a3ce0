"""Support sets: labelled examples saved once as a folder and reused in later sessions.

A support set is a folder with one ``.nrrd`` volume and one ``.seg.nrrd`` segmentation per case and a JSON manifest
(``fatesam-support-set.json``): its name, when it was created, model hints (the settings it worked well with), and
per case the two file names, the case's name and its segment names. Reading checks the manifest and the files and
names what is wrong; loading adds nodes to the scene only once every file has been read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import slicer

from ..atomic import staged_folder
from ..errors import InputError
from ..formats import NRRD_SUFFIX, SEGMENTATION_SUFFIX
from .scene import (
    add_to_scene,
    node_label,
    read_segmentation,
    read_volume,
    save_segmentation,
    save_volume,
    segment_infos,
)

MANIFEST_NAME = "fatesam-support-set.json"
FORMAT = "fatesam-support-set"
VERSION = 1


@dataclass(frozen=True)
class SupportCase:
    """One labelled case of a support set: its name, its two files (inside the set's folder) and segment names."""

    name: str
    volume: Path
    segmentation: Path
    segments: tuple[str, ...]


@dataclass(frozen=True)
class SupportSet:
    """A support set as described by its manifest."""

    name: str
    folder: Path
    created: str
    cases: tuple[SupportCase, ...]
    model_hints: dict = field(default_factory=dict)


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
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "name": name.strip(),
            "created": created,
            "model_hints": dict(model_hints or {}),
            "cases": [
                {
                    "name": case.name,
                    "volume": case.volume.name,
                    "segmentation": case.segmentation.name,
                    "segments": list(case.segments),
                }
                for case in cases
            ],
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return read_support_set(folder)


def _manifest_error(path: Path, problem: str) -> InputError:
    return InputError(f"The support set manifest {path} {problem}; save the support set again from FateSAM.")


def _case_file(folder: Path, manifest_path: Path, value: object, what: str) -> Path:
    if not isinstance(value, str) or not value or Path(value).name != value:
        raise _manifest_error(manifest_path, f"names the {what} file {value!r}, which is not a plain file name")
    path = folder / value
    if not path.is_file():
        raise InputError(f"The support set in {folder} lists {value}, which is missing; copy the whole folder again.")
    return path


def read_support_set(folder: str | Path) -> SupportSet:
    """The support set in ``folder``, after checking its manifest and that every file it lists is there."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{folder} is not a FateSAM support set (no {MANIFEST_NAME}); choose the set's folder.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _manifest_error(path, f"cannot be read ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _manifest_error(path, f"is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise InputError(
            f"The support set {folder} has format version {manifest.get('version')!r}; this FateSAM reads version "
            f"{VERSION}. Update FateSAM, or save the set again."
        )
    name, cases = manifest.get("name"), manifest.get("cases")
    if not isinstance(name, str) or not name:
        raise _manifest_error(path, "has no name")
    if not isinstance(cases, list) or not cases:
        raise _manifest_error(path, "lists no cases")
    hints = manifest.get("model_hints", {})
    if not isinstance(hints, dict):
        raise _manifest_error(path, "has model hints that are not a JSON object")
    read_cases = []
    for index, case in enumerate(cases, start=1):
        if not isinstance(case, dict):
            raise _manifest_error(path, f"has case {index} that is not a JSON object")
        segments = case.get("segments", [])
        if not isinstance(segments, list) or not all(isinstance(segment, str) for segment in segments):
            raise _manifest_error(path, f"has case {index} whose segments are not a list of names")
        read_cases.append(
            SupportCase(
                name=str(case.get("name") or f"case {index}"),
                volume=_case_file(folder, path, case.get("volume"), "volume"),
                segmentation=_case_file(folder, path, case.get("segmentation"), "segmentation"),
                segments=tuple(segments),
            )
        )
    return SupportSet(name, folder, str(manifest.get("created", "")), tuple(read_cases), hints)


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
