"""Damaged or mismatched inputs through the command line: each is refused on reading, before the model is built,
with exit code 1, one message that names the file and the fix, no traceback and nothing written."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, SEGMENT, case_paths, cut_short, write_dicom_series, write_seg_nrrd
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


def header_naming_a_file_elsewhere(query: Path, folder: Path) -> Path:
    """A NRRD header in ``folder`` whose voxels are "../secret.raw": another file, next to the folder."""
    image = sitk.ReadImage(str(query))
    (folder.parent / "secret.raw").write_bytes(b"secret " * (image.GetNumberOfPixels() // 3 + 1))
    folder.mkdir()
    sizes = " ".join(str(n) for n in image.GetSize())
    path = folder / "query.nhdr"
    path.write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: raw\ndata file: ../secret.raw\n")
    return path


def promising_more_than_memory(path: Path) -> Path:
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4096 4096 4096\nencoding: gzip\n\n"
    path.write_bytes(header + gzip.compress(b"\0" * 1000))
    return path


def not_utf8_copy(source: Path, folder: Path, name: bytes) -> Path:
    path = Path(os.fsdecode(bytes(folder) + b"/" + name))
    path.write_bytes(source.read_bytes())
    return path


def dicom_series_without_a_slice(query: Path, folder: Path) -> Path:
    image = sitk.Cast(sitk.ReadImage(str(query)), sitk.sitkInt16)
    write_dicom_series(
        image, folder, "1.2.826.0.1.3680043.2.1125.19", slices=[k for k in range(image.GetDepth()) if k != 5]
    )
    return folder


def seg_nrrd_with_a_segment_on_a_missing_layer(labels: Path, path: Path) -> Path:
    image = sitk.ReadImage(str(labels))
    voxels = (sitk.GetArrayFromImage(image) > 0).astype(np.uint8).transpose(2, 1, 0) * 2
    write_seg_nrrd(path, image, voxels, [SEGMENT, {**SEGMENT, "id": "b", "name": "lost", "layer": 1}])
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
    "query header naming a file outside its folder": (
        lambda tmp, image, labels, query: {"query": header_naming_a_file_elsewhere(query, tmp / "case")},
        "names '../secret.raw' as the file that holds its voxels, which is not a file beside it",
    ),
    "query header promising more voxels than memory holds": (
        lambda tmp, image, labels, query: {"query": promising_more_than_memory(tmp / "huge.nrrd")},
        "Not enough memory on this machine: reading",
    ),
    "query file name not UTF-8": (
        lambda tmp, image, labels, query: {"query": not_utf8_copy(query, tmp, b"query\xff.nii.gz")},
        "query\\xff.nii.gz: this path is not UTF-8 text",
    ),
    "support labels file name not UTF-8": (
        lambda tmp, image, labels, query: {"support": (image, not_utf8_copy(labels, tmp, b"labels\xe9.nii.gz"))},
        "labels\\xe9.nii.gz: this path is not UTF-8 text",
    ),
    "query DICOM series with a missing slice": (
        lambda tmp, image, labels, query: {"query": dicom_series_without_a_slice(query, tmp / "series")},
        "is not one regular grid of slices: the slices are 1 mm apart, but 2 mm between",
    ),
    "support .seg.nrrd with a segment on a layer it lacks": (
        lambda tmp, image, labels, query: {
            "support": (image, seg_nrrd_with_a_segment_on_a_missing_layer(labels, tmp / "labels.seg.nrrd"))
        },
        "labels.seg.nrrd: its segment 'lost' is on layer 1, but the file holds 1 layer(s)",
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
    assert_refused_before_the_model(
        segment_args(output, options.get("support"), options.get("query")), expected, capsys
    )
    assert list(output.parent.iterdir()) == []


def assert_refused_before_the_model(arguments: list[str], expected: str, capsys) -> str:
    """Run the command: it must exit 1 with one error message holding ``expected`` before the model; its stderr."""
    code = main(arguments)
    err = capsys.readouterr().err
    assert code == 1
    assert "fatesam: error:" in err and expected in err, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "RANDOM WEIGHTS" not in err  # refused before the model was built
    return err


def test_swapped_support_files_get_a_warning(tmp_path: Path, capsys) -> None:
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    query = copy_cut_short(case_paths(HIPPOCAMPUS, "hippocampus_004")[0], tmp_path / "query.nii.gz", 0.5)
    output = tmp_path / "out" / "result.seg.nrrd"  # the cut query stops the run once the supports are read
    err = assert_refused_before_the_model(segment_args(output, (labels, image), query), "is incomplete", capsys)
    assert not output.parent.exists()
    assert err.count("WARNING:") == 1 and "hippocampus_001.nii.gz holds 124 different label values" in err, err
    assert "--support takes IMAGE LABELS" in err


def test_segment_refuses_an_output_path_that_is_not_utf8_before_any_work(tmp_path: Path, capsys) -> None:
    output = Path(os.fsdecode(bytes(tmp_path) + b"/out/result\xff.seg.nrrd"))
    output.parent.mkdir()
    assert_refused_before_the_model(segment_args(output), "result\\xff.seg.nrrd: this path is not UTF-8 text", capsys)
    assert list(output.parent.iterdir()) == []


def test_segment_reads_and_writes_non_ascii_utf8_paths(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "données_患者"
    folder.mkdir()
    sources = [*case_paths(HIPPOCAMPUS, "hippocampus_001"), case_paths(HIPPOCAMPUS, "hippocampus_004")[0]]
    image, labels, query = (folder / f"é_{n}_{s.name}" for n, s in enumerate(sources))
    for source, copy in zip(sources, (image, labels, query), strict=True):
        copy.write_bytes(source.read_bytes())
    output = folder / "résultat_脑.seg.nrrd"
    assert main(segment_args(output, (image, labels), query)) == 0, capsys.readouterr().err
    assert sitk.ReadImage(str(output)).GetSize() == sitk.ReadImage(str(query)).GetSize()


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
