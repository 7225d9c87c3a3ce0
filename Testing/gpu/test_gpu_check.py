"""The GPU check's dry run (the CPU in place of CUDA, tiny sizes), through check.sh, so that it keeps working here.

The timings and hole-filling parts run end to end (a volume stacked from real cases, memory attention timed and its
FLOPs counted); the agreement and service parts take minutes on this machine and run with ``check.sh OUT --dry-run``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import ABDOMEN, DATA, HIPPOCAMPUS, case_paths

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_times_each_model_and_case_and_writes_json_and_markdown(tmp_path):
    case_paths(HIPPOCAMPUS, "hippocampus_004")
    case_paths(ABDOMEN, "chaos_t2_05")
    out = tmp_path / "out"
    command = [
        "bash",
        "Testing/gpu/check.sh",
        str(out),
        "--dry-run",
        "--parts",
        "holes",
        "timings",
        "--data",
        str(DATA),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "check.json").read_text())
    assert report["dry_run"] and report["device"] == "CPU (dry run)" and "errors" not in report
    assert report["holes"]["compared"] is False and "not available" in report["holes"]["note"]
    timings = {(t["model"], t["labels"]): t for t in report["timings"]}
    assert set(timings) == {("sam2.1-tiny", 2), ("sam2.1-tiny", 4)}
    for t in timings.values():
        assert t["slices"] >= 20  # the case stacked to the asked length
        assert set(t["stages"]) >= {"encode", "retrieval", "memory_encoding", "attention_decoding"}
        assert 0 < t["attention_seconds"] < t["seconds"] and t["attention_tflop"] > 0
        assert t["slices_per_s"] > 0 and t["attention_share_of_measured_bf16"] > 0
    # 4 labels attend for 4 objects: about twice the FLOPs of 2 labels on as many slices.
    per_slice = {labels: t["attention_tflop"] / t["slices"] for (_, labels), t in timings.items()}
    assert 1.5 < per_slice[4] / per_slice[2] < 2.5
    markdown = (out / "check.md").read_text()
    assert "## (c) timings" in markdown and markdown.count("| sam2.1-tiny |") == 2
    assert markdown in done.stdout  # check.sh prints the table
