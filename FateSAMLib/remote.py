"""The client of a ``fatesam serve`` server (urllib only): :class:`ServerClient` for its API and :class:`RemoteJob`
for a whole run followed without blocking. Used by ``fatesam segment --server URL`` and by the Slicer module's remote
runs (``slicer.remote_run``), so it imports nothing that Slicer lacks; what client and server agree on is in
:mod:`FateSAMLib.protocol`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from .errors import Cancelled, FateSAMError, InputError, ResourceError
from .formats import SEGMENTATION_SUFFIX
from .json_input import parse_json
from .progress import TaskState
from .protocol import (
    API,
    CHUNK,
    TOKEN_ENVIRONMENT,
    UPLOAD_IMAGE_SUFFIXES,
    UPLOAD_LABEL_SUFFIXES,
    file_digest,
    job_settings,
    support_set_id,
    upload_suffix,
)

__all__ = ["CorrectionFiles", "RemoteJob", "ServerBusy", "ServerClient", "ServerError", "job_settings", "read_token"]

_ERROR_CLASSES = {cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type)}


@dataclass(frozen=True)
class CorrectionFiles:
    """A refine's corrections for a job, as ``fatesam segment`` takes them: ``labels`` (``--corrections``, the
    query's labels with corrected slices), ``slices`` (``--corrected-slices``: slice numbers, or ``["auto"]``: where
    ``labels`` differs from ``previous``) and ``previous`` (``--previous``, the result they were edited from). The
    server checks them as the command line does, with its messages."""

    labels: Path | None = None
    slices: Sequence[int | str] | None = None
    previous: Path | None = None

    def form(self) -> tuple[dict[str, str], list[tuple[str, Path]]]:
        """The job's form fields and files for these corrections."""
        fields = {"corrected_slices": json.dumps(list(self.slices))} if self.slices else {}
        files = [
            (name, Path(path)) for name, path in (("corrections", self.labels), ("previous", self.previous)) if path
        ]
        return fields, files


class ServerError(FateSAMError):
    """The server could not be reached, refused the token, or answered something unexpected."""


