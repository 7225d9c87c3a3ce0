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
from ..protocol import support_set_id
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
    """A stored support set: (image, labels) files in its folder, the users who uploaded it (only they see it), and
    how many jobs use it."""

    id: str
    pairs: list[tuple[Path, Path]]
    segments: list[Segment] = field(default_factory=list)  # across its supports, matched by name
    owners: set[str] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0


class TooManySupportSets(FateSAMError):
    """A user holds as many support sets as the server allows each user."""


def client_message(error: FateSAMError, uploads: list[Upload]) -> FateSAMError:
    """``error`` with the server's file names replaced by the client's, so that the message names the user's file."""
    message = str(error)
    for upload in uploads:  # the whole path first, then a message's file name alone
        message = message.replace(str(upload.path), upload.client_name).replace(upload.path.name, upload.client_name)
    return type(error)(message)


class SupportSetStore:
    """The support sets in ``folder``, by id; one is stored (and checked) once however often it is uploaded, and is
    seen only by the users who uploaded it, each holding at most ``per_user`` sets."""

    def __init__(self, folder: Path, per_user: int = 16, keep_s: float = 86400.0) -> None:
        self.folder = folder
        self.per_user = per_user
        self.keep_s = keep_s
        self._sets: dict[str, SupportSet] = {}
        self._lock = threading.Lock()

    def get(self, set_id: str, owner: str) -> SupportSet | None:
        """The support set ``set_id`` of user ``owner`` (marked as used now), or None (also another user's)."""
        with self._lock:
            found = self._sets.get(set_id)
            if found is None or owner not in found.owners:
                return None
            found.last_used = time.monotonic()
            return found

    def _own(self, support_set: SupportSet, owner: str) -> SupportSet:
        """Give ``owner`` the set (under the lock); TooManySupportSets when they hold ``per_user`` others."""
        if owner not in support_set.owners:
            held = sum(owner in other.owners for other in self._sets.values())
            if held >= self.per_user:
                raise TooManySupportSets(
                    f"You hold {held} support sets on this server, its limit per user; use one of them, or wait "
                    f"until one has gone unused for {self.keep_s / 3600:g} hours (it is then deleted)."
                )
            support_set.owners.add(owner)
        support_set.last_used = time.monotonic()
        return support_set

    def add(self, pairs: list[tuple[Upload, Upload]], owner: str) -> tuple[SupportSet, bool]:
        """Store uploaded (image, labels) pairs for user ``owner`` unless an equal set is stored (it is then theirs
        too); returns (the set, whether it is new). TooManySupportSets when they hold too many.

        Each pair is read and checked as ``fatesam segment`` reads a support (InputError with the client's file
        names). The uploads are moved into the set's folder, or deleted.
        """
        uploads = [upload for pair in pairs for upload in pair]
        set_id = support_set_id([(i.digest, i.suffix, lab.digest, lab.suffix) for i, lab in pairs])
        try:
            with self._lock:
                if set_id in self._sets:
                    return self._own(self._sets[set_id], owner), False
                self._own(SupportSet(set_id, []), owner)  # refused now if the user holds too many
            try:
                segments, _ = merge_segments([load_support(image.path, labels.path) for image, labels in pairs])
            except FateSAMError as error:
                raise client_message(error, uploads) from None
            with self._lock:
                if set_id in self._sets:  # stored meanwhile by an equal upload
                    return self._own(self._sets[set_id], owner), False
                folder = self.folder / set_id
                folder.mkdir(mode=0o700)
                stored = []
                for index, (image, labels) in enumerate(pairs, start=1):
                    stored.append((folder / f"image-{index}{image.suffix}", folder / f"labels-{index}{labels.suffix}"))
                    image.path.rename(stored[-1][0])
                    labels.path.rename(stored[-1][1])
                names = [[image.client_name, labels.client_name] for image, labels in pairs]
                (folder / "manifest.json").write_text(json.dumps({"id": set_id, "files": names}))
                self._sets[set_id] = self._own(SupportSet(set_id, stored, segments), owner)
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

    def expire(self) -> None:
        """Remove the support sets no job uses and none has used for ``keep_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            old = [s for s in self._sets.values() if s.users == 0 and now - s.last_used > self.keep_s]
            for support_set in old:
                del self._sets[support_set.id]
        for support_set in old:
            shutil.rmtree(self.folder / support_set.id, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sets)
