"""Helpers of the cohort tests: three small real hippocampus queries, segmented once by ``fatesam batch``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cli.main import main

QUERIES = ("hippocampus_160", "hippocampus_225", "hippocampus_243")  # the three smallest volumes, in name order
FAST = ["--random-weights", "--model", "sam2.1-tiny", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def support_args() -> list[str]:
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    return ["--support", str(image), str(labels)]


def batch_args(queries: Path, output_dir: Path, *extra: str) -> list[str]:
    """``fatesam batch`` of ``queries`` into ``output_dir`` with the test model."""
    return ["batch", *support_args(), "--queries", str(queries), "--output-dir", str(output_dir), *FAST, *extra]


def read_summary(output_dir: Path) -> dict:
    """summary.json's records by case id, with the counts under 'counts'."""
    data = json.loads((output_dir / "summary.json").read_text())
    return {"counts": data["counts"], "mean": data["mean"], **{r["id"]: r for r in data["cases"]}}


def query_folder(folder: Path, names: tuple[str, ...] = QUERIES) -> Path:
    """A folder of links to the named real queries."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.nii.gz").symlink_to(case_paths(HIPPOCAMPUS, name)[0])
    return folder


_FINISHED: list[tuple[Path, Path, int, int]] = []


def finished_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int, int]:
    """(queries folder, output folder, exit code, torch threads) of one local batch run with references, made once
    per session for every test module that asks; do not modify it. Results depend on the thread count (a float sum
    split across threads is added in another order), so a run that is compared with it must use as many."""
    if not _FINISHED:
        root = tmp_path_factory.mktemp("cohort")
        queries = query_folder(root / "queries")
        output_dir = root / "out"
        code = main(batch_args(queries, output_dir, "--references", str(HIPPOCAMPUS / "labels")))
        _FINISHED.append((queries, output_dir, code, torch.get_num_threads()))
    return _FINISHED[0]
