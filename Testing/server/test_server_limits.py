"""What no client can do to a ``fatesam serve`` server: hold it with a stalled request, keep it from stopping, leave
files behind when it is killed; and its options checked before it listens (a real server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from server_helpers import TOKEN, files_under, running_server, serve_process, small_inputs, wait_for

from FateSAMLib.cli.main import main
from FateSAMLib.cli.serve import check_tls
from FateSAMLib.errors import InputError
from FateSAMLib.remote import ServerClient, ServerError
from FateSAMLib.server.work_folder import PREFIX, STARTING_PREFIX, WorkFolder

UPLOAD_HEAD = (
    "POST /v1/support-sets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
    '--b\r\nContent-Disposition: form-data; name="images"; filename="a.nii.gz"\r\n\r\n'
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return small_inputs(tmp_path_factory.mktemp("inputs"))


def server_folders(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.name.startswith(PREFIX))


def answer_of(connection: socket.socket, timeout_s: float, trickle: bool) -> bytes:
    """What the server sends on ``connection`` until it closes it (at most ``timeout_s``); with ``trickle``, one
    byte of body every 0.2 s meanwhile."""
    connection.settimeout(0.2)
    received, deadline = b"", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if trickle:
                connection.sendall(b"\0")
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # closed while a byte was on its way
            break
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_an_upload_that_stalls_or_trickles_is_cut_with_408_and_nothing_is_kept(tmp_path, trickle):
    with running_server(work_dir=tmp_path, upload_timeout_s=1.0) as served:
        port = int(served.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(UPLOAD_HEAD.format(token=TOKEN).encode() + b"\0" * 1000)
            started = time.monotonic()
            answer = answer_of(connection, 30, trickle)
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"The upload stalled or arrived too slowly (this server allows 1 s plus 10 s per MB)" in answer
        assert elapsed < 10  # cut after about 1 s, and the connection closed
        assert files_under(served.service.folder) == [] and len(served.service.store) == 0


def test_sigterm_stops_the_server_within_seconds_whatever_stalled_clients_do(tmp_path):
    with serve_process(tmp_path) as served:
        port = int(served.url.rsplit(":", 1)[1])
        (folder,) = server_folders(tmp_path)
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        try:
            stalled[0].sendall(UPLOAD_HEAD.format(token=served.token).encode())  # headers, then no body
            stalled[1].sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
            time.sleep(2)  # both are in the server's hands
            served.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = served.process.wait(30)
            elapsed = time.monotonic() - signalled
        finally:
            for connection in stalled:
                connection.close()
    assert code == 0 and elapsed < 10, elapsed  # 3 s of grace for running requests, then the shutdown
    assert not folder.exists() and server_folders(tmp_path) == []


def test_a_killed_servers_files_are_removed_at_the_next_start_and_nothing_else(tmp_path, inputs):
    work = tmp_path / "work"
    work.mkdir()
    mine = work / f"{PREFIX}my-notes"  # a user's folder with the same prefix but no server lock: not ours
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (work / "report.txt").write_text("mine")
    with serve_process(tmp_path, "--work-dir", str(work)) as first:
        client = first.client()
        job = client.submit(inputs.query, client.upload_support_set(inputs.supports))
        wait_for(lambda: client.job(job)["state"] == "succeeded", 180, "the job to finish", interval_s=0.5)
        (killed,) = [path for path in server_folders(work) if path != mine]
        kept = {path.relative_to(killed).parts[0] for path in files_under(killed)}
        assert {"support-sets", "jobs", "features"} <= kept  # support sets, results and query features
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    assert files_under(killed)  # SIGKILL leaves them: no process can clean up after it
    with serve_process(tmp_path, "--work-dir", str(work)) as second:
        (running,) = [path for path in server_folders(work) if path != mine]
        assert not killed.exists() and running != killed
        assert (mine / "notes.txt").read_text() == "mine" and (work / "report.txt").read_text() == "mine"
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(30) == 0
    assert sorted(work.iterdir()) == [mine, work / "report.txt"]


def test_a_running_servers_folder_is_never_taken_for_a_leftover(tmp_path):
    first = WorkFolder(tmp_path)
    (first.path / "upload.nii.gz").write_bytes(b"data")
    old_start, new_start = tmp_path / f"{STARTING_PREFIX}old", tmp_path / f"{STARTING_PREFIX}new"
    old_start.mkdir()
    new_start.mkdir()
    os.utime(old_start, (time.time() - 3600, time.time() - 3600))  # a server killed while it started, long ago
    second = WorkFolder(tmp_path)
    try:
        assert second.removed == [old_start] and (first.path / "upload.nii.gz").read_bytes() == b"data"
        assert new_start.exists()  # perhaps a server starting right now
    finally:
        first.close()
        second.close()
    assert sorted(tmp_path.iterdir()) == [new_start]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-upload-mb", "nan"], "--max-upload-mb must be a finite number (got nan)"),
        (["--max-upload-mb", "inf"], "--max-upload-mb must be a finite number (got inf)"),
        (["--max-upload-mb", "-3"], "--max-upload-mb must be above 0 (got -3)"),
        (["--port", "70000"], "--port must be a whole number from 1 to 65535 (got 70000)"),
        (["--abandon-minutes", "-1"], "--abandon-minutes must be above 0 (got -1)"),
        (["--keep-results-minutes", "nan"], "--keep-results-minutes must be a finite number (got nan)"),
        (["--keep-support-sets-hours", "0"], "--keep-support-sets-hours must be above 0 (got 0)"),
        (["--workers", "0"], "--workers must be a whole number of at least 1 (got 0)"),
        (["--queue-size", "two"], "'two' is not a whole number"),
        (["--max-voxels", "0"], "--max-voxels must be a whole number of at least 1 (got 0)"),
        (["--upload-timeout-seconds", "inf"], "--upload-timeout-seconds must be a finite number (got inf)"),
        (["--ssl-certfile", "{tmp}/cert.pem"], "--ssl-certfile and --ssl-keyfile go together"),
        (["--ssl-certfile", "{tmp}/no.pem", "--ssl-keyfile", "{tmp}/no.pem"], "--ssl-certfile {tmp}/no.pem is not a"),
        (["--ssl-certfile", "{tmp}/junk.pem", "--ssl-keyfile", "{tmp}/junk.pem"], "cannot be used ("),
        (["--work-dir", "{tmp}/junk.pem/work"], "Cannot create the work folder {tmp}/junk.pem/work (Not a directory)"),
        (["--host", "0.0.0.0", "--no-auth"], "--no-auth is for this computer only"),
    ],
)
def test_every_serve_option_is_checked_before_the_server_starts(tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.setenv("FATESAM_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    options = [option.format(tmp=tmp_path) for option in options]
    assert main(["serve", "--work-dir", str(tmp_path / "work"), *options]) == 1
    error = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in error and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "config").exists()  # refused before a token was made


def test_a_port_in_use_is_one_message(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--no-auth", "--port", str(port), "--work-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port" in error


def test_a_real_certificate_and_key_are_accepted(tmp_path):
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
    try:
        subprocess.run([*command, "-keyout", key, "-out", certificate], check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("openssl is not installed")
    check_tls(certificate, key)
    with pytest.raises(InputError, match="cannot be used"):
        check_tls(certificate, certificate)  # a certificate is no key


def test_the_client_refuses_nested_or_huge_answers_with_one_message():
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = b"[" * 100_000 if self.path.endswith("health") else b'{"a": "' + b"x" * 2 * 1024**2 + b'"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_address[1]}", "token", timeout_s=30)
        with pytest.raises(ServerError, match="to GET /health nests arrays or objects more than 32 levels deep"):
            client.health()
        with pytest.raises(ServerError, match=r"to GET /models is too large \(over 1048576 bytes"):
            client.models()
    finally:
        server.shutdown()
        server.server_close()
