"""Support sets stored once by content hash, checked by the command line's readers when they arrive."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FateSAMError
from ..method.pipeline import load_support, merge_segments
from ..remote import support_set_id
from ..segments import Segment


@dataclass
class Upload:
    """An uploaded file under its server-chosen name: its digest, format suffix and the client's file name."""

    path: Path
    digest: str
    suffix: str
    client_name: str


@dataclass
class SupportSet:
    """A stored support set: (image, labels) files in its folder, their segments (merged by name, as a run merges
    them), and the jobs using it."""

    id: str
    pairs: list[tuple[Path, Path]]
    segments: list[Segment] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0


def client_message(error: FateSAMError, uploads: list[Upload]) -> FateSAMError:
    """``error`` with the server's file names replaced by the client's, so that the message names the user's file."""
    message = str(error)
    for upload in uploads:  # the whole path first, then a message's file name alone
        message = message.replace(str(upload.path), upload.client_name).replace(upload.path.name, upload.client_name)
    return type(error)(message)


class SupportSetStore:
    """The support sets in ``folder``, by id; one is stored (and checked) once however often it is uploaded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sets: dict[str, SupportSet] = {}
        self._lock = threading.Lock()

    def get(self, set_id: str) -> SupportSet | None:
        """The support set ``set_id`` (marked as used now), or None."""
        with self._lock:
            found = self._sets.get(set_id)
            if found is not None:
                found.last_used = time.monotonic()
            return found

    def add(self, pairs: list[tuple[Upload, Upload]]) -> tuple[SupportSet, bool]:
        """Store uploaded (image, labels) pairs unless an equal set is stored; returns (the set, whether it is new).

        Each pair is read and checked as ``fatesam segment`` reads a support (InputError with the client's file
        names). The uploads are moved into the set's folder, or deleted.
        """
        uploads = [upload for pair in pairs for upload in pair]
        set_id = support_set_id([(i.digest, i.suffix, lab.digest, lab.suffix) for i, lab in pairs])
        try:
            with self._lock:
                if set_id in self._sets:
                    self._sets[set_id].last_used = time.monotonic()
                    return self._sets[set_id], False
            try:
                segments = merge_segments([load_support(image.path, labels.path) for image, labels in pairs])[0]
            except FateSAMError as error:
                raise client_message(error, uploads) from None
            with self._lock:
                if set_id in self._sets:  # stored meanwhile by an equal upload
                    return self._sets[set_id], False
                folder = self.folder / set_id
                folder.mkdir(mode=0o700)
                stored = []
                for index, (image, labels) in enumerate(pairs, start=1):
                    stored.append((folder / f"image-{index}{image.suffix}", folder / f"labels-{index}{labels.suffix}"))
                    image.path.rename(stored[-1][0])
                    labels.path.rename(stored[-1][1])
                names = [[image.client_name, labels.client_name] for image, labels in pairs]
                (folder / "manifest.json").write_text(json.dumps({"id": set_id, "files": names}))
                self._sets[set_id] = SupportSet(set_id, stored, segments)
                return self._sets[set_id], True
        finally:
            for upload in uploads:
                upload.path.unlink(missing_ok=True)

    def acquire(self, support_set: SupportSet) -> None:
        """Keep ``support_set`` while a job uses it."""
        with self._lock:
            support_set.users += 1

    def release(self, support_set: SupportSet) -> None:
        """A job no longer uses ``support_set``."""
        with self._lock:
            support_set.users -= 1
            support_set.last_used = time.monotonic()

    def expire(self, keep_s: float) -> None:
        """Remove the support sets no job uses and none has used for ``keep_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            old = [s for s in self._sets.values() if s.users == 0 and now - s.last_used > keep_s]
            for support_set in old:
                del self._sets[support_set.id]
        for support_set in old:
            shutil.rmtree(self.folder / support_set.id, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sets)
