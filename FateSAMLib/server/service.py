"""The state of a running server: its private folder, the support-set store, the warm predictors, the job queue and
the expiry sweeper.

The jobs share one feature cache, keyed by content: it keeps the support sets' features and also those of every
query slice, so that a refine of a query the server has seen encodes nothing. It holds features derived from
patient images, so, like every file the server writes while it runs, its files are the server user's only (mode
0600, folders 0700, in the private folder), and each is removed ``keep_results_s`` after it was written (as a
finished job's files are after it ended; a support set's features are then encoded again when next used). Shutting
down cancels every job and deletes the folder: nothing the clients sent stays on the server; a killed server's
folder is removed by the next server that starts in the same work root (``work_folder``). Each uploaded file's
header must promise its own voxels, at most ``max_voxels`` (HTTP 422, before anything else reads it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ..errors import FateSAMError, InputError
from ..io.integrity import check_header
from ..options import RunSettings
from ..protocol import CHUNK, UPLOAD_IMAGE_SUFFIXES, UPLOAD_LABEL_SUFFIXES, upload_suffix
from .jobs import LOG, JobQueue, new_job_id
from .limits import DEFAULT_MAX_VOXELS, DEFAULT_UPLOAD_TIMEOUT_S
from .predictors import WarmPredictors
from .store import SupportSetStore, Upload, client_message
from .users import Users
from .work_folder import WorkFolder

PRIVATE_UMASK = 0o077
"""While a server runs, what it writes (results, statistics, cached features) is readable by its user only."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the server runs. ``settings`` are the run settings every job starts from (a job may change those of
    :data:`~FateSAMLib.protocol.JOB_SETTINGS`). ``users`` (named users) or ``token`` (one user) say who may use it;
    neither: no token is needed (``--no-auth``, loopback only). At most ``max_models`` models are kept loaded."""

    settings: RunSettings = RunSettings()
    token: str | None = None
    users: Users | None = None
    max_upload_bytes: int = 2 * 1024**3
    workers: int = 1
    queue_size: int = 8
    jobs_per_user: int = 8
    support_sets_per_user: int = 16
    max_models: int = 2
    keep_results_s: float = 3600.0
    keep_support_sets_s: float = 86400.0
    abandon_after_s: float = 600.0
    work_dir: Path | None = None
    sweep_interval_s: float = 10.0
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S
    max_voxels: int = DEFAULT_MAX_VOXELS

    @property
    def access(self) -> Users:
        """Who may use the server: the named users, or the single token's user."""
        return self.users if self.users is not None else Users.single(self.token)


def private_folder(path: Path) -> Path:
    """Make the folder ``path``, readable by the server's user only."""
    path.mkdir(mode=0o700)
    return path


class Service:
    """The server's state; :meth:`close` cancels every job and deletes every file the clients sent."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.work_folder = WorkFolder(config.work_dir)
        for leftover in self.work_folder.removed:
            LOG.warning("Removed %s, the files of a server that was stopped without closing.", leftover)
        self.folder = self.work_folder.path
        self.uploads = private_folder(self.folder / "uploads")
        self.jobs_folder = private_folder(self.folder / "jobs")
        self.features = private_folder(self.folder / "features")
        self.store = SupportSetStore(
            private_folder(self.folder / "support-sets"), config.support_sets_per_user, config.keep_support_sets_s
        )
        self._umask = os.umask(PRIVATE_UMASK)  # restored by close()
        self.settings = dataclasses.replace(config.settings, feature_cache=self.features)
        self.predictors = WarmPredictors(self.settings, config.max_models)
        self.queue = JobQueue(self.store, self.predictors, config.workers, config.queue_size, config.jobs_per_user)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="fatesam-expiry", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            self.queue.expire(self.config.keep_results_s, self.config.abandon_after_s)
            self.store.expire()
            self.expire_features(self.config.keep_results_s)

    def expire_features(self, keep_s: float) -> None:
        """Remove the cached features written more than ``keep_s`` seconds ago (those of queries among them)."""
        oldest = time.time() - keep_s
        for path in self.features.iterdir():
            with contextlib.suppress(OSError):  # a file being written or removed meanwhile: the next sweep sees it
                if path.stat().st_mtime < oldest:
                    path.unlink()

    def close(self) -> None:
        """Cancel every job, stop the workers and delete everything the clients sent."""
        self._stop.set()
        self.queue.close()
        self.work_folder.close()
        os.umask(self._umask)

    def receive(self, stream: BinaryIO, name: str, suffixes: tuple[str, ...], folder: Path | None = None) -> Upload:
        """Copy an upload (its client-side file ``name``) to a server-chosen name (only its format suffix comes from
        the client), hashing it, and check its header: it must hold its own voxels, at most ``max_voxels`` of them
        (InputError, nothing kept)."""
        name = Path(name or "").name  # only ever shown in messages
        suffix = upload_suffix(name, suffixes)
        path = (folder or self.uploads) / f"{new_job_id()}{suffix}"
        digest = hashlib.sha256()
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        received = Upload(path, digest.hexdigest(), suffix, name)
        try:
            check_header(path, own_data_only=True, max_voxels=self.config.max_voxels)
        except FateSAMError as error:
            path.unlink()
            raise client_message(error, [received]) from None
        return received

    def receive_pairs(
        self, images: list[tuple[BinaryIO, str]], labels: list[tuple[BinaryIO, str]]
    ) -> list[tuple[Upload, Upload]]:
        """Uploaded (image, labels) pairs (each a stream and its client-side name), in order."""
        if not images or len(images) != len(labels):
            raise InputError(
                f"A support set needs as many label files as images (got {len(images)} and {len(labels)}); "
                "upload them as pairs."
            )
        received: list[Upload] = []
        try:
            for image, label in zip(images, labels, strict=True):
                received.append(self.receive(*image, UPLOAD_IMAGE_SUFFIXES))
                received.append(self.receive(*label, UPLOAD_LABEL_SUFFIXES))
        except BaseException:
            for upload in received:
                upload.path.unlink(missing_ok=True)
            raise
        return list(zip(received[::2], received[1::2], strict=True))
