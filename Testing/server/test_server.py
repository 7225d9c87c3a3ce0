"""``fatesam serve`` end to end on 127.0.0.1: results equal to local runs, tokens, uploads, errors, cancel, queue."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import stat
import time
import urllib.parse
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import cut_short
from server_helpers import ENGINE, TOKEN, files_under, running_server, serve_process, small_inputs, wait_for, written

from FateSAMLib.cli.main import main
from FateSAMLib.errors import InputError
from FateSAMLib.io.images import read_image
from FateSAMLib.method.pipeline import load_support
from FateSAMLib.remote import CorrectionFiles, ServerBusy, ServerError
from FateSAMLib.server.tokens import load_or_create_token


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return small_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_server(work_dir=tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path


def request(served, method: str, path: str, body=None, headers=None) -> tuple[int, dict, dict]:
    """One raw HTTP request: (status, JSON body, headers)."""
    address = urllib.parse.urlsplit(served.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(method, f"/v1{path}", body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}, dict(response.getheaders())
    finally:
        connection.close()


def multipart(files: list[tuple[str, str, bytes]], fields: dict | None = None) -> tuple[bytes, dict]:
    boundary = "testboundary1234"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    for name, filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {TOKEN}"}


def test_a_remote_job_writes_what_a_local_run_writes_and_a_support_set_is_stored_and_encoded_once(
    served, inputs, tmp_path, token_file, capsys
):
    local, remote, again = tmp_path / "local.seg.nrrd", tmp_path / "remote.seg.nrrd", tmp_path / "again.seg.nrrd"
    started = time.perf_counter()
    assert main([*inputs.segment_args(local), *ENGINE, "--stats-json", str(tmp_path / "local.json")]) == 0
    local_seconds = time.perf_counter() - started
    started = time.perf_counter()
    remote_args = ["--server", served.url, "--token-file", str(token_file), "--stats-json", str(tmp_path / "r.json")]
    assert main([*inputs.segment_args(remote), *remote_args]) == 0
    remote_seconds = time.perf_counter() - started
    assert "RANDOM WEIGHTS" in capsys.readouterr().err  # the server's warnings reach the client
    local_image, remote_image = sitk.ReadImage(str(local)), sitk.ReadImage(str(remote))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(local_image), sitk.GetArrayFromImage(remote_image))
    assert local_image.GetOrigin() == remote_image.GetOrigin() and local_image.GetSpacing() == remote_image.GetSpacing()
    assert written(remote) == written(local)
    first = json.loads((tmp_path / "r.json").read_text())
    assert first["support_slices_encoded"] > 0
    local_stats = json.loads((tmp_path / "local.json").read_text())  # the server's result has volumes and provenance
    assert first["volumes"] == local_stats["volumes"] and first["provenance"]

    def retrieved(stats: dict) -> list:
        return [[(used["support"], used["slice_index"]) for used in entry["supports"]] for entry in stats["provenance"]]

    assert retrieved(first) == retrieved(local_stats)

    os.environ.pop("FATESAM_TOKEN", None)
    assert main([*inputs.segment_args(again), "--server", served.url, "--token-file", str(token_file), "--stats-json",
                 str(tmp_path / "again.json")]) == 0  # fmt: skip
    second = json.loads((tmp_path / "again.json").read_text())
    assert second["support_slices_encoded"] == 0 and second["encoder_passes"] == 0  # the same query: all cached
    assert written(again) == written(local)
    client = served.client()
    ids = {client.upload_support_set(inputs.supports) for _ in range(2)}
    assert len(ids) == 1 and len(served.service.store) == 1
    image, labels = inputs.supports[0]
    body, headers = multipart([("images", "a.nii.gz", image.read_bytes()), ("labels", "b.nii.gz", labels.read_bytes())])
    status, answer, _ = request(served, "POST", "/support-sets", body, headers)
    assert (status, answer["created"], answer["id"]) == (200, False, ids.pop())
    print(f"\nend to end: local {local_seconds:.2f} s, remote {remote_seconds:.2f} s")


def test_every_route_but_health_needs_the_token(served):
    assert served.client(token=None).health()["status"] == "ok"
    for token in (None, "wrong-token"):
        for method, path in (("GET", "/models"), ("GET", "/jobs/x"), ("DELETE", "/jobs/x"), ("POST", "/jobs")):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status, answer, response_headers = request(served, method, path, headers=headers)
            assert status == 401 and response_headers["www-authenticate"] == "Bearer", (method, path)
            assert "Authorization: Bearer" in answer["detail"]
    with pytest.raises(ServerError, match="Check the token"):
        served.client(token="wrong").models()
    assert "sam2.1-tiny" in served.client().models()["models"]


def test_the_token_is_created_once_private_and_refused_when_others_can_read_it(tmp_path):
    token, path, created = load_or_create_token(tmp_path / "config" / "server-token")
    assert created and len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == (token, path, False)
    path.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_or_create_token(path)


def test_a_path_in_an_upload_name_never_reaches_the_file_system(served, inputs):
    image, labels = inputs.supports[0]
    names = ("../../../../tmp/fatesam-evil.nii.gz", "/etc/fatesam-evil-labels.nii.gz")
    body, headers = multipart([("images", names[0], image.read_bytes()), ("labels", names[1], labels.read_bytes())])
    status, answer, _ = request(served, "POST", "/support-sets", body, headers)
    assert status in (200, 201), answer
    assert not Path("/tmp/fatesam-evil.nii.gz").exists() and not Path("/etc/fatesam-evil-labels.nii.gz").exists()
    stored = files_under(served.service.folder)
    assert stored and not any("evil" in str(path) for path in stored)
    body, headers = multipart([("images", "../notes.txt", b"x"), ("labels", "l.nii.gz", b"y")])
    status, answer, _ = request(served, "POST", "/support-sets", body, headers)
    assert status == 422 and "'notes.txt' is not a supported file" in answer["detail"]


def test_an_upload_over_the_limit_is_refused_while_it_streams_and_nothing_is_kept(tmp_path):
    with running_server(work_dir=tmp_path, max_upload_bytes=1024 * 1024) as served:
        sent = []

        def chunks():
            yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="big.nii.gz"\r\n\r\n'
            for _ in range(64):  # 4 MB, no Content-Length: only counting the stream can stop it
                sent.append(1)
                yield b"\0" * 65536

        address = urllib.parse.urlsplit(served.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        headers = {"Content-Type": "multipart/form-data; boundary=b", "Authorization": f"Bearer {TOKEN}"}
        try:
            connection.request("POST", "/v1/support-sets", body=chunks(), headers=headers, encode_chunked=True)
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (BrokenPipeError, ConnectionResetError):
            pytest.fail("the server closed the connection without answering")
        finally:
            connection.close()
        assert response.status == 413 and "limit of 1 MB" in answer["detail"]
        body, declared = multipart([("images", "a.nii.gz", b"\0" * (2 * 1024 * 1024))])
        status, answer, _ = request(served, "POST", "/support-sets", body, declared)
        assert status == 413 and "nothing of it was kept" in answer["detail"]
        assert files_under(served.service.folder) == [] and len(served.service.store) == 0


def test_damaged_and_mismatched_inputs_are_refused_with_the_command_lines_message(served, inputs, tmp_path):
    client = served.client()
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(inputs.query.read_bytes())
    cut_short(damaged, 0.5)
    with pytest.raises(InputError) as refused:
        read_image(damaged)
    set_id = client.upload_support_set(inputs.supports)
    with pytest.raises(InputError) as remote:
        client.submit(damaged, set_id)
    assert str(remote.value) == str(refused.value).replace(str(damaged), damaged.name)
    assert remote.value.status == 422
    image, _ = inputs.supports[0]
    other_labels = tmp_path / "other_labels.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(inputs.labels))[:, :, :3], str(other_labels))
    with pytest.raises(InputError) as refused:
        load_support(image, other_labels)
    with pytest.raises(InputError) as remote:
        client.upload_support_set([(image, other_labels)])
    message = str(refused.value).replace(str(image), image.name).replace(str(other_labels), other_labels.name)
    assert str(remote.value) == message and remote.value.status == 422
    with pytest.raises(InputError, match="--top-k must be a whole number"):
        client.submit(inputs.query, set_id, {"top_k": 0})
    with pytest.raises(InputError, match="A job cannot set 'checkpoint'"):
        client.submit(inputs.query, set_id, {"checkpoint": "/etc/passwd"})
    assert not any(path.name.startswith("result") for path in files_under(served.service.jobs_folder))


def test_a_jobs_values_are_checked_as_values_and_never_reach_the_servers_options_or_files(served, inputs):
    """A job is a typed request (no command line is parsed), and a value that is no setting is refused before it."""
    client = served.client()
    set_id = client.upload_support_set(inputs.supports)
    for settings, segments, message in (
        ({}, ["1", "--query", "/etc/hostname"], "No support has the segment '--query'"),
        ({"window": [0, 1, "--overwrite"]}, None, r"window must be \(level, width\)"),
        ({"feature_cache": "/tmp/fatesam-evil"}, None, "A job cannot set 'feature_cache'"),
        ({"top_k": "--overwrite"}, None, "--top-k must be a whole number"),
    ):
        with pytest.raises(InputError, match=message) as refused:
            client.submit(inputs.query, set_id, settings, segments)
        assert refused.value.status == 422
    assert list(served.service.jobs_folder.iterdir()) == [] and not Path("/tmp/fatesam-evil").exists()


def detached_headers(folder: Path, query: Path) -> dict[str, Path]:
    """Headers on the query's grid (3 axial slices) that name another file as their voxels' (an attack on uploads)."""
    x, y, z = sitk.ReadImage(str(query)).GetSize()
    nrrd = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: {} {} {}\nencoding: raw\ndata file: {}\n\n"
    meta = "ObjectType = Image\nNDims = 3\nDimSize = {} {} {}\nElementType = MET_UCHAR\nElementDataFile = {}\n"
    files = {
        "absolute.nrrd": nrrd.format(x, y, z, "/etc/passwd"),
        "relative.seg.nrrd": nrrd.format(x, y, z, "../" * 12 + "etc/passwd"),
        "elsewhere.mha": meta.format(x, y, z, "/etc/passwd"),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return {name: folder / name for name in files}


def test_an_upload_that_names_another_data_file_is_refused_and_nothing_of_that_file_is_read(served, inputs, tmp_path):
    client = served.client()
    set_id = client.upload_support_set(inputs.supports)
    for name, header in detached_headers(tmp_path, inputs.query).items():
        attempts = [
            partial(client.upload_support_set, [(inputs.image, header)]),
            partial(client.submit, inputs.query, set_id, corrections=CorrectionFiles(header, [0, 1, 2])),
        ]
        if not name.endswith(".seg.nrrd"):
            attempts += [
                partial(client.upload_support_set, [(header, inputs.labels)]),
                partial(client.submit, header, set_id),
            ]
        for attempt in attempts:
            with pytest.raises(InputError, match="detached header: it names another file that holds its voxels") as no:
                attempt()
            assert no.value.status == 422 and name in str(no.value) and str(served.service.folder) not in str(no.value)
    passwd = Path("/etc/passwd").read_bytes()[:32]
    assert list(served.service.jobs_folder.iterdir()) == [] and list(served.service.uploads.iterdir()) == []
    assert not any(passwd in path.read_bytes() for path in files_under(served.service.folder))


def test_an_upload_promising_more_voxels_than_the_limit_is_refused_before_it_is_read(served, inputs, tmp_path):
    bomb = tmp_path / "bomb.nrrd"  # 2 KB on the wire, 512 MiB of voxels once inflated
    header = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 512\nencoding: gzip\n\n"
    bomb.write_bytes(header + gzip.compress(b"\0" * 1024**2))
    assert bomb.stat().st_size < 4096
    client = served.client()
    for attempt in (lambda: client.submit(bomb, client.upload_support_set(inputs.supports)),
                    lambda: client.upload_support_set([(bomb, inputs.labels)])):  # fmt: skip
        with pytest.raises(InputError, match="bomb.nrrd: its header promises 536870912 voxel values") as refused:
            attempt()
        assert refused.value.status == 422 and f"at most {512 * 512 * 2000} voxel values" in str(refused.value)
    assert list(served.service.jobs_folder.iterdir()) == [] and list(served.service.uploads.iterdir()) == []


@pytest.mark.parametrize("field", ["settings", "segments", "corrected_slices"])
def test_nested_or_huge_json_in_a_form_field_is_422_with_one_message(served, inputs, field):
    set_id = served.client().upload_support_set(inputs.supports)
    for text, problem in (
        ("[" * 10_000, "nests arrays or objects more than 32 levels deep"),
        ("1" * 70_000, "is too large"),
    ):
        body, headers = multipart(
            [("query", "q.nii.gz", inputs.query.read_bytes())], {"support_set": set_id, field: text}
        )
        status, answer, _ = request(served, "POST", "/jobs", body, headers)
        assert (
            status == 422 and answer["detail"].startswith(f"The form field '{field}' ") and problem in answer["detail"]
        )
    assert list(served.service.jobs_folder.iterdir()) == []


def test_unknown_jobs_are_404_with_a_message(served):
    status, answer, _ = request(served, "GET", "/jobs/0123abcd", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and "Unknown job 0123abcd" in answer["detail"] and "restarted" in answer["detail"]


def test_cancel_mid_run_stops_the_job_within_a_slice(served, inputs):
    client = served.client()
    job_id = client.submit(inputs.long_query, client.upload_support_set(inputs.supports))
    wait_for(lambda: "Segmenting slice" in client.job(job_id)["message"], 120, "the job to segment")
    assert client.cancel(job_id)["state"] in ("running", "cancelled")
    cancelled_at = time.monotonic()
    state = wait_for(lambda: (job := client.job(job_id))["state"] != "running" and job, 30, "the cancel")
    assert state["state"] == "cancelled" and time.monotonic() - cancelled_at < 10
    with pytest.raises(ServerError, match="has no result"):
        client.download(job_id, Path("unused.seg.nrrd"))
    assert client.cancel(job_id)["state"] == "deleted"
    with pytest.raises(ServerError, match="Unknown job"):
        client.job(job_id)


def test_a_full_queue_answers_503_with_retry_after_and_shutdown_leaves_no_files(inputs, tmp_path):
    with running_server(work_dir=tmp_path, workers=1, queue_size=1) as served:
        client = served.client()
        set_id = client.upload_support_set(inputs.supports)
        running = client.submit(inputs.long_query, set_id)
        wait_for(lambda: client.job(running)["state"] == "running", 60, "the first job to start")
        waiting = client.submit(inputs.query, set_id)
        with pytest.raises(ServerBusy) as busy:
            client.submit(inputs.query, set_id)
        assert busy.value.retry_after_s >= 1 and "try again in" in str(busy.value)
        assert client.job(waiting)["state"] == "queued"
        wait_for(lambda: "Segmenting slice" in client.job(running)["message"], 120, "the job to segment")
        folder = served.service.folder
        assert files_under(folder)
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 30
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_the_serve_command_creates_a_private_token_serves_and_stops_on_sigterm(tmp_path):
    with serve_process(tmp_path) as served:
        token_file = tmp_path / "config" / "server-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and served.token in "".join(served.lines)
        client = served.client()
        assert client.health()["status"] == "ok" and client.models()["defaults"]["random_weights"] is True
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0
    assert not [path for path in tmp_path.iterdir() if path.name.startswith("fatesam-server-")]


def test_serve_refuses_no_auth_off_loopback_and_half_a_tls_pair(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--no-auth"]) == 1
    assert "--no-auth is for this computer only" in capsys.readouterr().err
    assert main(["serve", "--ssl-certfile", "cert.pem"]) == 1
    assert "go together" in capsys.readouterr().err


def test_an_unknown_segment_is_refused_at_submit_with_the_command_lines_message(served, inputs):
    from FateSAMLib.method.pipeline import merge_segments, select_segments

    with pytest.raises(InputError) as refused:
        select_segments(merge_segments([load_support(*inputs.supports[0])])[0], ["1", "amygdala"])
    client = served.client()
    set_id = client.upload_support_set(inputs.supports)
    with pytest.raises(InputError) as remote:
        client.submit(inputs.query, set_id, segments=["1", "amygdala"])
    assert remote.value.status == 422 and str(remote.value) == str(refused.value)
    assert "No support has the segment 'amygdala'" in str(remote.value)
    assert list(served.service.jobs_folder.iterdir()) == []  # no job was queued, nothing of it kept
