"""The routes of ``fatesam serve`` under ``/v1``: health, models, support sets and jobs.

Every route but ``/v1/health`` needs a user's token (checked by the middleware before any upload is read); a user
sees only their own support sets and jobs (another user's are 404, as if they did not exist). A job's inputs are
read by ``fatesam segment``'s readers and refused with its messages (HTTP 422) before it is queued; a full queue
answers 503 with Retry-After, a user with too many unfinished jobs or support sets 429. A job may be a refine: the
query's labels with corrected slices (``corrections``), which slices (``corrected_slices``) and, for ``["auto"]``,
the result they were edited from (``previous``), checked as the command line checks them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import __version__
from ..errors import FateSAMError, InputError
from ..formats import OUTPUT_SUFFIXES, SEGMENTATION_SUFFIX
from ..json_input import parse_json
from ..method.jobs import SegmentJob
from ..method.pipeline import CorrectionInput, prepare_query, select_segments
from ..models.registry import get_model_spec, model_names
from ..options import RunSettings
from ..progress import TaskState
from ..protocol import API, JOB_SETTINGS, UPLOAD_IMAGE_SUFFIXES, UPLOAD_LABEL_SUFFIXES
from .jobs import Job, QueueFull, new_job_id
from .middleware import USER_KEY
from .service import Service, private_folder
from .store import SupportSet, Upload, client_message

FORM_JSON_BYTES = 64 * 1024
"""The largest JSON form field (settings, segments, corrected slices) a job may send."""
bearer = HTTPBearer(auto_error=False, description="Your token, as 'fatesam serve' or 'fatesam users add' printed it.")


def current_user(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The user the request's token belongs to (the middleware checked it; ``credentials`` document it in OpenAPI)."""
    return getattr(request.state, USER_KEY)


def service_of(request: Request) -> Service:
    """The running server's state."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service_of)]
UserDep = Annotated[str, Depends(current_user)]


def _job_or_404(service: Service, job_id: str, user: str) -> Job:
    job = service.queue.get(job_id, user)
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


def job_settings_of(defaults: RunSettings, values: dict[str, Any]) -> RunSettings:
    """The run settings of a job: the server's, with the job's ``values`` (only :data:`JOB_SETTINGS`), checked as
    the command line checks its options."""
    refused = [name for name in values if name not in JOB_SETTINGS]
    if refused:
        raise InputError(f"A job cannot set '{refused[0]}'; it may set: {', '.join(JOB_SETTINGS)}.")
    try:
        settings = dataclasses.replace(defaults, **values)
    except (TypeError, ValueError) as error:
        raise InputError(f"The job's settings {json.dumps(values)} are not valid settings ({error}).") from None
    get_model_spec(settings.model)  # an unknown model is refused now, not when the job runs
    return settings


def _uploads(files: list[UploadFile] | None) -> list[tuple[Any, str]]:
    return [(upload.file, upload.filename or "") for upload in files or []]


def _support_set(
    service: Service, user: str, set_id: str | None, images: list | None, labels: list | None
) -> SupportSet:
    """The job's support set: uploaded with it, or stored before by this user."""
    if images:
        stored, _ = service.store.add(service.receive_pairs(_uploads(images), _uploads(labels)), user)
        return stored
    if set_id:
        stored = service.store.get(set_id, user)
        if stored is None:
            raise HTTPException(404, f"Unknown support set {set_id}; upload it again, then resubmit.")
        return stored
    raise InputError("A job needs supports: give a support_set id, or upload images and labels with it.")


def _job(user: str, stored: SupportSet, settings: RunSettings, fields: dict, folder: Path, uploads: dict) -> Job:
    """The typed job of a submission: its query read and checked with its slice frame and corrections (the
    command line's checks and messages, with the client's file names), before it is queued."""
    query: Upload = uploads["query"]
    try:
        segments = [str(value) for value in fields["segments"]] or None
        select_segments(stored.segments, segments)  # a segment no support has is refused now
        paths = {name: upload.path for name, upload in uploads.items()}
        corrections = CorrectionInput.from_options(
            paths.get("corrections"), fields["corrected_slices"], paths.get("previous")
        )
        prepared = prepare_query(query.path, settings.slice_axis, corrections)
    except FateSAMError as error:
        raise client_message(error, list(uploads.values())) from None
    request = SegmentJob(
        prepared, stored.pairs, folder / f"result{fields['output_format']}", folder / "stats.json", segments
    )
    return Job(folder.name, user, folder, request, settings, stored)


