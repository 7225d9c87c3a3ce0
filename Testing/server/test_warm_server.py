"""A warm server: the model loaded once at start-up for every job, a support slice encoded once for all of them, and
the same bytes from every door (command line, batch, server, Python API)."""

from __future__ import annotations

import json

from server_helpers import ENGINE, SETTINGS, running_server, small_inputs, wait_for, written

from FateSAMLib.cli.main import main
from FateSAMLib.method.predictor import FateSamPredictor
from FateSAMLib.progress import FINISHED_STATES
from FateSAMLib.summary import RunSummary


def test_five_sequential_jobs_load_the_model_once_and_every_door_writes_the_same_bytes(tmp_path):
    inputs = small_inputs(tmp_path)
    local = tmp_path / "local.seg.nrrd"
    assert main([*inputs.segment_args(local), *ENGINE]) == 0
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "q.nii.gz").write_bytes(inputs.query.read_bytes())
    batch = ["batch", "--support", str(inputs.image), str(inputs.labels), "--queries", str(queries)]
    assert main([*batch, "--output-dir", str(tmp_path / "batch"), "--format", ".seg.nrrd", *ENGINE]) == 0
    api = FateSamPredictor(SETTINGS).segment(inputs.query, supports=inputs.supports)
    api.write(tmp_path / "api.seg.nrrd")

    with running_server(work_dir=tmp_path / "server") as served:
        client = served.client()
        assert client.health()["model_loads"] == 1  # loaded at start-up, before any job
        set_id = client.upload_support_set(inputs.supports)
        stats = []
        for index in range(5):
            job_id = client.submit(inputs.query, set_id)
            wait_for(lambda job_id=job_id: client.job(job_id)["state"] in FINISHED_STATES, 120, "the job")
            assert client.job(job_id)["state"] == "succeeded"
            result, statistics = tmp_path / f"server-{index}.seg.nrrd", tmp_path / f"server-{index}.json"
            client.download(job_id, result, statistics)
            stats.append(json.loads(statistics.read_text()))
            assert written(result) == written(local)
        health = client.health()
    assert health["model_loads"] == 1 and health["models_loaded"] == 1
    summaries = [RunSummary.from_json(entry) for entry in stats]  # the typed schema reads what a job wrote
    assert [summary.to_json() for summary in summaries] == stats
    assert summaries[0].slice_axis == "axial" and summaries[0].doubtful_slices[0].axis == "axial"
    assert stats[0]["support_slices_encoded"] > 0
    assert all(entry["support_slices_encoded"] == 0 and entry["support_memories_encoded"] == 0 for entry in stats[1:])
    assert all(entry["seconds"]["model_load"] < 0.5 for entry in stats)  # no job loads the model
    assert written(tmp_path / "batch" / "q.seg.nrrd") == written(local)
    assert written(tmp_path / "api.seg.nrrd") == written(local)
