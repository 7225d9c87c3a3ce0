"""Damaged or mismatched inputs through the command line: each is refused on reading, before the model is built,
with exit code 1, one message that names the file and the fix, no traceback and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, SEGMENT, case_paths, cut_short, write_seg_nrrd
from test_cli import segment_args

from FateSAMLib.cli.main import main


def copy_cut_short(source: Path, path: Path, missing: int | float) -> Path:
    path.write_bytes(source.read_bytes())
    cut_short(path, missing)
    return path


def rewrite(source: Path, path: Path, change=lambda array: array) -> Path:
    """``source`` written again at ``path`` (its format from the suffix), its voxels passed through ``change``."""
    image = sitk.ReadImage(str(source))
    changed = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(image)))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))
    return path


def with_nan(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    array[3, 4, 5] = np.nan
    return array


def with_large_label(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.uint32)
    array[array == 2] = 70000
    return array


def cropped_by_one_slice(labels: Path, path: Path) -> Path:
    sitk.WriteImage(sitk.ReadImage(str(labels))[:, :, 1:], str(path))
    return path


# case -> (segment_args keywords from (tmp folder, support image, support labels, query), text the error must hold)
CASES = {
    "query .nii.gz cut in half": (
        lambda tmp, image, labels, query: {"query": copy_cut_short(query, tmp / "half.nii.gz", 0.5)},
        "half.nii.gz is incomplete (truncated)",
    ),
    "support labels .nii.gz without its last byte": (
        lambda tmp, image, labels, query: {"support": (image, copy_cut_short(labels, tmp / "labels.nii.gz", 1))},
        "labels.nii.gz is incomplete (truncated)",
    ),
    "support image .nii without its last bytes": (
        lambda tmp, image, labels, query: {
            "support": (copy_cut_short(rewrite(image, tmp / "image.nii"), tmp / "image.nii", 10), labels)
        },
        "image.nii is incomplete (truncated)",
    ),
    "NaN in a NIfTI query": (
        lambda tmp, image, labels, query: {"query": rewrite(query, tmp / "nan.nii.gz", with_nan)},
        "nan.nii.gz contains NaN or infinite values",
    ),
    "blank query": (
        lambda tmp, image, labels, query: {"query": rewrite(query, tmp / "blank.nrrd", np.zeros_like)},
        "blank.nrrd has a single intensity value, 0, everywhere",
    ),
    "blank support image": (
        lambda tmp, image, labels, query: {
            "support": (rewrite(image, tmp / "grey.mha", lambda a: np.full_like(a, 9)), labels)
        },
        "grey.mha has a single intensity value, 9, everywhere",
    ),
    "label map cropped by one slice": (
        lambda tmp, image, labels, query: {"support": (image, cropped_by_one_slice(labels, tmp / "cropped.nii.gz"))},
        "must be on exactly its image's grid",
    ),
    "label value above 65535": (
        lambda tmp, image, labels, query: {"support": (image, rewrite(labels, tmp / "large.nrrd", with_large_label))},
        "large.nrrd has the label value 70000, above 65535",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_segment_refuses_a_bad_input_on_reading(case: str, tmp_path: Path, capsys) -> None:
    build, expected = CASES[case]
    options = build(
        tmp_path, *case_paths(HIPPOCAMPUS, "hippocampus_001"), case_paths(HIPPOCAMPUS, "hippocampus_004")[0]
    )
    output = tmp_path / "out" / "result.seg.nrrd"
    output.parent.mkdir()
    code = main(segment_args(output, options.get("support"), options.get("query")))
    err = capsys.readouterr().err
    assert code == 1
    assert "fatesam: error:" in err and expected in err, err
    assert "Traceback" not in err
    assert "RANDOM WEIGHTS" not in err  # refused before the model was built
    assert list(output.parent.iterdir()) == []


def evaluate(prediction: Path, reference: Path) -> int:
    return main(["evaluate", "--prediction", str(prediction), "--reference", str(reference), "--json"])


def test_evaluate_refuses_a_cropped_label_map_and_a_truncated_reference(tmp_path: Path, capsys) -> None:
    labels = case_paths(HIPPOCAMPUS, "hippocampus_001")[1]
    assert evaluate(cropped_by_one_slice(labels, tmp_path / "cropped.nii.gz"), labels) == 1
    err = capsys.readouterr().err
    assert "must be on exactly its image's grid" in err and "Traceback" not in err
    assert evaluate(labels, copy_cut_short(labels, tmp_path / "reference.nii.gz", 0.5)) == 1
    err = capsys.readouterr().err
    assert "reference.nii.gz is incomplete (truncated)" in err and "Traceback" not in err


def test_evaluate_pads_a_cropped_seg_nrrd_prediction(tmp_path: Path, capsys) -> None:
    labels = case_paths(HIPPOCAMPUS, "hippocampus_001")[1]
    full = sitk.ReadImage(str(labels))
    cropped = full[:, :, 1:]
    voxels = (sitk.GetArrayFromImage(cropped) > 0).astype(np.uint8).transpose(2, 1, 0) * 2
    write_seg_nrrd(tmp_path / "prediction.seg.nrrd", cropped, voxels, [SEGMENT])
    reference = rewrite(labels, tmp_path / "reference.nii.gz", lambda a: (a > 0).astype(np.uint8) * 2)
    assert evaluate(tmp_path / "prediction.seg.nrrd", reference) == 0
    scores = json.loads(capsys.readouterr().out)["labels"]
    assert list(scores) == ["2"] and scores["2"]["dice"] == 1.0  # the cropped-away first slice is empty


def test_segment_refuses_an_unknown_segment_before_the_model_is_built(tmp_path: Path, capsys) -> None:
    output = tmp_path / "out" / "result.seg.nrrd"
    output.parent.mkdir()
    assert main(segment_args(output, extra=["--segments", "1", "hippocampus"])) == 1
    err = capsys.readouterr().err
    assert "fatesam: error: No support has the segment 'hippocampus'. The supports have: 1 (Label 1)" in err
    assert "Traceback" not in err and "RANDOM WEIGHTS" not in err and list(output.parent.iterdir()) == []


def test_crossval_refuses_an_unknown_segment_before_the_model_loads(tmp_path: Path, capsys, no_model) -> None:
    from test_crossval import labelled_cases

    data = labelled_cases(tmp_path / "data")
    report, predictions = tmp_path / "report.json", tmp_path / "predictions"
    args = ["crossval", str(data), "--shots", "2", "--json", str(report), "--output-dir", str(predictions)]
    assert main([*args, "--segments", "liver"]) == 1
    err = capsys.readouterr().err
    assert "No support has the segment 'liver'" in err and "download" not in err.lower() and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
