"""Output files and folders, all or none: checked before a run, written to temporary siblings, then published
without replacing a file or folder that appeared meanwhile (unless the user allows overwriting). Files get the usual,
umask-respecting permissions. Standard library only, so that every tier (the Slicer one too) writes through it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from .errors import InputError, ResourceError
from .formats import check_file_name


def _exists_error(path: Path) -> InputError:
    return InputError(f"{path} exists; pass --overwrite or choose another path.")


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or the closest of its parents that exists (the folder a new file or folder goes into)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def check_output_location(path: str | Path, overwrite: bool) -> None:
    """Refuse (:class:`InputError`) an output path that cannot be written, before any work is done.

    A path that is not UTF-8 text (see :func:`~FateSAMLib.formats.check_file_name`), a folder, an existing file
    without ``overwrite``, a parent path that is a file, and a folder in which no file can be created (checked by
    creating and removing a probe file in the nearest existing folder) are refused.
    """
    check_file_name(path)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name in it, e.g. {path / 'labels.nii.gz'}.")
    if os.path.lexists(path) and not overwrite:
        raise _exists_error(path)
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise InputError(f"Cannot write {path}: {folder} is a file, not a folder. Choose another output folder.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".fatesam-probe.", dir=folder)
    except OSError as error:
        raise InputError(
            f"Cannot write {path}: no file can be created in {folder} ({_reason(error)}). "
            "Choose a folder you can write to."
        ) from None
    os.close(handle)
    os.unlink(probe)


def check_outputs(paths: Iterable[str | Path | None], overwrite: bool) -> None:
    """Refuse, before any work, outputs that cannot be written or that name one file twice; None entries are skipped.

    Each path is checked by :func:`check_output_location`."""
    seen: dict[Path, Path] = {}
    for path in (Path(p) for p in paths if p is not None):
        check_output_location(path, overwrite)
        other = seen.setdefault(path.resolve(), path)
        if other is not path:
            raise InputError(f"The output paths {other} and {path} name the same file; give each its own.")


def _reason(error: Exception) -> str:
    """The gist of an OS or writer error: its OS message, else the last line of its text."""
    text = getattr(error, "strerror", None) or str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A new hidden name next to ``path`` for its content while it is written; nothing is created.

    ``suffix`` (which ``path`` ends with, e.g. ``.nii.gz``) also ends the temporary name, for writers that choose the
    format by the file name."""
    stem = path.name[: len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    return path.parent / f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}"


def publish_new(temporary: Path, path: Path) -> bool:
    """Rename ``temporary`` to ``path`` unless a file of that name exists by then; whether it was renamed.

    An existing file is never replaced, and ``temporary`` is then left as it was."""
    try:
        os.link(temporary, path)  # fails if ``path`` exists: exclusive creation with the complete content
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: rename, which on Windows also refuses an existing file
        if os.path.lexists(path):
            return False
        try:
            os.rename(temporary, path)
        except FileExistsError:
            return False
        return True
    os.unlink(temporary)
    return True


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    """Give ``temporary`` its final name; without ``overwrite``, never replace a file that exists by then."""
    if overwrite:
        os.replace(temporary, path)
    elif not publish_new(temporary, path):
        raise _exists_error(path)


