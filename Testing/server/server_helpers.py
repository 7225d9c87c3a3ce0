"""A real ``fatesam serve`` application on 127.0.0.1 (uvicorn in a thread, a free port), and small real inputs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is needed: pip install -e '.[server]'")

import SimpleITK as sitk  # noqa: E402
import uvicorn  # noqa: E402
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths  # noqa: E402

from FateSAMLib.options import RunSettings  # noqa: E402
from FateSAMLib.remote import ServerClient  # noqa: E402
from FateSAMLib.server.app import ServerConfig, Service, create_app  # noqa: E402
from FateSAMLib.server.work_folder import LOCK_NAME  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"
ENGINE = ("--random-weights", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu", "--slice-axis", "axial")
"""The server's options: those of the local runs the tests compare with."""
SETTINGS = RunSettings(random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", slice_axis="axial")
"""The same settings as the server takes them."""


@dataclass
class Served:
    """A running server: its address, application and state."""

    url: str
    server: uvicorn.Server
    app: object

    @property
    def service(self) -> Service:
        return self.app.state.service

    def client(self, token: str | None = TOKEN) -> ServerClient:
        return ServerClient(self.url, token, timeout_s=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(**config: object) -> Iterator[Served]:
    """Serve on a free loopback port, once its workers have loaded the model, until the block ends (uvicorn's
    shutdown then runs the lifespan's)."""
    config = {"settings": SETTINGS, "token": TOKEN, **config}
    app = create_app(ServerConfig(**config))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, "the server to start")
    assert thread.is_alive(), "the server did not start"
    try:
        served = Served(f"http://127.0.0.1:{port}", server, app)
        wait_for(lambda: served.service.predictors.counts()["models_loaded"], 120, "the workers to load the model")
        yield served
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"


@dataclass
class ServeProcess:
    """``fatesam serve`` running as its own process: the process, its address and its start-up lines."""

    process: subprocess.Popen
    url: str
    token: str
    lines: list[str]

    def client(self) -> ServerClient:
        return ServerClient(self.url, self.token, timeout_s=60)


@contextmanager
def serve_process(folder: Path, *options: str) -> Iterator[ServeProcess]:
    """``fatesam serve`` in a process of its own on a free loopback port, with its config folder and ``TMPDIR`` in
    ``folder``, answering once the block starts; killed at the end if still running."""
    port = free_port()
    environment = {**os.environ, "FATESAM_CONFIG_DIR": str(folder / "config"), "TMPDIR": str(folder)}
    command = [sys.executable, "-m", "FateSAMLib.cli", "serve", "--port", str(port), *ENGINE, *options]
    process = subprocess.Popen(command, cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "FateSAM server on" in line or len(lines) > 50:
                break
        assert process.poll() is None, "".join(lines)
        # keep reading what it logs (a line per request), or a full pipe would stop it
        threading.Thread(target=lines.extend, args=(process.stderr,), name="serve-log", daemon=True).start()
        token = (folder / "config" / "server-token").read_text().strip()
        served = ServeProcess(process, f"http://127.0.0.1:{port}", token, lines)
        wait_for(lambda: served.client().health()["status"] == "ok", 60, "the server to answer")
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.02) -> object:
    """Poll ``condition`` until it is true, at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)
    return value


@dataclass(frozen=True)
class Inputs:
    """A support (image, labels) and queries, cropped from real hippocampus MRIs to a few axial slices."""

    image: Path
    labels: Path
    query: Path
    long_query: Path  # the whole volume: a run of seconds, to cancel or interrupt

    @property
    def supports(self) -> list[tuple[Path, Path]]:
        return [(self.image, self.labels)]

    def segment_args(self, output: Path) -> list[str]:
        """``fatesam segment`` of the query with the support, into ``output``."""
        return ["segment", "--support", str(self.image), str(self.labels), "--query", str(self.query), "--output",
                str(output)]  # fmt: skip


def small_inputs(folder: Path) -> Inputs:
    """Write the test inputs into ``folder``."""
    image, labels = (sitk.ReadImage(str(path)) for path in case_paths(HIPPOCAMPUS, "hippocampus_001"))
    query = sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_004")[0]))
    paths = Inputs(folder / "s1.nii.gz", folder / "s1_labels.nii.gz", folder / "q.nii.gz", folder / "long.nii.gz")
    sitk.WriteImage(image[:, :, 14:18], str(paths.image))
    sitk.WriteImage(labels[:, :, 14:18], str(paths.labels))
    sitk.WriteImage(query[:, :, 15:18], str(paths.query))
    sitk.WriteImage(query, str(paths.long_query))
    return paths


def written(path: Path) -> bytes:
    """A file's bytes but the writer's timestamp comment ("# on 2026-01-01 10:00:00(GMT).")."""
    return re.sub(rb"\n# on [^\n]*\n", b"\n", path.read_bytes(), count=1)


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` but a server's lock file (which holds nothing a client sent)."""
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != LOCK_NAME)
