"""The FastAPI application of ``fatesam serve``: routes under ``/v1``, the token check, upload limits, the lifecycle.

Every route but ``/v1/health`` (and the OpenAPI docs) needs ``Authorization: Bearer TOKEN``, checked before any
byte of the body is read. Uploads get server-chosen names in a private folder (0700), count against
``max_upload_bytes`` while they stream (HTTP 413, nothing kept) and are cut when they stall (HTTP 408). Each
uploaded file's header must promise its own voxels, at most ``max_voxels`` (HTTP 422, before anything else reads
it). A job's inputs are read by the same readers as ``fatesam segment`` and refused with its messages (HTTP 422);
JSON form fields are bounded (``json_input``); a full queue answers 503 with Retry-After. A job may
be a refine: the query's labels with corrected slices (``corrections``), which slices (``corrected_slices``) and,
for ``["auto"]``, the result they were edited from (``previous``), checked as the command line checks them.

The jobs share one feature cache, keyed by content: it keeps the support sets' features and also those of every
query slice, so that a refine of a query the server has seen encodes nothing. It holds features derived from
patient images, so, like every file the server writes while it runs, its files are the server user's only (mode
0600, folders 0700, in the private folder), and each is removed ``keep_results_s`` after it was written (as a
finished job's files are after it ended; a support set's features are then encoded again when next used). Shutting
down cancels every job and deletes the folder: nothing the clients sent stays on the server; a killed server's
folder is removed by the next server that starts in the same work root (``work_folder``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..cli.arguments import settings_from_args
from ..cli.corrections import corrections_from_args
from ..cli.main import build_parser
from ..errors import FateSAMError, InputError, ResourceError
from ..formats import OUTPUT_SUFFIXES, SEGMENTATION_SUFFIX
from ..io.images import read_image
from ..io.integrity import check_header
from ..json_input import parse_json
from ..method.pipeline import select_segments
from ..models.registry import model_names
from ..remote import (
    API,
    CHUNK,
    JOB_SETTINGS,
    UPLOAD_IMAGE_SUFFIXES,
    UPLOAD_LABEL_SUFFIXES,
    option_values,
    settings_arguments,
)
from ..remote import upload_suffix as _upload_suffix
from .jobs import LOG, Job, JobQueue, QueueFull, new_job_id
from .limits import DEFAULT_MAX_VOXELS, DEFAULT_UPLOAD_TIMEOUT_S, SECONDS_PER_UPLOADED_MB
from .store import SupportSetStore, Upload, client_message
from .tokens import tokens_match
from .work_folder import WorkFolder

ERROR_STATUS = {InputError: 422, ResourceError: 507}
FORM_JSON_BYTES = 64 * 1024
"""The largest JSON form field (settings, segments, corrected slices) a job may send."""
PRIVATE_UMASK = 0o077
"""While a server runs, what it writes (results, statistics, cached features) is readable by its user only."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the server runs. ``engine_arguments`` are ``fatesam segment`` model options every job starts from."""

    engine_arguments: tuple[str, ...] = ()
    token: str | None = None
    max_upload_bytes: int = 2 * 1024**3
    workers: int = 1
    queue_size: int = 8
    keep_results_s: float = 3600.0
    keep_support_sets_s: float = 86400.0
    abandon_after_s: float = 600.0
    work_dir: Path | None = None
    sweep_interval_s: float = 10.0
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S
    max_voxels: int = DEFAULT_MAX_VOXELS


def _private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


