"""The one rule for output names chosen from ids (a cohort's case ids): each must be a plain file name that stays in
its output folder, on every common file system.

Standard library only, so that every tier can check a name before it writes. An id is refused when it is empty,
names a path (a separator, a leading dot as in ``..``), holds a control character (NUL among them) or a character
that Windows does not allow, ends with a dot or a space, is a Windows device name (``CON``, ``NUL``, ``COM1``...),
is not text (a file name in another encoding than UTF-8), or is too long for a file name once its format suffix and
the temporary name of an atomic write are added. Two ids that differ only in case (or in Unicode normalisation) name
one file on Windows and macOS, so they count as one (:func:`name_key`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .errors import InputError

MAX_NAME_BYTES = 200
"""The longest id, in UTF-8 bytes: with a format suffix (up to 9) and an atomic write's temporary name (18 more),
a file name stays under the 255 bytes that common file systems allow."""

WINDOWS_FORBIDDEN = '<>:"/\\|?*'
WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)


def output_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an output's file name (before its suffix), as a phrase; None when it can."""
    if not name:
        return "is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not UTF-8 text (a file name in another encoding)"
    if "/" in name or "\\" in name:
        return "holds a path separator: an id names a file in the output folder, not a path"
    if name.startswith("."):
        return "starts with a dot (the folder itself, its parent, or a hidden file)"
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return f"holds the control character {control!r}"
    forbidden = next((c for c in name if c in WINDOWS_FORBIDDEN), None)
    if forbidden is not None:
        return f"holds {forbidden!r}, which Windows does not allow in file names"
    if name[-1] in ". ":
        return "ends with a dot or a space, which Windows drops from file names"
    if name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return "is a device name on Windows (CON, PRN, AUX, NUL, COM1 to COM9, LPT1 to LPT9)"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; at most {MAX_NAME_BYTES} fit in a file name with its suffix"
    return None


def check_output_name(name: str, fix: str) -> None:
    """Refuse (:class:`InputError`) an id that cannot be an output's file name: one message naming it, the problem
    and ``fix`` (what the user changes: e.g. the CSV's 'id' cell, or the file's name)."""
    problem = output_name_problem(name)
    if problem is not None:
        raise InputError(f"The case id {name!r} cannot name an output file: it {problem}. {fix}")


def name_key(name: str) -> str:
    """What two names share when they name one file on a case-insensitive file system (Windows, macOS): the name
    in Unicode normal form C, case folded."""
    return unicodedata.normalize("NFC", name).casefold()


def check_distinct_names(named: Iterable[tuple[str, object]], fix: str) -> None:
    """Refuse (:class:`InputError`) two (name, source) entries whose names are one file (:func:`name_key`)."""
    seen: dict[str, tuple[str, object]] = {}
    for name, source in named:
        key = name_key(name)
        if key in seen:
            other, first = seen[key]
            same = f"the id {name!r}" if other == name else f"the ids {other!r} and {name!r}"
            raise InputError(
                f"Two cases ({first}, {source}) have {same}, which name one output file (names that differ only in "
                f"case are one file on Windows and macOS). {fix}"
            )
        seen[key] = (name, source)
