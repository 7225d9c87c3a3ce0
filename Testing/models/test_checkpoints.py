"""Checkpoint download, verification and caching against a real HTTP server on 127.0.0.1, and `fatesam models`."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from FateSAMLib.cli.models import add_models_parser
from FateSAMLib.cli.reporting import Reporter
from FateSAMLib.errors import Cancelled, CheckpointError, ModelError
from FateSAMLib.models.checkpoints import (
    DIGESTS_FILE,
    MIRROR_ENV,
    cache_dir,
    cached_checkpoint_path,
    ensure_checkpoint,
    recorded_digests,
)
from FateSAMLib.models.registry import DEFAULT_MODEL, MODELS, get_model_spec
from FateSAMLib.progress import CancelToken

PINNED = get_model_spec("sam2.0-tiny")
UNPINNED = get_model_spec("sam2.1-tiny")


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises the whole file but sends only half of it."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if not self.path.startswith("/short/"):
            super().do_GET()
            return
        data = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, base URL, list of requested paths) of an HTTP server running in a thread."""
    folder = tmp_path_factory.mktemp("served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(folder)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", server.requests
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder of this test's own."""
    monkeypatch.setenv("FATESAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_checkpoint_bytes(tiny_model) -> bytes:
    """A SAM2.1 tiny checkpoint in sam2's format ({"model": state_dict}), random weights."""
    stream = io.BytesIO()
    torch.save({"model": tiny_model.model.state_dict()}, stream)
    return stream.getvalue()


def serve(served, name: str, data: bytes) -> str:
    folder, base, _ = served
    (folder / name).write_bytes(data)
    return f"{base}/{name}"


def cache_listing(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir()) if cache.is_dir() else []


def test_pinned_download_reports_progress_verifies_and_lands_in_the_cache(served, cache):
    data = os.urandom(3 * 1024 * 1024 + 5)
    spec = dataclasses.replace(PINNED, url=serve(served, "good.pt", data), sha256=hashlib.sha256(data).hexdigest())
    events = []
    path = ensure_checkpoint(spec, progress=lambda f, m: events.append((f, m)))
    assert path == cache / PINNED.filename and path.read_bytes() == data
    assert cache_listing(cache) == [PINNED.filename]
    fractions = [fraction for fraction, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("/ 3.1 MB" in message for _, message in events)


def test_a_wrong_digest_is_refused_and_the_file_deleted(served, cache):
    spec = dataclasses.replace(PINNED, url=serve(served, "other.pt", b"not the model"), sha256="0" * 64)
    with pytest.raises(CheckpointError, match="not the pinned") as error:
        ensure_checkpoint(spec)
    assert spec.url in str(error.value) and "--checkpoint PATH" in str(error.value)
    assert cache_listing(cache) == []


def test_a_truncated_transfer_is_refused_and_the_partial_file_deleted(served, cache):
    data = os.urandom(2 * 1024 * 1024)
    serve(served, "cut.pt", data)
    spec = dataclasses.replace(PINNED, url=f"{served[1]}/short/cut.pt", sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(CheckpointError, match=r"cut short \(1048576 of 2097152 bytes\)"):
        ensure_checkpoint(spec)
    assert cache_listing(cache) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where", ["missing file", "closed port"])
def test_network_errors_name_the_url_and_the_manual_fix(served, cache, where):
    url = f"{served[1]}/no-such-file.pt" if where == "missing file" else f"http://127.0.0.1:{closed_port()}/x.pt"
    with pytest.raises(CheckpointError, match="--checkpoint PATH") as error:
        ensure_checkpoint(dataclasses.replace(PINNED, url=url))
    assert url in str(error.value)
    assert ("HTTP 404" in str(error.value)) == (where == "missing file")
    assert cache_listing(cache) == []


def test_a_cached_file_is_reused_without_the_network(served, cache):
    data = os.urandom(1000)
    spec = dataclasses.replace(PINNED, url=serve(served, "reused.pt", data), sha256=hashlib.sha256(data).hexdigest())
    requests = served[2]
    first = ensure_checkpoint(spec)
    count = len(requests)
    assert ensure_checkpoint(dataclasses.replace(spec, url="http://127.0.0.1:1/unreachable.pt")) == first
    assert len(requests) == count


def test_cancel_between_chunks_stops_and_removes_the_partial_file(served, cache):
    data = os.urandom(4 * 1024 * 1024)
    spec = dataclasses.replace(PINNED, url=serve(served, "slow.pt", data), sha256=hashlib.sha256(data).hexdigest())
    token = CancelToken()
    with pytest.raises(Cancelled):
        ensure_checkpoint(spec, progress=lambda fraction, message: token.cancel(), cancel=token)
    assert cache_listing(cache) == []


def aside_path(path: Path, data: bytes) -> Path:
    """Where a cached checkpoint with content ``data`` that failed its check is moved."""
    return path.with_name(f"{path.name}.mismatch-{hashlib.sha256(data).hexdigest()[:12]}")


def test_an_unpinned_checkpoint_is_load_checked_its_digest_recorded_and_checked_later(
    served, cache, tiny_checkpoint_bytes
):
    spec = dataclasses.replace(UNPINNED, url=serve(served, "tiny21.pt", tiny_checkpoint_bytes))
    path = ensure_checkpoint(spec)
    assert recorded_digests() == {UNPINNED.filename: hashlib.sha256(tiny_checkpoint_bytes).hexdigest()}
    assert ensure_checkpoint(spec) == path
    with open(path, "ab") as stream:
        stream.write(b"tampered")
    tampered = path.read_bytes()
    with pytest.raises(CheckpointError, match="damaged or was changed.*It was not deleted: it was moved to"):
        ensure_checkpoint(spec)
    assert not path.exists() and recorded_digests() == {}
    assert aside_path(path, tampered).read_bytes() == tampered


def test_a_cached_file_with_a_wrong_digest_is_moved_aside_never_deleted(served, cache):
    data = os.urandom(4000)
    spec = dataclasses.replace(PINNED, url=serve(served, "kept.pt", data), sha256=hashlib.sha256(data).hexdigest())
    path = ensure_checkpoint(spec)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped: the user's only copy, offline
    damaged = path.read_bytes()
    offline = dataclasses.replace(spec, url="http://127.0.0.1:1/unreachable.pt")
    with pytest.raises(CheckpointError) as error:
        ensure_checkpoint(offline)
    aside = aside_path(path, damaged)
    message = str(error.value)
    assert f"It was not deleted: it was moved to {aside}" in message
    assert f"pass it with --checkpoint {aside}" in message and offline.url in message
    assert cache_listing(cache) == [aside.name] and aside.read_bytes() == damaged
    code, out, _ = run_models_command(["cache"])
    assert f"  {aside.name}  0.0 MB  (failed its check and was set aside;" in out
    # Online again: the next run downloads a fresh copy, and the set-aside file stays.
    assert ensure_checkpoint(spec).read_bytes() == data
    assert cache_listing(cache) == sorted([PINNED.filename, aside.name]) and aside.read_bytes() == damaged


def test_a_cached_file_that_cannot_be_moved_aside_is_left_in_place(served, cache):
    data = os.urandom(3000)
    spec = dataclasses.replace(PINNED, url=serve(served, "stuck.pt", data), sha256=hashlib.sha256(data).hexdigest())
    path = ensure_checkpoint(spec)
    path.write_bytes(b"changed by hand")
    blocker = aside_path(path, b"changed by hand")
    (blocker / "something").mkdir(parents=True)  # a non-empty folder where the file would be moved
    with pytest.raises(CheckpointError, match=f"cannot be moved aside to {blocker}.*Move or delete it yourself"):
        ensure_checkpoint(spec)
    assert path.read_bytes() == b"changed by hand"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that file modes apply to")
def test_an_unreadable_cached_file_is_refused_with_the_fix_and_kept(served, cache):
    data = os.urandom(2000)
    spec = dataclasses.replace(PINNED, url=serve(served, "locked.pt", data), sha256=hashlib.sha256(data).hexdigest())
    path = ensure_checkpoint(spec)
    path.chmod(0)
    try:
        with pytest.raises(CheckpointError, match="cannot be read.*Make it readable"):
            ensure_checkpoint(spec)
        assert cache_listing(cache) == [PINNED.filename]
    finally:
        path.chmod(0o600)


def test_a_checkpoint_that_appears_during_the_download_is_not_replaced(served, cache):
    data = os.urandom(3 * 1024 * 1024)
    spec = dataclasses.replace(PINNED, url=serve(served, "raced.pt", data), sha256=hashlib.sha256(data).hexdigest())
    path = cached_checkpoint_path(spec)

    def copy_by_hand_meanwhile(fraction: float, message: str) -> None:
        if "Downloading" in message and not path.exists():
            path.write_bytes(b"the user's own file")

    with pytest.raises(CheckpointError, match="It was not deleted: it was moved to"):
        ensure_checkpoint(spec, progress=copy_by_hand_meanwhile)
    assert aside_path(path, b"the user's own file").read_bytes() == b"the user's own file"
    assert cache_listing(cache) == [aside_path(path, b"the user's own file").name], "no download left behind"


def test_an_unpinned_download_that_does_not_load_is_refused_and_deleted(served, cache):
    spec = dataclasses.replace(UNPINNED, url=serve(served, "garbage21.pt", os.urandom(5000)))
    with pytest.raises(CheckpointError, match="not a usable sam2.1-tiny checkpoint.*it was deleted"):
        ensure_checkpoint(spec)
    assert cache_listing(cache) == []


def test_an_unpinned_file_put_in_the_cache_by_hand_is_checked_by_loading(cache, tiny_checkpoint_bytes):
    cache.mkdir()
    path = cached_checkpoint_path(UNPINNED)
    path.write_bytes(tiny_checkpoint_bytes[:-100])
    with pytest.raises(CheckpointError, match="cannot be loaded into sam2.1-tiny.*It was not deleted") as error:
        ensure_checkpoint(dataclasses.replace(UNPINNED, url="http://127.0.0.1:1/unreachable.pt"))
    aside = aside_path(path, tiny_checkpoint_bytes[:-100])
    assert "--checkpoint" not in str(error.value), "a file that does not load is no use with --checkpoint either"
    assert aside.read_bytes() == tiny_checkpoint_bytes[:-100], "a file that may be the user's is kept"
    path.write_bytes(tiny_checkpoint_bytes)
    assert ensure_checkpoint(UNPINNED) == path
    assert (
        json.loads((cache / DIGESTS_FILE).read_text())[UNPINNED.filename]
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )


def test_cache_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FATESAM_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "fatesam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fatesam"


def test_registry_names_configs_and_urls():
    assert len(MODELS) == 9 and DEFAULT_MODEL in MODELS and list(MODELS)[-1] == "medsam2"
    large = get_model_spec("sam2.0-large")
    assert large.config == "configs/sam2/sam2_hiera_l.yaml" and large.sha256.startswith("7442e4e9")
    assert large.url == "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
    base = get_model_spec("sam2.1-base_plus")
    assert base.config == "configs/sam2.1/sam2.1_hiera_b+.yaml" and base.sha256 is None
    assert base.url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    with pytest.raises(ModelError, match="Unknown model 'sam3-huge'.*sam2.1-tiny"):
        get_model_spec("sam3-huge")


def run_models_command(argv: list[str]) -> tuple[int, str, str]:
    """``fatesam models ...`` through its own parser; (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="fatesam")
    add_models_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    reporter = Reporter(json_lines=getattr(args, "json_progress", False), stdout=stdout, stderr=stderr)
    with reporter.library_warnings():  # as the command line shows the library's warnings
        code = args.func(args, reporter, CancelToken())
    return code, stdout.getvalue(), stderr.getvalue()


def test_models_command_downloads_from_a_mirror_lists_and_shows_the_cache(
    served, cache, monkeypatch, tiny_checkpoint_bytes
):
    serve(served, UNPINNED.filename, tiny_checkpoint_bytes)
    monkeypatch.setenv(MIRROR_ENV, served[1])
    code, out, _ = run_models_command(["download", "sam2.1-tiny", "--json-progress"])
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {e["event"] for e in events[:-1]} == {"progress"}
    assert events[-1] == {"event": "done", "output": str(cache / UNPINNED.filename)}
    assert any("MB" in e["message"] for e in events[:-1])

    code, out, _ = run_models_command(["list", "--no-estimate"])
    lines = out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1 : len(MODELS) + 1]}
    assert code == 0 and set(rows) == set(MODELS)
    size = f"{len(tiny_checkpoint_bytes) / 1e6:.1f}"
    assert rows["sam2.1-tiny"][1:] == ["(default)", "1024", "Apache-2.0", "yes", size, "MB", "-"]
    assert rows["sam2.0-large"][1:] == ["1024", "Apache-2.0", "no", "-", "-"]
    assert rows["medsam2"][1:] == ["512", "CC-BY-SA-4.0", "no", "-", "-"]
    assert lines[len(MODELS) + 1 :] == [get_model_spec("medsam2").license_notice]

    code, out, _ = run_models_command(["cache"])
    assert out.splitlines()[0] == str(cache)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [DIGESTS_FILE, UNPINNED.filename]


def test_models_download_in_human_form_shows_progress_on_stderr_and_the_path_on_stdout(
    served, cache, monkeypatch, tiny_checkpoint_bytes
):
    serve(served, UNPINNED.filename, tiny_checkpoint_bytes)
    monkeypatch.setenv(MIRROR_ENV, served[1])
    code, out, err = run_models_command(["download", "sam2.1-tiny"])
    assert code == 0 and out == f"{cache / UNPINNED.filename}\n"
    assert f"Downloading {UNPINNED.filename}" in err and "[100.0%]" in err


def test_models_download_errors_reach_the_caller(served, cache, monkeypatch):
    serve(served, PINNED.filename, os.urandom(2000))
    monkeypatch.setenv(MIRROR_ENV, served[1])
    with pytest.raises(CheckpointError, match="not the pinned"):
        run_models_command(["download", "sam2.0-tiny"])
    with pytest.raises(ModelError, match="Unknown model"):
        run_models_command(["download", "tiny"])


def test_medsam2_shows_its_license_before_the_download_and_records_its_digest(
    served, cache, monkeypatch, tiny_checkpoint_bytes
):
    """MedSAM2 keeps SAM2.1 tiny's parameters, so a SAM2.1 tiny checkpoint stands in for MedSAM2_latest.pt here."""
    medsam2 = get_model_spec("medsam2")
    serve(served, medsam2.filename, tiny_checkpoint_bytes)
    monkeypatch.setenv(MIRROR_ENV, served[1])
    code, out, _ = run_models_command(["download", "medsam2", "--json-progress"])
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[0] == {"event": "warning", "message": medsam2.license_notice}
    assert "CC-BY-SA-4.0" in events[0]["message"] and events[1]["event"] == "progress"
    assert events[-1] == {"event": "done", "output": str(cache / medsam2.filename)}
    digests = json.loads((cache / DIGESTS_FILE).read_text())
    assert digests == {medsam2.filename: hashlib.sha256(tiny_checkpoint_bytes).hexdigest()}
