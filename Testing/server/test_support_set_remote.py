"""``fatesam segment --server URL --support-set DIR``: the set's files are uploaded as ``--support`` files are, and
the result is what the same set gives here."""

from __future__ import annotations

import pytest
from conftest import write_support_set
from server_helpers import ENGINE, TOKEN, running_server, small_inputs

from FateSAMLib.cli.main import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return small_inputs(tmp_path_factory.mktemp("inputs"))


def test_a_support_set_runs_on_the_server_as_here_and_is_stored_as_its_support_files(inputs, tmp_path):
    folder = write_support_set(tmp_path / "set", inputs.supports)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    query = ["--query", str(inputs.query)]
    local, remote = tmp_path / "local.nii.gz", tmp_path / "remote.nii.gz"
    assert main(["segment", "--support-set", str(folder), *query, "--output", str(local), *ENGINE]) == 0
    with running_server(work_dir=tmp_path / "server") as served:
        server = ["--server", served.url, "--token-file", str(token_file)]
        assert main(["segment", "--support-set", str(folder), *query, "--output", str(remote), *server]) == 0
        assert remote.read_bytes() == local.read_bytes()
        assert len(served.service.store) == 1
        served.client().upload_support_set(inputs.supports)  # the same files given as --support: already there
        assert len(served.service.store) == 1
