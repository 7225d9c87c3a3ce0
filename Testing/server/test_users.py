"""Named users: tokens shown once and stored hashed (0600); a job, its files and its result are its user's only
(another user gets 404); per-user limits; one log line per job start and end, without patient data or file names."""

from __future__ import annotations

import logging
import re
import stat
import urllib.error
import urllib.request

import pytest
from server_helpers import running_server, small_inputs, wait_for

from FateSAMLib.cli.main import main
from FateSAMLib.errors import InputError
from FateSAMLib.progress import FINISHED_STATES
from FateSAMLib.remote import ServerClient, ServerError
from FateSAMLib.server.users import Users, add_user, token_digest


def test_adding_a_user_prints_the_token_once_and_keeps_only_its_hash_private(tmp_path, capsys):
    users_file = tmp_path / "config" / "users.json"
    assert main(["users", "add", "alice", "--users", str(users_file)]) == 0
    token = capsys.readouterr().out.strip()
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    text = users_file.read_text()
    assert token not in text and token_digest(token) in text
    assert Users.read(users_file).user_of(token) == "alice"
    assert Users.read(users_file).user_of(token + "x") is None
    bob = add_user(users_file, "bob")
    assert Users.read(users_file).user_of(bob) == "bob" and stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert main(["users", "add", "alice", "--users", str(users_file)]) == 1
    assert "has a user 'alice' already" in capsys.readouterr().err
    users_file.chmod(0o644)
    with pytest.raises(InputError, match="readable by other users"):
        Users.read(users_file)


def test_another_user_cannot_see_list_poll_download_or_cancel_a_job(tmp_path, caplog):
    users_file = tmp_path / "users.json"
    alice, bob = add_user(users_file, "alice"), add_user(users_file, "bob")
    inputs = small_inputs(tmp_path)
    caplog.set_level(logging.INFO, logger="fatesam.server")
    with running_server(work_dir=tmp_path / "server", users=Users.read(users_file), token=None) as served:
        as_alice, as_bob = ServerClient(served.url, alice), ServerClient(served.url, bob)
        set_id = as_alice.upload_support_set(inputs.supports)
        job_id = as_alice.submit(inputs.query, set_id)
        wait_for(lambda: as_alice.job(job_id)["state"] in FINISHED_STATES, 120, "the job")
        assert as_alice.job(job_id)["state"] == "succeeded"
        assert [job["id"] for job in as_alice._json("GET", "/jobs")["jobs"]] == [job_id]
        assert as_bob._json("GET", "/jobs")["jobs"] == []
        for attempt in (
            lambda: as_bob.job(job_id),
            lambda: as_bob.download(job_id, tmp_path / "stolen.seg.nrrd"),
            lambda: as_bob._request("GET", f"/jobs/{job_id}/stats"),
            lambda: as_bob.cancel(job_id),
        ):
            with pytest.raises(ServerError) as refused:
                attempt()
            assert refused.value.status == 404 and "Unknown job" in str(refused.value)
        assert not as_bob.has_support_set(set_id)  # alice's upload is hers
        with pytest.raises(ServerError) as refused:
            as_bob.submit(inputs.query, set_id)
        assert refused.value.status == 404
        assert as_alice.job(job_id)["state"] == "succeeded" and not (tmp_path / "stolen.seg.nrrd").exists()
        request = urllib.request.Request(f"{served.url}/v1/jobs", headers={"Authorization": "Bearer nobody"})
        with pytest.raises(urllib.error.HTTPError) as unauthorized:
            urllib.request.urlopen(request, timeout=10)
        assert unauthorized.value.code == 401
    lines = [record.getMessage() for record in caplog.records if record.name == "fatesam.server"]
    assert f"Job {job_id} of user alice started" in lines
    assert any(re.fullmatch(rf"Job {job_id} of user alice succeeded after \d+\.\d s", line) for line in lines)
    assert not any(name in line for line in lines for name in ("q.nii.gz", "s1", str(tmp_path)))


def test_per_user_limits_on_unfinished_jobs_and_stored_support_sets(tmp_path):
    users_file = tmp_path / "users.json"
    alice, bob = add_user(users_file, "alice"), add_user(users_file, "bob")
    inputs = small_inputs(tmp_path)
    other_labels = tmp_path / "other_labels.nii.gz"
    other_labels.write_bytes(inputs.labels.read_bytes())  # the same labels, another file: the same content hash
    limits = {"jobs_per_user": 1, "support_sets_per_user": 1, "users": Users.read(users_file), "token": None}
    with running_server(work_dir=tmp_path / "server", **limits) as served:
        as_alice, as_bob = ServerClient(served.url, alice), ServerClient(served.url, bob)
        set_id = as_alice.upload_support_set(inputs.supports)
        assert as_alice.upload_support_set([(inputs.image, other_labels)]) == set_id  # equal content: no second set
        with pytest.raises(ServerError) as refused:
            as_alice.upload_support_set([(inputs.long_query, inputs.labels)])  # another set: over her limit
        assert refused.value.status == 429 and "limit per user" in str(refused.value)
        running = as_alice.submit(inputs.long_query, set_id)
        with pytest.raises(ServerError) as refused:
            as_alice.submit(inputs.query, set_id)
        assert refused.value.status == 429 and "limit per user" in str(refused.value)
        bob_set = as_bob.upload_support_set(inputs.supports)  # bob's own limits: the same content is his too
        bob_job = as_bob.submit(inputs.query, bob_set)
        if as_alice.cancel(running)["state"] != "deleted":  # (a job that had ended is deleted instead)
            wait_for(lambda: as_alice.job(running)["state"] in FINISHED_STATES, 60, "the cancel")
        wait_for(lambda: as_bob.job(bob_job)["state"] in FINISHED_STATES, 120, "bob's job")
        assert as_bob.job(bob_job)["state"] == "succeeded"
        assert as_alice.submit(inputs.query, set_id)  # her job ended: she may submit again


def test_serve_refuses_a_users_file_that_is_missing_shared_or_mixed_with_one_token(tmp_path, capsys):
    users_file = tmp_path / "users.json"
    assert main(["serve", "--users", str(users_file)]) == 1
    assert "does not exist; add a user with 'fatesam users add" in capsys.readouterr().err
    add_user(users_file, "alice")
    assert main(["serve", "--users", str(users_file), "--no-auth"]) == 1
    assert "--users replaces the one token" in capsys.readouterr().err
    users_file.chmod(0o640)
    assert main(["serve", "--users", str(users_file)]) == 1
    assert "readable by other users" in capsys.readouterr().err