class OutputFiles:
    """The files of one run, written all or none.

    :meth:`add` writes each file to a temporary file next to it (with the usual, umask-respecting permissions),
    creating missing folders; leaving the ``with`` block without an error publishes them all (:meth:`publish`); on an
    error every temporary file is removed, so is every file this run had already published, and so is every folder
    it created that is still empty.
    """

    def __init__(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # folders made for the outputs, parents first

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.publish()
        else:
            self._discard()

    def add(self, path: str | Path, write: Callable[[Path], None], suffix: str = "") -> None:
        """Write ``path``'s content now, through ``write(temporary_path)``; ``suffix`` ends the temporary name.

        A path that is not UTF-8 text is refused first (:func:`~FateSAMLib.formats.check_file_name`)."""
        check_file_name(path)
        path = Path(path)
        if os.path.lexists(path) and not self.overwrite:
            raise _exists_error(path)
        missing = [folder for folder in (path.parent, *path.parent.parents) if not os.path.lexists(folder)]
        try:
            for folder in reversed(missing):
                try:
                    folder.mkdir()
                except FileExistsError:  # made meanwhile by someone else: not this run's to remove
                    continue
                self._created.append(folder)
        except OSError as error:
            self._remove_created_folders()
            raise InputError(f"Cannot create the folder of {path}: {_reason(error)}.") from None
        temporary = temporary_sibling(path, suffix)
        self._staged.append((temporary, path))
        try:
            write(temporary)
        except (OSError, RuntimeError) as error:  # SimpleITK reports a failed write as a RuntimeError
            raise ResourceError(
                f"Could not write {path}: {_reason(error)}. "
                "Check that the disk has free space and that the folder can be written to."
            ) from None

    def publish(self) -> None:
        """Give every written file its final name; if one cannot be published, remove those that were."""
        published: list[Path] = []
        try:
            for temporary, path in self._staged:
                _publish(temporary, path, self.overwrite)
                published.append(path)
        except BaseException:
            for path in published:
                path.unlink(missing_ok=True)
            self._discard()
            raise
        self._staged.clear()
        self._created.clear()

    def _discard(self) -> None:
        """Remove every temporary file, then every folder this run created that is empty (nothing was published)."""
        for temporary, _path in self._staged:
            temporary.unlink(missing_ok=True)
        self._staged.clear()
        self._remove_created_folders()

    def _remove_created_folders(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:  # something else was put in it meanwhile: it is not ours to remove
                break
        self._created.clear()


def moved_from(written: Path) -> Callable[[Path], None]:
    """The :meth:`OutputFiles.add` writer of a file written elsewhere already (e.g. by a cohort's workers): it is
    moved to its temporary name, then published with the others."""

    def move(target: Path) -> None:
        shutil.move(written, target)

    return move


def write_file_atomically(
    path: str | Path, write: Callable[[Path], None], overwrite: bool = False, suffix: str = ""
) -> Path:
    """Write one file all or nothing (see :class:`OutputFiles`); returns its path."""
    with OutputFiles(overwrite) as outputs:
        outputs.add(path, write, suffix)
    return Path(path)


def _publish_new_folder(staging: Path, folder: Path) -> bool:
    """Rename the folder ``staging`` to ``folder`` unless something of that name exists by then; whether it was."""
    try:
        folder.mkdir()  # claims the name: fails if anything has it by now
    except FileExistsError:
        return False
    try:
        os.replace(staging, folder)  # POSIX: replaces the empty folder just made, and only it
    except OSError:  # Windows renames no folder onto another: give the name back, then rename (refuses an existing)
        folder.rmdir()
        try:
            os.rename(staging, folder)
        except FileExistsError:
            return False
    return True


def _replace_folder(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is moved aside first, deleted once replaced, and
    put back if the rename fails."""
    if _publish_new_folder(staging, folder):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))  # private, deleted below
    try:
        os.replace(folder, aside / folder.name)
        try:
            os.replace(staging, folder)
        except BaseException:
            os.replace(aside / folder.name, folder)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def staged_folder(folder: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A new, empty sibling folder to fill; leaving the ``with`` block without an error renames it to ``folder``.

    On an error the staged folder is removed and ``folder`` is untouched. Without ``overwrite`` an existing
    ``folder`` (also one that appeared meanwhile) is never replaced (:class:`InputError`); with it, it is replaced
    as a whole. The staged folder is made with the usual, umask-respecting permissions, as are missing parents.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not overwrite:
        raise _exists_error(folder)
    staging = temporary_sibling(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as error:
        raise InputError(
            f"Cannot create the folder {folder}: {_reason(error)}. Choose a folder you can write to."
        ) from None
    try:
        yield staging
        if overwrite:
            _replace_folder(staging, folder)
        elif not _publish_new_folder(staging, folder):
            raise _exists_error(folder)
    except OSError as error:
        raise ResourceError(
            f"Could not write {folder}: {_reason(error)}. "
            "Check that the disk has free space and that the folder can be written to."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def strict_json(data: object) -> object:
    """``data`` with every NaN or infinite float replaced by None, so that it is valid JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data


def json_writer(data: object) -> Callable[[Path], None]:
    """What writes ``data`` as strict JSON (non-finite numbers as null, see :func:`strict_json`) to a given file."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)

    def write(target: Path) -> None:
        with open(target, "x") as stream:
            stream.write(text)

    return write


def write_json_atomic(path: Path, data: object, overwrite: bool = False) -> None:
    """Write ``data`` as strict JSON to ``path``, all or nothing; an existing file is replaced only with overwrite."""
    write_file_atomically(path, json_writer(data), overwrite)