def api_router() -> APIRouter:
    """The routes that need a token."""
    router = APIRouter(prefix=API)

    @router.get("/models")
    def models(service: ServiceDep, user: UserDep) -> dict:
        """The model names, the settings jobs run with unless they choose, and those a job may choose."""
        defaults = dataclasses.asdict(service.config.settings)
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in defaults.items()}
        return {"models": model_names(), "defaults": settings, "job_settings": list(JOB_SETTINGS)}

    @router.get("/support-sets/{set_id}")
    def support_set(set_id: str, service: ServiceDep, user: UserDep) -> dict:
        """Whether the server holds this support set of yours (clients ask before uploading)."""
        found = service.store.get(set_id, user)
        if found is None:
            raise HTTPException(404, f"Unknown support set {set_id}; upload it.")
        return {"id": found.id, "cases": len(found.pairs)}

    @router.post("/support-sets", status_code=201)
    def upload_support_set(
        service: ServiceDep,
        user: UserDep,
        response: Response,
        images: Annotated[list[UploadFile], File(description="support volumes, in order")],
        labels: Annotated[list[UploadFile], File(description="their label maps or .seg.nrrd, in the same order")],
    ) -> dict:
        """Store (image, labels) pairs as one support set, checked by the command line's readers; stored once by
        content (an equal upload answers 200 with the same id)."""
        stored, created = service.store.add(service.receive_pairs(_uploads(images), _uploads(labels)), user)
        response.status_code = 201 if created else 200
        return {"id": stored.id, "created": created, "cases": len(stored.pairs)}

    @router.get("/jobs")
    def list_jobs(service: ServiceDep, user: UserDep) -> dict:
        """Your jobs, oldest first."""
        return {"jobs": [job.public() for job in service.queue.of_user(user)]}

    @router.post("/jobs", status_code=202)
    def submit_job(
        service: ServiceDep,
        user: UserDep,
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
        503 with Retry-After when the queue is full, 429 when you have too many unfinished jobs."""
        fields = {"segments": _json_form(segments, list, "segments")}
        fields["corrected_slices"] = _json_form(corrected_slices, list, "corrected_slices")
        fields["output_format"] = output_format
        run_settings = job_settings_of(service.settings, _json_form(settings, dict, "settings"))
        if output_format not in OUTPUT_SUFFIXES:
            raise InputError(f"Unsupported output_format '{output_format}'. Use one of: {', '.join(OUTPUT_SUFFIXES)}.")
        stored = _support_set(service, user, support_set, images, labels)
        folder = private_folder(service.jobs_folder / new_job_id())
        try:
            uploads = {"query": service.receive(query.file, query.filename or "", UPLOAD_IMAGE_SUFFIXES, folder)}
            for name, upload in (("corrections", corrections), ("previous", previous)):
                if upload is not None:
                    uploads[name] = service.receive(upload.file, upload.filename or "", UPLOAD_LABEL_SUFFIXES, folder)
            job = _job(user, stored, run_settings, fields, folder, uploads)
            service.queue.submit(job)
        except QueueFull as full:
            shutil.rmtree(folder, ignore_errors=True)
            detail = (
                f"You have {service.config.jobs_per_user} jobs waiting or running, this server's limit per user; "
                f"submit this one when one has ended (in about {full.retry_after_s} s)."
                if full.per_user
                else f"The server is busy (its queue is full); try again in {full.retry_after_s} s."
            )
            return JSONResponse(
                {"detail": detail},
                status_code=429 if full.per_user else 503,
                headers={"Retry-After": str(full.retry_after_s)},
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return JSONResponse(job.public(), status_code=202)

    @router.get("/jobs/{job_id}")
    def job_state(job_id: str, service: ServiceDep, user: UserDep) -> dict:
        """The job's state (queued, running, succeeded, failed, cancelled), progress, warnings and error."""
        return _job_or_404(service, job_id, user).public()

    def finished_file(service: Service, job_id: str, user: str, name: str) -> Path:
        job = _job_or_404(service, job_id, user)
        if job.state != TaskState.SUCCEEDED:
            raise HTTPException(409, f"Job {job_id} is {job.state.value}: it has no result to download.")
        return Path(getattr(job.request, name))

    @router.get("/jobs/{job_id}/result", response_class=FileResponse)
    def job_result(job_id: str, service: ServiceDep, user: UserDep) -> FileResponse:
        """The label volume of a succeeded job (a ``.seg.nrrd`` unless the job chose another format)."""
        path = finished_file(service, job_id, user, "output")
        return FileResponse(path, media_type="application/octet-stream", filename=f"{job_id}{path.name[6:]}")

    @router.get("/jobs/{job_id}/stats", response_class=FileResponse)
    def job_stats(job_id: str, service: ServiceDep, user: UserDep) -> FileResponse:
        """The statistics JSON of a succeeded job (as ``--stats-json`` writes it)."""
        return FileResponse(finished_file(service, job_id, user, "stats_json"), media_type="application/json")

    @router.delete("/jobs/{job_id}")
    def delete_job(job_id: str, service: ServiceDep, user: UserDep) -> JSONResponse:
        """Cancel a job (it stops within one slice: 202), or delete a finished job's files (200)."""
        job = _job_or_404(service, job_id, user)
        if not job.finished:
            service.queue.cancel(job)
            return JSONResponse(job.public(), status_code=202)
        service.queue.remove(job)
        return JSONResponse({"id": job_id, "state": "deleted"})

    return router


def health_router() -> APIRouter:
    """``/v1/health``: no token needed."""
    router = APIRouter(prefix=API)

    @router.get("/health")
    def health(service: ServiceDep) -> dict:
        """Whether the server runs, its queue, and how often a model was loaded (once per served model)."""
        counts = {**service.queue.counts(), **service.predictors.counts()}
        return {"status": "ok", "version": __version__, "workers": service.config.workers, **counts}

    return router
