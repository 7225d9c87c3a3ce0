"""The cases of a cohort: a folder of volumes (files or DICOM series folders) or a CSV, with optional references."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, LABEL_SUFFIXES, file_stem, suffix_of
from ..names import check_distinct_names, check_output_name


@dataclass(frozen=True)
class Case:
    """One query of a cohort: its id (the output's file name), its volume and, optionally, its reference labels."""

    id: str
    query: Path
    reference: Path | None = None


def case_id(path: Path) -> str:
    """A volume's id: its file name without the image suffix (a DICOM folder's name as it is).

    A name in another encoding than UTF-8 gets U+FFFD for each byte that is not UTF-8, so that its case can be
    recorded (and refused by the reader) like any other."""
    name = file_stem(path, IMAGE_SUFFIXES) if suffix_of(path, IMAGE_SUFFIXES) else path.name
    return os.fsencode(name).decode("utf-8", errors="replace")


def _folder_cases(folder: Path) -> list[Case]:
    cases = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or suffix_of(entry, IMAGE_SUFFIXES):
            cases.append(Case(case_id(entry), entry))
    return cases


def _csv_cases(path: Path) -> list[Case]:
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} cannot be read as a CSV file ({error}); save it as UTF-8 CSV.") from None
    if not rows or "path" not in rows[0]:
        raise InputError(f"{path} needs a header row with a 'path' column (optional: 'id', 'reference').")
    cases = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("path") or "").strip():
            raise InputError(f"{path}, line {line}: the 'path' cell is empty; give the query volume's path.")
        query = path.parent / row["path"].strip()  # relative paths are relative to the CSV's folder
        reference = (row.get("reference") or "").strip()
        ident = (row.get("id") or "").strip() or case_id(query)
        cases.append(Case(ident, query, path.parent / reference if reference else None))
    return cases


def _reference_in(folder: Path, case: Case) -> Path | None:
    return next((folder / f"{case.id}{s}" for s in LABEL_SUFFIXES if (folder / f"{case.id}{s}").is_file()), None)


def find_cases(queries: str | Path, references: str | Path | None = None) -> list[Case]:
    """The cases of ``queries`` (a folder of volumes or DICOM series folders, or a CSV with a ``path`` column and
    optional ``id`` and ``reference`` columns), each given its ``<id>.*`` reference from ``references`` when set.

    Raises :class:`InputError` for a missing source, no case, an id that cannot name an output file or two that name
    one (:mod:`FateSAMLib.names`), or a missing reference.
    """
    source = Path(queries)
    if source.is_dir():
        cases = _folder_cases(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        cases = _csv_cases(source)
    else:
        raise InputError(f"--queries {source}: give a folder of volumes or a .csv file with a 'path' column.")
    if not cases:
        raise InputError(f"{source} holds no query volume ({', '.join(IMAGE_SUFFIXES)} or DICOM series folders).")
    in_csv = source.is_file()
    for case in cases:
        check_output_name(case.id, "Give it another id in the CSV's 'id' column." if in_csv else "Rename it.")
    fix = "Give one of them another id in the CSV's 'id' column." if in_csv else "Rename one of them."
    check_distinct_names(((case.id, case.query) for case in cases), fix)
    if references is None:
        return cases
    folder = Path(references)
    if not folder.is_dir():
        raise InputError(f"--references {folder} is not a folder; give the folder of <case id>.nii.gz references.")
    found = [Case(c.id, c.query, c.reference or _reference_in(folder, c)) for c in cases]
    missing = [c.id for c in found if c.reference is None]
    if missing:
        raise InputError(
            f"{folder} has no reference for the cases {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            "name each <case id>.nii.gz (or .nrrd, .mha, .seg.nrrd), or leave out --references."
        )
    return found
