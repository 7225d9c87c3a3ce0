"""Cohort throughput: cases per hour for N hippocampus queries at a small input size with random weights, run as
sequential ``fatesam segment`` processes, as one ``fatesam batch`` (model and supports loaded once) and as
``fatesam batch --ray`` with 2 workers. Prints one row per way and writes them as JSON with --json.
On a shared machine pass --threads 1: two torch threads on two busy cores wait on each other (measured 4x slower),
which favours the single-threaded Ray workers.

    python Testing/benchmark_cohort.py [--cases 8] [--image-size 128] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "msd_task04_hippocampus"
SUPPORT = "hippocampus_001"


def fatesam(*args: str) -> None:
    """Run the command line in a fresh process (as a user would), failing loudly."""
    subprocess.run([sys.executable, "-m", "FateSAMLib.cli", *args], check=True, cwd=REPO, capture_output=True)


def timed(run) -> float:  # noqa: ANN001
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--threads", type=int, help="torch threads of segment and batch (each Ray worker uses 1); default torch's"
    )
    args = parser.parse_args()
    support = [
        "--support",
        str(HIPPOCAMPUS / "images" / f"{SUPPORT}.nii.gz"),
        str(HIPPOCAMPUS / "labels" / f"{SUPPORT}.nii.gz"),
    ]
    model = ["--random-weights", "--model", "sam2.1-tiny", "--image-size", str(args.image_size), "--device", "cpu"]
    threads = ["--threads", str(args.threads)] if args.threads else []
    names = sorted(p.name for p in (HIPPOCAMPUS / "images").glob("*.nii.gz") if SUPPORT not in p.name)[: args.cases]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        queries = root / "queries"
        queries.mkdir()
        for name in names:
            (queries / name).symlink_to(HIPPOCAMPUS / "images" / name)
        ways = {
            "sequential fatesam segment": lambda: [
                fatesam(
                    "segment",
                    *support,
                    "--query",
                    str(queries / n),
                    "--output",
                    str(root / "seq" / n),
                    *model,
                    *threads,
                )
                for n in names
            ],
            "fatesam batch": lambda: fatesam(
                "batch", *support, "--queries", str(queries), "--output-dir", str(root / "batch"), *model, *threads
            ),
            "fatesam batch --ray (2 workers)": lambda: fatesam(
                "batch",
                *support,
                "--queries",
                str(queries),
                "--output-dir",
                str(root / "ray"),
                *model,
                "--ray",
                "--workers",
                "2",
            ),
        }
        rows = []
        for way, run in ways.items():
            seconds = timed(run)
            rows.append(
                {
                    "way": way,
                    "cases": len(names),
                    "seconds": round(seconds, 1),
                    "cases_per_hour": round(3600 * len(names) / seconds, 1),
                }
            )
            print(
                f"{way:<34}{len(names):>4} cases {seconds:>8.1f} s {rows[-1]['cases_per_hour']:>8.1f} cases/h",
                flush=True,
            )
    base = rows[0]["seconds"]
    for row in rows:
        row["speed_up"] = round(base / row["seconds"], 2)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