class ServerBusy(ResourceError):
    """The server's queue is full; :attr:`retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def read_token(token_file: str | Path | None = None) -> str | None:
    """The token from ``token_file`` when given, else from ``$FATESAM_TOKEN`` (None when neither is set)."""
    if token_file is not None:
        try:
            text = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as error:
            raise InputError(f"Cannot read the token file {token_file}: {error.strerror or error}.") from None
        if not text:
            raise InputError(f"The token file {token_file} is empty; copy the server's token into it.")
        return text
    return os.environ.get(TOKEN_ENVIRONMENT) or None


def _size(path: Path) -> int:
    """The size of a file to upload; InputError naming it when it cannot be read."""
    try:
        if not path.is_file():
            raise InputError(f"{path} is not a file; give the path of the file to upload.")
        return path.stat().st_size
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror or error}.") from None


def _multipart(fields: Mapping[str, str], files: Sequence[tuple[str, Path]]) -> tuple[str, int, Iterator[bytes]]:
    """A multipart/form-data body streamed from disk: (content type, length, chunks)."""
    boundary = uuid.uuid4().hex
    heads = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    file_heads = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for name, path in files
    ]
    tail = f"--{boundary}--\r\n".encode()
    sizes = [len(head) + _size(path) + 2 for head, (_, path) in zip(file_heads, files, strict=True)]
    length = sum(map(len, heads)) + sum(sizes)

    def chunks() -> Iterator[bytes]:
        yield from heads
        for head, (_, path) in zip(file_heads, files, strict=True):
            yield head
            with open(path, "rb") as stream:
                while chunk := stream.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield tail

    return f"multipart/form-data; boundary={boundary}", length + len(tail), chunks()


class ServerClient:
    """The API of one server, at ``url`` (e.g. ``https://gpu-box:8765``), with its bearer ``token``."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"The server URL '{url}' is not an http(s) address; give e.g. http://gpu-box:8765.")
        self.url = url.strip().rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(
        self,
        method: str,
        path: str,
        body: Iterator[bytes] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, Mapping[str, str]]:
        address = f"{self.url}{API}{path}"
        request = urllib.request.Request(address, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as error:
            failure = self._error(error)
            failure.status = error.code
            raise failure from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerError(
                f"Cannot reach the FateSAM server at {self.url} ({reason}). Check the URL, that 'fatesam serve' "
                "runs there and that the network (and TLS certificate) allows the connection."
            ) from None

    def _error(self, error: urllib.error.HTTPError) -> FateSAMError:
        try:
            detail = parse_json(error.read() or b"{}", "The server's answer", "", error=ServerError)
        except ServerError:
            detail = {}
        message = detail.get("detail") if isinstance(detail, dict) else None
        if not isinstance(message, str):
            message = f"The server at {self.url} answered HTTP {error.code} {error.reason}."
        if error.code == 401:
            return ServerError(f"{message} Check the token (the server prints where it keeps it).")
        if error.code == 503:
            retry = float(error.headers.get("Retry-After") or 10)
            return ServerBusy(message, retry)
        kind_name = detail.get("kind") if isinstance(detail, dict) else None
        kind = _ERROR_CLASSES.get(kind_name) if isinstance(kind_name, str) else None
        return (kind or (InputError if error.code == 422 else ServerError))(message)

    def _json(self, method: str, path: str, **options: Any) -> dict:
        data, _ = self._request(method, path, **options)
        fix = "check that the URL is a FateSAM server's, and that both run the same FateSAM version."
        answer = parse_json(data, f"The answer of {self.url} to {method} {path}", fix, error=ServerError)
        if not isinstance(answer, dict):
            raise ServerError(f"The answer of {self.url} to {method} {path} is not a JSON object; {fix}")
        return answer

    def health(self) -> dict:
        """The server's version and queue (no token needed)."""
        return self._json("GET", "/health")

    def models(self) -> dict:
        """The models the server can run and its default settings."""
        return self._json("GET", "/models")

    def has_support_set(self, set_id: str) -> bool:
        """Whether the server holds the support set ``set_id``."""
        try:
            self._request("GET", f"/support-sets/{set_id}")
        except FateSAMError as error:
            if getattr(error, "status", None) == 404:
                return False
            raise
        return True

    def upload_support_set(self, supports: Sequence[tuple[Path, Path]]) -> str:
        """Upload (image, labels) pairs as one support set, unless the server has it already; returns its id."""
        entries = [
            (file_digest(image), upload_suffix(image.name, UPLOAD_IMAGE_SUFFIXES))
            + (file_digest(labels), upload_suffix(labels.name, UPLOAD_LABEL_SUFFIXES))
            for image, labels in ((Path(i), Path(lab)) for i, lab in supports)
        ]
        set_id = support_set_id(entries)
        if self.has_support_set(set_id):
            return set_id
        files = [(kind, Path(path)) for pair in supports for kind, path in zip(("images", "labels"), pair, strict=True)]
        content_type, length, body = _multipart({}, files)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        return self._json("POST", "/support-sets", body=body, headers=headers)["id"]

    def submit(
        self,
        query: Path,
        support_set: str,
        settings: Mapping[str, Any] | None = None,
        segments: Sequence[str] | None = None,
        output_format: str = SEGMENTATION_SUFFIX,
        corrections: CorrectionFiles | None = None,
    ) -> str:
        """Submit a job (the query volume, a support set's id, job settings; a refine's ``corrections``); returns
        the job id."""
        fields = {"support_set": support_set, "settings": json.dumps(dict(settings or {}))}
        fields["output_format"] = output_format
        if segments:
            fields["segments"] = json.dumps(list(segments))
        refine_fields, refine_files = corrections.form() if corrections is not None else ({}, [])
        content_type, length, body = _multipart({**fields, **refine_fields}, [("query", Path(query)), *refine_files])
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        return self._json("POST", "/jobs", body=body, headers=headers)["id"]

    def job(self, job_id: str) -> dict:
        """The job's state, progress fraction and message, warnings and error."""
        return self._json("GET", f"/jobs/{job_id}")

    def download(self, job_id: str, result: Path, stats: Path | None = None) -> None:
        """Write the job's ``.seg.nrrd`` to ``result`` (and its statistics JSON to ``stats``)."""
        Path(result).write_bytes(self._request("GET", f"/jobs/{job_id}/result")[0])
        if stats is not None:
            Path(stats).write_bytes(self._request("GET", f"/jobs/{job_id}/stats")[0])

    def cancel(self, job_id: str) -> dict:
        """Cancel the job (it stops within one slice) or, once finished, delete its results."""
        return self._json("DELETE", f"/jobs/{job_id}")


class RemoteJob:
    """A whole remote run followed without blocking, like the engine process's ``BackgroundJob``: a thread uploads
    the support set (unless the server has it), submits the job, follows it and downloads the result to ``output``
    (and ``stats``); :meth:`poll` (e.g. from a timer) copies what it reached, :meth:`cancel` cancels the job.
    With ``corrections`` the job is a refine (see :class:`CorrectionFiles`).

    States (:class:`~FateSAMLib.protocol.TaskState`): running, succeeded, failed, cancelled. A busy server (HTTP 503)
    is asked again after its Retry-After, for at most ``busy_wait_s`` seconds.
    """

    def __init__(
        self,
        client: ServerClient,
        supports: Sequence[tuple[Path, Path]],
        query: Path,
        output: Path,
        stats: Path | None = None,
        settings: Mapping[str, Any] | None = None,
        segments: Sequence[str] | None = None,
        interval_s: float = 0.5,
        busy_wait_s: float = 600.0,
        corrections: CorrectionFiles | None = None,
    ) -> None:
        self.client = client
        self.corrections = corrections
        self.output, self.stats = Path(output), stats
        self.state, self.fraction, self.message = TaskState.RUNNING, 0.0, "Connecting to the server"
        self.warnings: list[str] = []
        self.error: FateSAMError | None = None
        self.done_output: str | None = None
        self.job_id: str | None = None
        self.log_tail: list[str] = []
        self.process = None  # no local engine process
        self._reached = dict(state=TaskState.RUNNING, fraction=0.0, message=self.message, warnings=[], error=None)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._interval_s, self._busy_wait_s = interval_s, busy_wait_s
        arguments = (list(supports), Path(query), dict(settings or {}), list(segments or []))
        self._thread = threading.Thread(target=self._follow, args=arguments, name="fatesam-remote", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self.state != TaskState.RUNNING

    def _reach(self, **values: Any) -> None:
        with self._lock:
            self._reached.update(values)

    def _submit(self, query: Path, set_id: str, settings: dict, segments: list[str]) -> str:
        deadline = time.monotonic() + self._busy_wait_s
        suffix = upload_suffix(self.output.name, (SEGMENTATION_SUFFIX, *UPLOAD_IMAGE_SUFFIXES))
        while True:
            try:
                return self.client.submit(query, set_id, settings, segments, suffix, self.corrections)
            except ServerBusy as busy:
                if time.monotonic() + busy.retry_after_s > deadline:
                    raise
                self._reach(message=f"The server is busy; asking again in {busy.retry_after_s:g} s")
                if self._cancel.wait(busy.retry_after_s):
                    raise Cancelled("The run was cancelled before the server took it.") from None

    def _follow(self, supports: list, query: Path, settings: dict, segments: list[str]) -> None:
        try:
            self._reach(message="Uploading the support set (once per support set)")
            set_id = self.client.upload_support_set(supports)
            self._cancel_if_asked()
            self._reach(message="Uploading the volume")
            self.job_id = self._submit(query, set_id, settings, segments)
            cancel_sent = False
            while True:
                if self._cancel.is_set() and not cancel_sent:
                    job, cancel_sent = self.client.cancel(self.job_id), True
                    if job["state"] == "deleted":  # it had just finished: its result is discarded
                        raise Cancelled("The run was cancelled; the server's result was discarded.")
                else:
                    job = self.client.job(self.job_id)
                self._reach(fraction=job["fraction"], message=job["message"], warnings=job["warnings"])
                if TaskState(job["state"]).finished:
                    break
                self._cancel.wait(self._interval_s)
            if job["state"] == TaskState.SUCCEEDED:
                self._reach(message="Downloading the result")
                self.client.download(self.job_id, self.output, self.stats)
                self.client.cancel(self.job_id)  # delete it from the server: it is here now
                self._reach(state=TaskState.SUCCEEDED, fraction=1.0, message="Done", done_output=str(self.output))
            elif job["state"] == TaskState.CANCELLED and self._cancel.is_set():
                raise Cancelled("The run was cancelled; the server stopped its job.")
            else:
                error = job.get("error") or {"message": job["message"], "kind": "FateSAMError"}
                raise _ERROR_CLASSES.get(error.get("kind", ""), FateSAMError)(error["message"])
        except Cancelled as error:
            self._reach(state=TaskState.CANCELLED, error=error)
        except FateSAMError as error:
            self._reach(state=TaskState.FAILED, error=error)
        except Exception as error:  # a remote run must always end
            self._reach(state=TaskState.FAILED, error=ServerError(f"The remote run failed: {error}"))

    def _cancel_if_asked(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("The run was cancelled; nothing was submitted.")

    def poll(self) -> list:
        """Take what the thread reached since the last call (no events: the job's progress is in the fields)."""
        with self._lock:
            reached = dict(self._reached)
        self.fraction, self.message = reached["fraction"], reached["message"]
        self.warnings = list(reached["warnings"])
        if reached["state"] != TaskState.RUNNING:
            self.state, self.error = reached["state"], reached["error"]
            self.done_output = reached.get("done_output")
        return []

    def cancel(self) -> None:
        """Ask the server to cancel the job (it stops within one slice); the run ends at a later :meth:`poll`."""
        if not self.finished:
            self._cancel.set()
            self.message = "Cancelling"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel and wait (at most about ``timeout_s``) until the thread has ended; the run is then over."""
        self.cancel()
        self._thread.join(timeout_s)
        self.poll()
        if not self.finished:
            self.state, self.error = TaskState.CANCELLED, Cancelled("The remote run was cancelled.")

    def wait(self, cancel_requested: Callable[[], bool] | None = None, interval_s: float = 0.1) -> None:
        """Poll until the end (for the command line); ``cancel_requested()`` true cancels the run."""
        while not self.finished:
            if cancel_requested is not None and cancel_requested():
                self.cancel()
            self.poll()
            if not self.finished:
                time.sleep(interval_s)