class Service:
    """The server's state: its private folder, the support-set store, the job queue and the expiry sweeper."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.work_folder = WorkFolder(config.work_dir)
        for leftover in self.work_folder.removed:
            LOG.warning("Removed %s, the files of a server that was stopped without closing.", leftover)
        self.folder = self.work_folder.path
        self.uploads = _private_folder(self.folder / "uploads")
        self.jobs_folder = _private_folder(self.folder / "jobs")
        self.features = _private_folder(self.folder / "features")
        self.store = SupportSetStore(_private_folder(self.folder / "support-sets"))
        self._umask = os.umask(PRIVATE_UMASK)  # restored by close()
        self.queue = JobQueue(self.store, config.workers, config.queue_size)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="fatesam-expiry", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            self.queue.expire(self.config.keep_results_s, self.config.abandon_after_s)
            self.store.expire(self.config.keep_support_sets_s)
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

    def receive(self, upload: UploadFile, suffixes: tuple[str, ...], folder: Path | None = None) -> Upload:
        """Copy an upload to a server-chosen name (only its format suffix comes from the client), hashing it, and
        check its header: it must hold its own voxels, at most ``max_voxels`` of them (InputError, nothing kept)."""
        name = Path(upload.filename or "").name  # only ever shown in messages
        suffix = _upload_suffix(name, suffixes)
        path = (folder or self.uploads) / f"{new_job_id()}{suffix}"
        digest = hashlib.sha256()
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as stream:
            while chunk := upload.file.read(CHUNK):
                digest.update(chunk)
                stream.write(chunk)
        received = Upload(path, digest.hexdigest(), suffix, name)
        try:
            check_header(path, own_data_only=True, max_voxels=self.config.max_voxels)
        except FateSAMError as error:
            path.unlink()
            raise client_message(error, [received]) from None
        return received

    def receive_pairs(self, images: list[UploadFile], labels: list[UploadFile]) -> list[tuple[Upload, Upload]]:
        """Uploaded (image, labels) pairs, in order."""
        if not images or len(images) != len(labels):
            raise InputError(
                f"A support set needs as many label files as images (got {len(images)} and {len(labels)}); "
                "upload them as pairs."
            )
        received: list[Upload] = []
        try:
            for image, label in zip(images, labels, strict=True):
                received.append(self.receive(image, UPLOAD_IMAGE_SUFFIXES))
                received.append(self.receive(label, UPLOAD_LABEL_SUFFIXES))
        except BaseException:
            for upload in received:
                upload.path.unlink(missing_ok=True)
            raise
        return list(zip(received[::2], received[1::2], strict=True))


class UploadLimit:
    """ASGI middleware: refuse a request without the token before its body is read (401), one whose body is over
    ``max_bytes`` (declared or while it streams) with 413, and cut one whose body arrives slower than
    ``timeout_s`` plus :data:`SECONDS_PER_UPLOADED_MB` per MB received (408), so that no client holds the server."""

    def __init__(self, app: ASGIApp, max_bytes: int, token: str | None, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.token = token
        self.timeout_s = timeout_s

    def _too_slow(self) -> str:
        return (
            f"The upload stalled or arrived too slowly (this server allows {self.timeout_s:g} s plus "
            f"{SECONDS_PER_UPLOADED_MB:g} s per MB); nothing of it was kept. Check the network, and send it again."
        )

    def _too_large(self) -> str:
        return (
            f"The upload is over this server's limit of {self.max_bytes / 1024**2:g} MB; nothing of it was kept. "
            "Crop the volume, or ask the server's administrator to raise --max-upload-mb."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.token is not None and scope["path"].startswith(f"{API}/") and scope["path"] != f"{API}/health":
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not tokens_match(given.strip(), self.token):
                return await _unauthorized()(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self._too_large()}, status_code=413)(scope, receive, send)
        received = 0
        started = time.monotonic()
        body_done = False

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the client to disconnect (while a response streams): unbounded
                return await receive()
            deadline = started + self.timeout_s + received / 1024**2 * SECONDS_PER_UPLOADED_MB
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise HTTPException(408, self._too_slow(), headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"detail": "A valid token is needed: send the header 'Authorization: Bearer TOKEN'."},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


bearer = HTTPBearer(auto_error=False, description="The token that 'fatesam serve' printed when it first started.")


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """The route's token check (the middleware checked it already; this also documents it in OpenAPI)."""
    token = request.app.state.config.token
    if token is not None and (credentials is None or not tokens_match(credentials.credentials, token)):
        raise HTTPException(401, "A valid token is needed.", headers={"WWW-Authenticate": "Bearer"})


