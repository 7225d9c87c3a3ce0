"""Checkpoint files: the cache folder, verified downloads, recorded digests and strict loading into a model."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import publish_new, temporary_sibling, write_file_atomically
from ..errors import CheckpointError, ResourceError
from ..json_input import parse_json
from ..progress import CancelToken, ProgressCallback, ignore_progress
from .architecture import build_architecture
from .registry import ModelSpec, cache_dir, cached_checkpoint_path, model_matching

CHUNK_BYTES = 1024 * 1024
DIGESTS_FILE = "checksums.json"
SET_ASIDE_MARK = ".mismatch-"  # a cached checkpoint that failed its check is renamed <name>.mismatch-<digest>
MIRROR_ENV = "FATESAM_MODEL_MIRROR"
_TIMEOUT_S = 60
_MB = 1e6


def download_url(spec: ModelSpec) -> str:
    """The spec's official URL, or the same file name under the mirror that $FATESAM_MODEL_MIRROR names."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def file_sha256(path: Path, cancel: CancelToken | None = None) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            if cancel is not None:
                cancel.raise_if_cancelled()
            digest.update(chunk)
    return digest.hexdigest()


def recorded_digests() -> dict[str, str]:
    """File name -> SHA-256 recorded at the first verified download of checkpoints with no pinned digest."""
    path = cache_dir() / DIGESTS_FILE
    if not path.is_file():
        return {}
    fix = "delete it; checkpoints without a pinned digest are then checked again by loading them."
    digests = parse_json(path, f"The digest record {path}", fix, error=CheckpointError)
    if not isinstance(digests, dict) or not all(isinstance(value, str) for value in digests.values()):
        raise CheckpointError(f"The digest record {path} is not a JSON object of digests; {fix}")
    return digests


def expected_sha256(spec: ModelSpec) -> str | None:
    """The pinned digest of the spec's checkpoint, else the one recorded at its first download, else None."""
    return spec.sha256 or recorded_digests().get(spec.filename)


def _write_digests(digests: dict[str, str]) -> None:
    text = json.dumps(digests, indent=2, sort_keys=True)
    write_file_atomically(cache_dir() / DIGESTS_FILE, lambda temporary: temporary.write_text(text), overwrite=True)


def _set_recorded_digest(filename: str, sha256: str | None) -> None:
    digests = recorded_digests()
    if sha256 is None:
        digests.pop(filename, None)
    else:
        digests[filename] = sha256
    _write_digests(digests)


