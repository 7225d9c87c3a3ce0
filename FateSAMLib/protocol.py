"""What a ``fatesam serve`` server and its clients agree on: the API's prefix, the formats a job may upload, the
settings a job may choose and how a support set is named. Standard library only: the Slicer tier's
remote runs use it (through :mod:`FateSAMLib.remote`, the client), and so does the server.

The API lives under ``/v1``; every route but ``/v1/health`` needs the header ``Authorization: Bearer TOKEN``. A
support set is named by the hash of its files' content (:func:`support_set_id`), so a client asks whether the server
has it before uploading it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from .errors import InputError
from .formats import IMAGE_SUFFIXES, LABEL_SUFFIXES, suffix_of
from .options import SETTINGS, RunSettings

API = "/v1"
TOKEN_ENVIRONMENT = "FATESAM_TOKEN"
"""The environment variable that holds the server's token for ``fatesam segment --server``."""
UPLOAD_IMAGE_SUFFIXES = tuple(suffix for suffix in IMAGE_SUFFIXES if suffix not in (".nhdr", ".mhd"))
"""Single-file volume formats a server accepts (a detached header's data file would be a second upload)."""
UPLOAD_LABEL_SUFFIXES = tuple(suffix for suffix in LABEL_SUFFIXES if suffix not in (".nhdr", ".mhd"))
JOB_SETTINGS = ("model", "image_size", "top_k", "slice_axis", "normalization", "percentiles", "window")
"""The run settings a job may choose; the others (weights, device, threads, caches) are the server's own."""
CHUNK = 1024 * 1024


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def support_set_id(files: Sequence[tuple[str, str, str, str]]) -> str:
    """The id of a support set: a hash over its (image digest, image suffix, labels digest, labels suffix) in order.

    Client and server compute it alike from the files' bytes, so equal content means one stored, encoded set.
    """
    text = "".join(" ".join(entry) + "\n" for entry in files)
    return hashlib.sha256(text.encode()).hexdigest()


def upload_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    """The format suffix of an uploaded file's name (its only part a server keeps); InputError when it has none."""
    suffix = suffix_of(PurePath(name).name, suffixes)
    if not suffix:
        raise InputError(f"'{PurePath(name).name}' is not a supported file; upload one of: {', '.join(suffixes)}.")
    return suffix


def job_settings(settings: RunSettings) -> dict[str, Any]:
    """The job settings of ``settings`` that differ from the defaults (the server's options fill in the others)."""
    chosen = {}
    for name in JOB_SETTINGS:
        value = getattr(settings, name)
        if value != SETTINGS[name].default:
            chosen[name] = list(value) if isinstance(value, tuple) else value
    return chosen
