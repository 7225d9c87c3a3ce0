"""Saved support sets described: a folder of labelled cases and its JSON manifest, written and read back checked.

A support set is a folder with one volume file and one segmentation file per case (the Slicer module writes
``.nrrd`` and ``.seg.nrrd``) and a manifest (``fatesam-support-set.json``): its name, when it was created, model
hints (the settings it worked well with), and per case the two file names, the case's name and its segment names.
Reading checks the manifest and that every file it lists is in the folder, and names what is wrong. Standard
library only: the Slicer module (``slicer.support_set``) and the command line (``--support-set``) both read it here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .json_input import parse_json

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

    def pairs(self) -> list[tuple[Path, Path]]:
        """The (volume, segmentation) files of every case, in the manifest's order."""
        return [(case.volume, case.segmentation) for case in self.cases]


def write_manifest(
    folder: Path, name: str, created: str, cases: Sequence[SupportCase], model_hints: Mapping[str, object]
) -> None:
    """Write the manifest of ``cases`` (whose files are already in ``folder``) into ``folder``."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "created": created,
        "model_hints": dict(model_hints),
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
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _manifest_error(path: Path, problem: str) -> InputError:
    return InputError(f"The support set manifest {path} {problem}; save the support set again from FateSAM.")


def _case_file(folder: Path, manifest_path: Path, value: object, what: str) -> Path:
    """The file a case names, which must be a plain file name (no folder, so never outside the set) that exists."""
    if not isinstance(value, str) or value in ("", ".", "..") or Path(value).name != value:
        raise _manifest_error(
            manifest_path, f"names the {what} file {value!r}, which is not a plain file name in the set's folder"
        )
    path = folder / value
    if not path.is_file():
        raise InputError(f"The support set in {folder} lists {value}, which is missing; copy the whole folder again.")
    return path


def read_support_set(folder: str | Path) -> SupportSet:
    """The support set in ``folder``, after checking its manifest and that every file it lists is there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"The support set folder {folder} does not exist or is not a folder; give the folder that holds "
            f"{MANIFEST_NAME}."
        )
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{folder} is not a FateSAM support set (no {MANIFEST_NAME}); choose the set's folder.")
    manifest = parse_json(path, f"The support set manifest {path}", "save the support set again from FateSAM.")
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