def service_of(request: Request) -> Service:
    """The running server's state."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service_of)]


def _job_or_404(service: Service, job_id: str) -> Job:
    job = service.queue.get(job_id)
    if job is None:
        minutes = service.config.keep_results_s / 60
        raise HTTPException(
            404,
            f"Unknown job {job_id}: it does not exist, its results expired ({minutes:g} minutes after it ended) or "
            "the server restarted since. Submit it again.",
        )
    return job


def _json_form(text: str | None, kind: type, what: str) -> Any:
    expected = "a JSON object" if kind is dict else "a JSON array"
    value = (
        parse_json(text, f"The form field '{what}'", f"send {expected}.", max_bytes=FORM_JSON_BYTES) if text else kind()
    )
    if not isinstance(value, kind):
        raise InputError(f"The form field '{what}' must be {expected} (got {text[:80]!r}).")
    return value


def job_arguments(
    service: Service,
    folder: Path,
    query: Path,
    pairs: list[tuple[Path, Path]],
    output_format: str,
    fields: dict,
    refine: dict[str, Upload],
) -> list[str]:
    """The ``fatesam segment`` command line of a job: the server's options, then the job's settings and a refine's
    corrections (``refine``: the uploaded ``corrections`` and ``previous``, by form field)."""
    arguments = ["segment"]
    for image, labels in pairs:
        arguments += ["--support", str(image), str(labels)]
    arguments += ["--query", str(query), "--output", str(folder / f"result{output_format}")]
    arguments += ["--stats-json", str(folder / "stats.json"), "--feature-cache", str(service.features)]
    arguments += [*service.config.engine_arguments, *settings_arguments(fields["settings"])]
    if fields["segments"]:
        arguments += ["--segments", *option_values(fields["segments"], "segments")]
    for name, upload in refine.items():
        arguments += [f"--{name}", str(upload.path)]
    if fields["corrected_slices"]:
        arguments += ["--corrected-slices", *option_values(fields["corrected_slices"], "corrected_slices")]
    return arguments


def create_app(config: ServerConfig) -> FastAPI:
    """The server's application; its lifespan owns the private folder, the workers and the sweeper."""
    placeholders = ["segment", "--support", "image", "labels", "--query", "query", "--output", "result.seg.nrrd"]
    defaults = settings_from_args(build_parser().parse_args([*placeholders, *config.engine_arguments]))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = Service(config)
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(
        title="FateSAM server",
        version=__version__,
        description="Few-shot 3D segmentation with frozen SAM2 (FATE-SAM): upload a support set once, submit jobs.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.add_middleware(
        UploadLimit, max_bytes=config.max_upload_bytes, token=config.token, timeout_s=config.upload_timeout_s
    )

    @app.exception_handler(FateSAMError)
    async def engine_error(request: Request, error: FateSAMError) -> JSONResponse:
        status = next((code for kind, code in ERROR_STATUS.items() if isinstance(error, kind)), 400)
        return JSONResponse({"detail": str(error), "kind": type(error).__name__}, status_code=status)

    @app.get(f"{API}/health")
    def health(service: ServiceDep) -> dict:
        """Whether the server runs, and its queue (no token needed)."""
        return {"status": "ok", "version": __version__, "workers": service.config.workers, **service.queue.counts()}

    router = APIRouter(prefix=API, dependencies=[Depends(require_token)])

    @router.get("/models")
    def models() -> dict:
        """The model names, the settings jobs run with unless they choose, and those a job may choose."""
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(defaults).items()}
        return {"models": model_names(), "defaults": settings, "job_settings": list(JOB_SETTINGS)}

    @router.get("/support-sets/{set_id}")
    def support_set(set_id: str, service: ServiceDep) -> dict:
        """Whether the server holds this support set (clients ask before uploading)."""
        found = service.store.get(set_id)
        if found is None:
            raise HTTPException(404, f"Unknown support set {set_id}; upload it.")
        return {"id": found.id, "cases": len(found.pairs)}

    @router.post("/support-sets", status_code=201)
    def upload_support_set(
        service: ServiceDep,
        response: Response,
        images: Annotated[list[UploadFile], File(description="support volumes, in order")],
        labels: Annotated[list[UploadFile], File(description="their label maps or .seg.nrrd, in the same order")],
    ) -> dict:
        """Store (image, labels) pairs as one support set, checked by the command line's readers; stored once by
        content (an equal upload answers 200 with the same id)."""
        stored, created = service.store.add(service.receive_pairs(images, labels))
        response.status_code = 201 if created else 200
        return {"id": stored.id, "created": created, "cases": len(stored.pairs)}

    @router.post("/jobs", status_code=202)
    def submit_job(
        service: ServiceDep,
        query: Annotated[UploadFile, File(description="the volume to segment")],
        support_set: Annotated[str | None, Form(description="a stored support set's id")] = None,
        settings: Annotated[str, Form(description=f"JSON object of settings among {', '.join(JOB_SETTINGS)}")] = "{}",
        segments: Annotated[str | None, Form(description="JSON list of segment names or values")] = None,
        output_format: Annotated[str, Form(description=f"one of {', '.join(OUTPUT_SUFFIXES)}")] = SEGMENTATION_SUFFIX,
        images: Annotated[list[UploadFile] | None, File(description="inline supports instead of an id")] = None,
        labels: Annotated[list[UploadFile] | None, File(description="the inline supports' labels")] = None,
        corrections: Annotated[
            UploadFile | None, File(description="a refine: the query's labels with corrected slices")
        ] = None,
        corrected_slices: Annotated[
            str | None, Form(description='JSON list of the corrected slices (along the slice axis), or ["auto"]')
        ] = None,
        previous: Annotated[
            UploadFile | None, File(description='for ["auto"]: the result the corrections were made on')
        ] = None,
    ) -> JSONResponse:
        """Queue a job: ``fatesam segment`` on the query with a support set (a refine with ``corrections``,
        ``corrected_slices`` and ``previous``, as ``--corrections``, ``--corrected-slices`` and ``--previous``);
        503 with Retry-After when full."""
        fields = {"settings": _json_form(settings, dict, "settings")}
        fields["segments"] = _json_form(segments, list, "segments")
        fields["corrected_slices"] = _json_form(corrected_slices, list, "corrected_slices")
        if output_format not in OUTPUT_SUFFIXES:
            raise InputError(f"Unsupported output_format '{output_format}'. Use one of: {', '.join(OUTPUT_SUFFIXES)}.")
        if images:
            stored, _ = service.store.add(service.receive_pairs(images, labels or []))
        elif support_set:
            stored = service.store.get(support_set)
            if stored is None:
                raise HTTPException(404, f"Unknown support set {support_set}; upload it again, then resubmit.")
        else:
            raise InputError("A job needs supports: give a support_set id, or upload images and labels with it.")
        job_id = new_job_id()
        folder = _private_folder(service.jobs_folder / job_id)
        try:
            received = service.receive(query, UPLOAD_IMAGE_SUFFIXES, folder)
            refine = {
                name: service.receive(upload, UPLOAD_LABEL_SUFFIXES, folder)
                for name, upload in (("corrections", corrections), ("previous", previous))
                if upload is not None
            }
            try:
                image = read_image(received.path)
                args = build_parser().parse_args(
                    job_arguments(service, folder, received.path, stored.pairs, output_format, fields, refine)
                )
                select_segments(stored.segments, args.segments)
                corrections_from_args(args, image, settings_from_args(args).slice_axis)
            except FateSAMError as error:
                raise client_message(error, [received, *refine.values()]) from None
            job = Job(job_id, folder, args, stored)
            service.queue.submit(job)
        except QueueFull as full:
            shutil.rmtree(folder, ignore_errors=True)
            return JSONResponse(
                {"detail": f"The server is busy (its queue is full); try again in {full.retry_after_s} s."},
                status_code=503,
                headers={"Retry-After": str(full.retry_after_s)},
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return JSONResponse(job.public(), status_code=202)

    @router.get("/jobs/{job_id}")
    def job_state(job_id: str, service: ServiceDep) -> dict:
        """The job's state (queued, running, succeeded, failed, cancelled), progress, warnings and error."""
        return _job_or_404(service, job_id).public()

    def finished_file(service: Service, job_id: str, name: str) -> Path:
        job = _job_or_404(service, job_id)
        if job.state != "succeeded":
            raise HTTPException(409, f"Job {job_id} is {job.state}: it has no result to download.")
        return Path(getattr(job.args, name))

    @router.get("/jobs/{job_id}/result", response_class=FileResponse)
    def job_result(job_id: str, service: ServiceDep) -> FileResponse:
        """The label volume of a succeeded job (a ``.seg.nrrd`` unless the job chose another format)."""
        path = finished_file(service, job_id, "output")
        return FileResponse(path, media_type="application/octet-stream", filename=f"{job_id}{path.name[6:]}")

    @router.get("/jobs/{job_id}/stats", response_class=FileResponse)
    def job_stats(job_id: str, service: ServiceDep) -> FileResponse:
        """The statistics JSON of a succeeded job (as ``--stats-json`` writes it)."""
        return FileResponse(finished_file(service, job_id, "stats_json"), media_type="application/json")

    @router.delete("/jobs/{job_id}")
    def delete_job(job_id: str, service: ServiceDep) -> JSONResponse:
        """Cancel a job (it stops within one slice: 202), or delete a finished job's files (200)."""
        job = _job_or_404(service, job_id)
        if not job.finished:
            service.queue.cancel(job)
            return JSONResponse(job.public(), status_code=202)
        service.queue.remove(job)
        return JSONResponse({"id": job_id, "state": "deleted"})

    app.include_router(router)
    return app