@dataclass(frozen=True)
class _Unfit:
    """Why a file is not a checkpoint of a model, and the model it seems to belong to (if any)."""

    reason: str
    looks_like: str | None = None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor] | _Unfit:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        return _Unfit(f"it cannot be read ({error.strerror or error})")
    except Exception as error:  # torch.load raises many kinds of error for files that are not checkpoints
        return _Unfit(f"torch.load cannot read it, it is damaged or not a PyTorch file ({type(error).__name__})")
    state_dict = content.get("model") if isinstance(content, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        return _Unfit("it is not a SAM2 checkpoint (a dict whose 'model' entry is the model's state dict)")
    return state_dict


def _architecture_of(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The known model whose trunk width, depth and version a state dict has."""
    patch = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    blocks = {m.group(1) for key in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))}
    if patch is None or patch.ndim == 0:
        return None
    return model_matching("no_obj_embed_spatial" in state_dict, int(patch.shape[0]), len(blocks))


def _fit(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> _Unfit | None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    resized = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    if not (missing or unexpected or resized):
        return None
    kinds = ((missing, "missing keys"), (unexpected, "unexpected keys"), (resized, "tensors of another shape"))
    problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in kinds if keys]
    return _Unfit(f"its weights do not match the architecture: {', '.join(problems)}", _architecture_of(state_dict))


def _load(model: torch.nn.Module, path: Path) -> _Unfit | None:
    """Strictly load the checkpoint at ``path`` into ``model``; what is wrong with it if that cannot be done."""
    state_dict = _read_state_dict(path)
    if isinstance(state_dict, _Unfit):
        return state_dict
    unfit = _fit(model, state_dict)
    if unfit is None:
        model.load_state_dict(state_dict, strict=True)
    return unfit


def check_checkpoint_file(path: Path, spec: ModelSpec) -> None:
    """CheckpointError unless ``path`` (a checkpoint given for ``spec``) is an existing file."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"Checkpoint {path} (for model {spec.name}) {what}. Pass the path of the .pt file "
            f"(e.g. {spec.filename}), or leave out --checkpoint to download {spec.name}."
        )


def load_checkpoint_into(model: torch.nn.Module, path: Path, spec: ModelSpec) -> None:
    """Strictly load a SAM2 checkpoint file into ``model`` (built for ``spec``); CheckpointError says why not."""
    check_checkpoint_file(path, spec)
    unfit = _load(model, path)
    if unfit is None:
        return
    if unfit.looks_like and unfit.looks_like != spec.name:
        fix = f"It looks like a checkpoint of {unfit.looks_like}: pass --model {unfit.looks_like}."
    else:
        fix = f"Pass the official {spec.filename} ({spec.url}), or leave out --checkpoint to download it."
    raise CheckpointError(f"Checkpoint {path} cannot be loaded into model {spec.name}: {unfit.reason}. {fix}")


def _loads_into_fresh_model(spec: ModelSpec, path: Path) -> _Unfit | None:
    return _load(build_architecture(spec), path)


def _network_error(spec: ModelSpec, url: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"Could not download the {spec.name} checkpoint from {url}: {reason}. Check the connection (or proxy), or "
        f"download the file by hand and pass --checkpoint PATH (or save it as {cached_checkpoint_path(spec)})."
    )


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ResourceError(
            f"Not enough disk space in {folder}: the checkpoint needs {needed / _MB:.0f} MB, {free / _MB:.0f} MB "
            "are free. Free some space, or set FATESAM_CACHE_DIR to a folder on a larger disk."
        )


def _fetch(spec: ModelSpec, url: str, temporary: Path, progress: ProgressCallback, cancel: CancelToken) -> str:
    """Stream ``url`` into ``temporary``; its SHA-256. CheckpointError for network errors and short transfers."""
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(temporary, "wb") as stream:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total:
                _check_free_space(temporary.parent, total)
            while chunk := response.read(CHUNK_BYTES):
                cancel.raise_if_cancelled()
                stream.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                size = f"{done / _MB:.1f} / {total / _MB:.1f} MB" if total else f"{done / _MB:.1f} MB"
                progress(done / total if total else 0.0, f"Downloading {spec.filename}: {size}")
    except urllib.error.HTTPError as error:
        raise _network_error(spec, url, f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise _network_error(spec, url, str(error.reason)) from error
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise _network_error(spec, url, f"{type(error).__name__}: {error}") from error
    if total is not None and done != total:
        raise CheckpointError(
            f"The download of {spec.name} from {url} was cut short ({done} of {total} bytes); the partial file was "
            "deleted. Try again, or download the file by hand and pass --checkpoint PATH."
        )
    return digest.hexdigest()


def download_checkpoint(
    spec: ModelSpec, progress: ProgressCallback = ignore_progress, cancel: CancelToken | None = None
) -> Path:
    """Download the checkpoint into the cache folder, verify it, and move it into place atomically.

    Verified means: its SHA-256 equals the pinned one; or, with no pinned digest, it loads strictly into the
    model's architecture, and then its digest is recorded for later checks. A download that fails is deleted (it
    is this function's own temporary file). A checkpoint that appears in the cache during the download is kept
    and verified instead of being replaced.
    """
    cancel = cancel or CancelToken()
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    url = download_url(spec)
    destination = cached_checkpoint_path(spec)
    temporary = temporary_sibling(destination, ".part")  # created by the download, with the usual permissions
    try:
        sha256 = _fetch(spec, url, temporary, progress, cancel)
        if spec.sha256 is not None and sha256 != spec.sha256:
            raise CheckpointError(
                f"The file downloaded from {url} has SHA-256 {sha256}, not the pinned {spec.sha256} of {spec.name}; "
                "it was deleted. Try again later, or download the file by hand and pass --checkpoint PATH."
            )
        if spec.sha256 is None:
            progress(1.0, f"Checking that {spec.filename} loads into {spec.name}")
            unfit = _loads_into_fresh_model(spec, temporary)
            if unfit is not None:
                raise CheckpointError(
                    f"The file downloaded from {url} is not a usable {spec.name} checkpoint ({unfit.reason}); it was "
                    "deleted. Try again later, or download the file by hand and pass --checkpoint PATH."
                )
        placed = publish_new(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    if not placed:  # a file appeared there meanwhile (copied by hand, another download): judge it, never replace it
        return verify_cached_checkpoint(spec, progress, cancel)
    if spec.sha256 is None:
        _set_recorded_digest(spec.filename, sha256)
    progress(1.0, f"Downloaded {spec.filename}")
    return destination


def _move_aside(path: Path, sha256: str, problem: str) -> Path:
    """Rename a cached checkpoint that failed its check to ``<name>.mismatch-<its SHA-256's first 12 digits>``.

    The file may be the user's only copy, so it is never deleted. A file already there under that name has the same
    content (same digest prefix), so replacing it loses nothing. CheckpointError (file left in place) if the rename
    fails.
    """
    aside = path.with_name(f"{path.name}{SET_ASIDE_MARK}{sha256[:12]}")
    try:
        os.replace(path, aside)
    except OSError as error:
        raise CheckpointError(
            f"The cached checkpoint {path} {problem}, and it cannot be moved aside to {aside} "
            f"({error.strerror or error}). Move or delete it yourself (the next run downloads the official file), "
            "or pass a file you trust with --checkpoint PATH."
        ) from error
    return aside


def _cached_sha256(path: Path, spec: ModelSpec, cancel: CancelToken | None) -> str:
    try:
        return file_sha256(path, cancel)
    except OSError as error:
        raise CheckpointError(
            f"The cached checkpoint {path} of {spec.name} cannot be read ({error.strerror or error}). Make it "
            "readable, or move it out of the cache folder (the next run downloads the official file), or pass "
            "another copy with --checkpoint PATH."
        ) from error


def verify_cached_checkpoint(
    spec: ModelSpec, progress: ProgressCallback = ignore_progress, cancel: CancelToken | None = None
) -> Path:
    """Check the cached checkpoint against its pinned or recorded digest (or, with neither, by loading it).

    A file that fails (wrong digest, or none and it does not load) is never deleted: it may be the user's only
    copy. It is renamed next to itself (see :func:`_move_aside`), its recorded digest is dropped, and the
    CheckpointError names the new path, so that the next run downloads a fresh copy and the old one stays at hand.
    """
    path = cached_checkpoint_path(spec)
    expected = expected_sha256(spec)
    progress(0.0, f"Checking {path.name}")
    actual = _cached_sha256(path, spec, cancel)
    if expected is None:
        unfit = _loads_into_fresh_model(spec, path)
        if unfit is None:
            _set_recorded_digest(spec.filename, actual)
            return path
        problem = f"cannot be loaded into {spec.name}: {unfit.reason}"
    elif actual == expected:
        return path
    else:
        problem = f"of {spec.name} is damaged or was changed: its SHA-256 is {actual}, expected {expected}"
    aside = _move_aside(path, actual, problem)
    if spec.sha256 is None:
        _set_recorded_digest(spec.filename, None)
    trust = f" If you trust that file, pass it with --checkpoint {aside}." if expected else ""
    raise CheckpointError(
        f"The cached checkpoint {path} {problem}. It was not deleted: it was moved to {aside}. Run again to "
        f"download the official file ({download_url(spec)}), or, offline, copy that file (downloaded elsewhere) "
        f"to {path}.{trust}"
    )


def ensure_checkpoint(
    spec: ModelSpec, progress: ProgressCallback = ignore_progress, cancel: CancelToken | None = None
) -> Path:
    """The verified cached checkpoint of ``spec``, downloaded first if it is not in the cache."""
    if cached_checkpoint_path(spec).is_file():
        return verify_cached_checkpoint(spec, progress, cancel)
    return download_checkpoint(spec, progress, cancel)
