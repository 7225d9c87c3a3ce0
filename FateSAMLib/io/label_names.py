"""Names for the values of plain label maps (NIfTI, NRRD, MHA), which carry none: ``--label-names 1=anterior``, or
the ``labels`` block of an nnU-Net / Medical Segmentation Decathlon ``dataset.json`` lying beside the data.

A ``dataset.json`` is looked for in the label map's folder and in the folder above it (the MSD layout:
``Task04_Hippocampus/dataset.json`` with ``labelsTr/``). Both layouts of its ``labels`` block are read: MSD's
``{"1": "Anterior"}`` (value to name) and nnU-Net v2's ``{"Anterior": 1}`` (name to value; region lists are left
out). Value 0 is the background and never named.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import InputError
from ..segments import MAX_LABEL_VALUE

DATASET_JSON = "dataset.json"
logger = logging.getLogger(__name__)


def _label_value(text: object, where: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LABEL_VALUE:
        raise InputError(f"{where}: '{text}' is not a label value (a whole number in 0..{MAX_LABEL_VALUE}).")
    return value


def parse_label_names(items: Iterable[str]) -> dict[int, str]:
    """``["1=anterior", "2=posterior"]`` -> ``{1: "anterior", 2: "posterior"}``; :class:`InputError` when an item is
    not ``VALUE=NAME`` with a label value above 0 and a name, or a value is named twice."""
    names: dict[int, str] = {}
    for item in items:
        value_text, separator, name = item.partition("=")
        value = _label_value(value_text, f"--label-names {item}") if separator else -1
        if value <= 0 or not name.strip():
            raise InputError(f"--label-names {item!r}: give VALUE=NAME with a label value above 0, e.g. 1=liver.")
        if value in names:
            raise InputError(f"--label-names names the value {value} twice; give each value one name.")
        names[value] = name.strip()
    return names


def read_dataset_json(path: Path) -> dict[int, str]:
    """The label names of a ``dataset.json`` file (see the module docstring); :class:`InputError` if it is unreadable
    or has no ``labels`` block of value/name pairs."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
        if not isinstance(labels, Mapping):
            raise TypeError("'labels' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} has no readable 'labels' block ({error}).") from None
    names = {}
    for key, entry in labels.items():
        if isinstance(entry, str):  # MSD: "1": "Anterior"
            names[_label_value(key, str(path))] = entry.strip()
        elif isinstance(entry, int) and not isinstance(entry, bool):  # nnU-Net v2: "Anterior": 1
            names[_label_value(entry, str(path))] = str(key).strip()
    return {value: name for value, name in names.items() if value != 0 and name}


def dataset_json_beside(label_map: Path) -> Path | None:
    """The ``dataset.json`` in the label map's folder or the folder above it, if there is one."""
    folder = Path(label_map).resolve().parent
    return next((f / DATASET_JSON for f in (folder, folder.parent) if (f / DATASET_JSON).is_file()), None)


def label_names_for(label_map: Path, given: Mapping[int, str] | None = None) -> dict[int, str]:
    """The names of a plain label map's values: those of a ``dataset.json`` beside it, overridden by ``given``.

    A ``dataset.json`` that cannot be read as one (another tool's file of that name) is warned about and left out."""
    found = dataset_json_beside(label_map)
    try:
        beside = read_dataset_json(found) if found else {}
    except InputError as error:
        logger.warning("%s Its label names are not used: fix it, or name the labels with --label-names.", error)
        beside = {}
    return {**beside, **(given or {})}
