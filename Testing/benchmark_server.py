"""Benchmark of a warm ``fatesam serve`` against loading the model for every job (what the server did before it kept
its predictors warm): the latency of 5 sequential jobs, and the share of it that loading the model took.

Per model and input size, one small real case (``../shared/data``: a support cropped to 8 axial slices of
``hippocampus_001``, a query of 5 slices of ``hippocampus_004``):

- ``warm``: a real server on 127.0.0.1 (uvicorn in a thread) with the model loaded at start-up (``--max-models 1``);
  the support set is uploaded once, then 5 jobs are submitted one after another; a job's latency runs from its
  submission to its downloaded result (polled every 50 ms);
- ``per-job loading``: the same on a server that loads the model for every job (``--max-models 0``), as the server
  did before it kept its predictors warm.

Both share their feature cache between jobs, as the server always did: the first job encodes the support and query
slices, the next ones (the same query again) none, so from the second job on a job is memory attention, decoding
and, per-job, the model's loading.

Weights are random (timings do not depend on them; a real checkpoint adds its SHA-256 check to every load: 2.8 s for
SAM2.1-large's 900 MB). Usage::

    python Testing/benchmark_server.py --models sam2.1-tiny sam2.1-large --image-sizes 128 512 --json server.json
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import SimpleITK as sitk
import uvicorn

from FateSAMLib.options import RunSettings
from FateSAMLib.progress import FINISHED_STATES
from FateSAMLib.remote import ServerClient
from FateSAMLib.server.app import ServerConfig, create_app

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd_task04_hippocampus"
JOBS = 5
POLL_S = 0.05
TOKEN = "benchmark-token-0123456789"


def write_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """(support image, support labels, query), cropped from the hippocampus data."""
    image = sitk.ReadImage(str(DATA / "images" / "hippocampus_001.nii.gz"))
    labels = sitk.ReadImage(str(DATA / "labels" / "hippocampus_001.nii.gz"))
    query = sitk.ReadImage(str(DATA / "images" / "hippocampus_004.nii.gz"))
    paths = folder / "s.nii.gz", folder / "s_labels.nii.gz", folder / "q.nii.gz"
    for path, volume in zip(paths, (image[:, :, 12:20], labels[:, :, 12:20], query[:, :, 14:19]), strict=True):
        sitk.WriteImage(volume, str(path))
    return paths


def server_jobs(settings: RunSettings, inputs: tuple[Path, Path, Path], folder: Path, max_models: int) -> dict:
    """Latencies of ``JOBS`` sequential jobs on a real server: warm (``max_models`` 1: the model loaded at start-up)
    or loading the model for every job (``max_models`` 0, what the server did before)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(ServerConfig(settings=settings, token=TOKEN, work_dir=folder, max_models=max_models))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    client = ServerClient(f"http://127.0.0.1:{port}", TOKEN, timeout_s=600)
    try:
        while not server.started or (max_models and not app.state.service.predictors.counts()["models_loaded"]):
            time.sleep(0.05)
        start_up = time.perf_counter() - started
        set_id = client.upload_support_set([inputs[:2]])
        latencies, model_loads = [], []
        for index in range(JOBS):
            submitted = time.perf_counter()
            job_id = client.submit(inputs[2], set_id)
            while client.job(job_id)["state"] not in FINISHED_STATES:
                time.sleep(POLL_S)
            result, stats = folder / f"job-{index}.seg.nrrd", folder / f"job-{index}.json"
            client.download(job_id, result, stats)
            latencies.append(time.perf_counter() - submitted)
            model_loads.append(json.loads(stats.read_text())["seconds"]["model_load"])
        loads = client.health()["model_loads"]
    finally:
        server.should_exit = True
        thread.join(120)
    return {"start_up_s": start_up, "latencies_s": latencies, "model_load_s": model_loads, "model_loads": loads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["sam2.1-tiny", "sam2.1-large"])
    parser.add_argument("--image-sizes", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="write every latency here")
    args = parser.parse_args(argv)
    logging.getLogger("FateSAMLib").setLevel(logging.ERROR)  # the random weights' warning, once per load
    results = []
    print(
        "| model | input | per-job loading: first job, next 4 (median) | model load per job (median) "
        "| warm: first job, next 4 (median) | warm / per-job, next 4 | model loads |"
    )
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for size in args.image_sizes:
            settings = RunSettings(model=model, random_weights=True, image_size=size, device=args.device)
            with tempfile.TemporaryDirectory() as folder:
                inputs = write_inputs(Path(folder))
                cold = server_jobs(settings, inputs, Path(folder) / "per-job", max_models=0)
                warm = server_jobs(settings, inputs, Path(folder) / "warm", max_models=1)
            cold_next, warm_next = (statistics.median(run["latencies_s"][1:]) for run in (cold, warm))
            load = statistics.median(cold["model_load_s"])
            results.append({"model": model, "image_size": size, "per_job_loading": cold, "warm": warm})
            print(
                f"| {model} | {size} | {cold['latencies_s'][0]:.2f} s, {cold_next:.2f} s | {load:.2f} s "
                f"({load / cold_next:.0%} of a next job) | {warm['latencies_s'][0]:.2f} s, {warm_next:.2f} s | "
                f"{warm_next / cold_next:.2f}x | {cold['model_loads']} vs {warm['model_loads']} |",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
