"""``fatesam segment`` end to end on real files: outputs, JSON progress, cancel, and every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cli.main import main

REPO = Path(__file__).resolve().parents[2]
FAST = ["--random-weights", "--model", "sam2.1-tiny", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def segment_args(output: Path, support=None, query=None, extra=()) -> list[str]:
    image, labels = support or case_paths(HIPPOCAMPUS, "hippocampus_001")
    query = query or case_paths(HIPPOCAMPUS, "hippocampus_004")[0]
    return [
        "segment",
        "--support",
        str(image),
        str(labels),
        "--query",
        str(query),
        "--output",
        str(output),
        *FAST,
        *extra,
    ]


def test_segment_writes_a_named_seg_nrrd_on_the_query_grid_and_stats(tmp_path, capsys):
    output, stats_path = tmp_path / "out.seg.nrrd", tmp_path / "stats.json"
    assert main(segment_args(output, extra=["--stats-json", str(stats_path)])) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    query = sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_004")[0]))
    written = sitk.ReadImage(str(output))
    assert written.GetSize() == query.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), query.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), query.GetDirection(), atol=1e-6)
    segmentation = slicerio.read_segmentation(str(output))
    assert [s["name"] for s in segmentation["segments"]] == ["Label 1", "Label 2"]
    stats = json.loads(stats_path.read_text())
    for key in ("encoder_passes", "query_slices", "support_slices_encoded", "labels", "seconds", "doubtful_slices"):
        assert key in stats
    assert stats["encoder_passes"] == stats["query_slices"] + stats["support_slices_encoded"]
    assert {"read", "encode", "retrieval", "memory_encoding", "attention_decoding", "write"} <= set(stats["seconds"])


def test_json_progress_prints_one_event_per_line(tmp_path, capsys):
    output = tmp_path / "out.nii.gz"
    assert main(segment_args(output, extra=["--json-progress"])) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1] == {"event": "done", "output": str(output)}
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e["event"] == "warning" and "RANDOM WEIGHTS" in e["message"] for e in events)


def test_sigterm_cancels_the_run_and_writes_nothing(tmp_path):
    output = tmp_path / "out.nii.gz"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "FateSAMLib.cli", *segment_args(output, extra=["--json-progress"])],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("message", "").startswith("Segmenting slice 3/"):
            process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "Cancelled"
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def write_image(array: np.ndarray, path: Path, like: sitk.Image | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def bad_inputs(tmp_path):
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    reference = sitk.ReadImage(str(image))
    zeros = np.zeros(sitk.GetArrayFromImage(reference).shape, np.uint8)
    nan_image = sitk.GetArrayFromImage(reference).astype(np.float32)
    nan_image[3, 4, 5] = np.nan
    (tmp_path / "garbage.nii.gz").write_bytes(b"this is not an image")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "exists.nii.gz").write_bytes(b"precious")
    return {
        "image": image,
        "labels": labels,
        "other_labels": case_paths(HIPPOCAMPUS, "hippocampus_003")[1],
        "empty_labels": write_image(zeros, tmp_path / "empty.nii.gz", reference),
        "flat": write_image(np.zeros((20, 30), np.float32), tmp_path / "flat.nii.gz"),
        "nan": write_image(nan_image, tmp_path / "nan.mha", reference),
        "garbage": tmp_path / "garbage.nii.gz",
        "corrupt": tmp_path / "corrupt.pt",
        "exists": tmp_path / "exists.nii.gz",
    }


BAD_CASES = {
    "label geometry differs from its image": (lambda p: {"support": (p["image"], p["other_labels"])}, "geometry"),
    "empty support labels": (lambda p: {"support": (p["image"], p["empty_labels"])}, "empty"),
    "segment no support has": (lambda p: {"extra": ["--segments", "7"]}, "No support has the segment '7'"),
    "unreadable query": (lambda p: {"query": p["garbage"]}, "garbage.nii.gz"),
    "2D query": (lambda p: {"query": p["flat"]}, "3D"),
    "NaN intensities": (lambda p: {"query": p["nan"]}, "NaN"),
    "unknown model": (lambda p: {"extra": ["--model", "sam3-huge"]}, "sam3-huge"),
    "absurd input size needs too much memory": (lambda p: {"extra": ["--image-size", "32768"]}, "Not enough memory"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_a_clear_error_and_writes_nothing(case, bad_inputs, tmp_path, capsys):
    build, expected = BAD_CASES[case]
    options = build(bad_inputs)
    output = tmp_path / "out.nii.gz"
    assert main(segment_args(output, options.get("support"), options.get("query"), options.get("extra", ()))) == 1
    err = capsys.readouterr().err
    assert "fatesam: error:" in err and expected in err
    assert not output.exists()


def test_existing_output_is_not_overwritten_unless_asked(bad_inputs, capsys):
    output = bad_inputs["exists"]
    assert main(segment_args(output)) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == b"precious"
    assert main(segment_args(output, extra=["--overwrite"])) == 0
    assert sitk.ReadImage(str(output)).GetDimension() == 3


def test_corrupt_checkpoint_is_refused_and_kept(bad_inputs, tmp_path, capsys):
    output = tmp_path / "out.nii.gz"
    args = [a for a in segment_args(output) if a != "--random-weights"]
    assert main([*args, "--checkpoint", str(bad_inputs["corrupt"])]) == 1
    assert "corrupt.pt" in capsys.readouterr().err
    assert bad_inputs["corrupt"].read_bytes() == b"not a checkpoint"
    assert not output.exists()


def test_feature_cache_makes_the_second_run_encode_nothing(tmp_path):
    cache = tmp_path / "features"
    passes = []
    for run in range(2):
        stats = tmp_path / f"stats{run}.json"
        extra = ["--feature-cache", str(cache), "--stats-json", str(stats)]
        assert main(segment_args(tmp_path / f"out{run}.nii.gz", extra=extra)) == 0
        passes.append(json.loads(stats.read_text()))
    assert passes[0]["support_slices_encoded"] > 0
    # Support and query slices are both cached by content: the same run again encodes no slice.
    assert passes[1]["encoder_passes"] == 0
    first, second = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"out{i}.nii.gz"))) for i in range(2))
    assert np.array_equal(first, second)


def test_paper_preset_takes_the_reference_settings():
    from FateSAMLib.cli.arguments import settings_from_args
    from FateSAMLib.cli.main import build_parser
    from FateSAMLib.method.predictor import FateSamPredictor

    args = build_parser().parse_args(segment_args(Path("unused.nii.gz"), extra=["--preset", "paper"]))
    args.model = None  # the preset chooses the model; the input size stays small for speed
    # The reference code loads sam2_hiera_large.pt with sam2_hiera_l.yaml: SAM2.0, not SAM2.1.
    settings = settings_from_args(args)
    assert settings.model == "sam2.0-large"
    engine = FateSamPredictor(settings).engine
    assert engine.options.top_k == 3
    assert engine.model.image_encoder.trunk.blocks[0].dim == 144  # Hiera-L's first stage width
    assert engine.model.no_obj_embed_spatial is None  # a SAM2.1-only parameter
