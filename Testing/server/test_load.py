"""20 concurrent clients on loopback: every job completes or is refused (503), none is lost or mixed up."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import SimpleITK as sitk
from server_helpers import running_server, small_inputs

from FateSAMLib.progress import FINISHED_STATES
from FateSAMLib.remote import ServerBusy

CLIENTS = 20


def test_twenty_concurrent_clients_each_get_their_own_result_or_a_503(tmp_path):
    inputs = small_inputs(tmp_path)
    query = sitk.ReadImage(str(inputs.query))
    queries = []
    for index in range(CLIENTS):  # the same voxels at a different place: each result must lie on its own query
        moved = sitk.Image(query)
        moved.SetOrigin([value + 10.0 * index for value in query.GetOrigin()])
        queries.append(tmp_path / f"query-{index}.nii.gz")
        sitk.WriteImage(moved, str(queries[-1]))
    latencies: dict[str, list[float]] = {"submit": [], "poll": [], "download": []}
    outcomes: dict[int, str] = {}
    lock = threading.Lock()

    def timed(kind: str, call):
        started = time.perf_counter()
        try:
            return call()
        finally:
            with lock:
                latencies[kind].append(time.perf_counter() - started)

    with running_server(work_dir=tmp_path / "server", workers=1, queue_size=4) as served:
        set_id = served.client().upload_support_set(inputs.supports)
        barrier = threading.Barrier(CLIENTS)

        def client_run(index: int) -> None:
            client = served.client()
            barrier.wait(30)
            try:
                job_id = timed("submit", lambda: client.submit(queries[index], set_id))
            except ServerBusy:
                outcomes[index] = "busy"
                return
            deadline = time.monotonic() + 240
            while (state := timed("poll", lambda: client.job(job_id)))["state"] not in FINISHED_STATES:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            if state["state"] != "succeeded":
                outcomes[index] = state["state"]
                return
            result = tmp_path / f"result-{index}.seg.nrrd"
            timed("download", lambda: client.download(job_id, result))
            outcomes[index] = "succeeded"

        started = time.perf_counter()
        threads = [threading.Thread(target=client_run, args=(index,)) for index in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        elapsed = time.perf_counter() - started
        assert not any(thread.is_alive() for thread in threads)

    assert len(outcomes) == CLIENTS and set(outcomes.values()) <= {"succeeded", "busy"}, outcomes
    done = [index for index, outcome in outcomes.items() if outcome == "succeeded"]
    assert len(done) >= 5  # one running and four waiting, at the least
    reference = None
    for index in done:
        result = sitk.ReadImage(str(tmp_path / f"result-{index}.seg.nrrd"))
        expected_origin = sitk.ReadImage(str(queries[index])).GetOrigin()
        np.testing.assert_allclose(result.GetOrigin(), expected_origin, atol=1e-4)
        array = sitk.GetArrayFromImage(result)
        reference = array if reference is None else reference
        np.testing.assert_array_equal(array, reference)
    figures = {kind: (statistics.median(values), max(values)) for kind, values in latencies.items() if values}
    calls = ", ".join(
        f"{kind} median {mid * 1e3:.0f} ms, max {top * 1e3:.0f} ms" for kind, (mid, top) in figures.items()
    )
    print(f"\nload: {CLIENTS} clients, {len(done)} done, {CLIENTS - len(done)} refused (503), {elapsed:.1f} s; {calls}")
