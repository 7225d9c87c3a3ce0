"""Names for the values of plain label maps (NIfTI, NRRD, MHA), which carry none: ``--label-names 1=anterior``, or
the ``labels`` block of an nnU-Net / Medical Segmentation Decathlon ``dataset.json`` lying beside the data.

A ``dataset.json`` is looked for in the label map's folder and in the folder above it (the MSD layout:
``Task04_Hippocampus/dataset.json`` with ``labelsTr/``). Both layouts of its ``labels`` block are read: MSD's
``{"1": "Anterior"}`` (value to name) and nnU-Net v2's ``{"Anterior": 1}`` (name to value; region lists are left
out). Value 0 is the background and never named.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import InputError
from ..json_input import parse_json
from ..segments import MAX_LABEL_VALUE, segment_key

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


def _distinct_names(names: dict[int, str], where: str) -> dict[int, str]:
    """``names``, or :class:`InputError` when two values have names that match by the one name rule (case and
    surrounding spaces ignored), which would make them one segment across supports and in ``--segments``."""
    values_by_key: dict[str, int] = {}
    for value, name in sorted(names.items()):
        other = values_by_key.setdefault(segment_key(name), value)
        if other != value:
            raise InputError(
                f"{where} names the values {other} and {value} alike ({names[other]!r}, {name!r}; case and surrounding "
                "spaces are ignored when names are matched); give each value its own name."
            )
    return names


def parse_label_names(items: Iterable[str]) -> dict[int, str]:
    """``["1=anterior", "2=posterior"]`` -> ``{1: "anterior", 2: "posterior"}``; :class:`InputError` when an item is
    not ``VALUE=NAME`` with a label value above 0 and a name, or a value is named twice, or two values alike."""
    names: dict[int, str] = {}
    for item in items:
        value_text, separator, name = item.partition("=")
        value = _label_value(value_text, f"--label-names {item}") if separator else -1
        if value <= 0 or not name.strip():
            raise InputError(f"--label-names {item!r}: give VALUE=NAME with a label value above 0, e.g. 1=liver.")
        if value in names:
            raise InputError(f"--label-names names the value {value} twice; give each value one name.")
        names[value] = name.strip()
    return _distinct_names(names, "--label-names")


def read_dataset_json(path: Path) -> dict[int, str]:
    """The label names of a ``dataset.json`` file (see the module docstring); :class:`InputError` if it is unreadable
    or has no ``labels`` block of value/name pairs."""
    fix = "give the label names with --label-names VALUE=NAME instead."
    document = parse_json(path, str(path), fix)
    labels = document.get("labels") if isinstance(document, Mapping) else None
    if not isinstance(labels, Mapping):
        raise InputError(f"{path} has no readable 'labels' block (an object of values and names); {fix}")
    names = {}
    for key, entry in labels.items():
        if isinstance(entry, str):  # MSD: "1": "Anterior"
            names[_label_value(key, str(path))] = entry.strip()
        elif isinstance(entry, int) and not isinstance(entry, bool):  # nnU-Net v2: "Anterior": 1
            names[_label_value(entry, str(path))] = str(key).strip()
    return _distinct_names({value: name for value, name in names.items() if value != 0 and name}, str(path))


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
    return _distinct_names({**beside, **(given or {})}, f"--label-names with {found}" if found else "--label-names")
