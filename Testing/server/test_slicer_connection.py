"""The Slicer module's "Test connection" line against a real server: what it shows, and the client's errors."""

from __future__ import annotations

import pytest
from server_helpers import TOKEN, free_port, running_server

from FateSAMLib.errors import FateSAMError
from FateSAMLib.models.registry import model_names
from FateSAMLib.remote import ServerClient
from FateSAMLib.slicer.parameters import connection_summary


def test_the_connection_line_shows_the_servers_models_and_the_clients_errors(tmp_path):
    with running_server(work_dir=tmp_path) as served:
        line = connection_summary(served.url, ServerClient(served.url, TOKEN, timeout_s=10).models())
        assert line.startswith(f"Connected to {served.url}: default model ") and " on cpu; " in line
        assert line.endswith(f"models: {', '.join(model_names())}.")
        with pytest.raises(FateSAMError, match="Check the token"):
            ServerClient(served.url, "wrong-token", timeout_s=10).models()
    with pytest.raises(FateSAMError, match="Cannot reach the FateSAM server"):
        ServerClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=10).models()
