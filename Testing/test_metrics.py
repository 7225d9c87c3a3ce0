"""Dice, HD95 and ASSD on hand-made masks with known answers, and the ``fatesam evaluate`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, case_paths

from FateSAMLib.cli.main import main
from FateSAMLib.errors import InputError
from FateSAMLib.io.labels import write_label_map
from FateSAMLib.metrics import evaluate_labels, mask_metrics
from FateSAMLib.segments import Segment

SPACING_XYZ = (0.5, 1.0, 2.5)


def on_grid(array: np.ndarray, spacing=SPACING_XYZ, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((3.0, -7.0, 11.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


def cube(shape=(24, 24, 24), corner=(5, 5, 5), side=10, value=1) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    z, y, x = corner
    array[z : z + side, y : y + side, x : x + side] = value
    return array


@pytest.mark.parametrize("axis,voxels", [(0, 3), (1, 2), (2, 4)])
def test_shifted_cube_known_dice_and_hd95_in_mm(axis: int, voxels: int) -> None:
    corner = [5, 5, 5]
    corner[axis] += voxels
    scores = evaluate_labels(on_grid(cube(corner=tuple(corner))), on_grid(cube()))
    assert list(scores) == [1]
    assert scores[1]["dice"] == pytest.approx((10 - voxels) / 10)
    spacing_zyx = SPACING_XYZ[::-1]
    assert scores[1]["hd95"] == pytest.approx(voxels * spacing_zyx[axis])
    assert 0 < scores[1]["assd"] < voxels * spacing_zyx[axis]


def naive_surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs distances between surface voxels: slow, but independent of distance maps."""

    def surface(mask: np.ndarray) -> np.ndarray:
        points = []
        for p in np.argwhere(mask):
            neighbours = [p + d for d in np.vstack([np.eye(3, dtype=int), -np.eye(3, dtype=int)])]
            outside = any(np.any(n < 0) or np.any(n >= mask.shape) or not mask[tuple(n)] for n in neighbours)
            if outside:
                points.append(p)
        return np.array(points) * np.asarray(spacing_zyx)

    sa, sb = surface(a), surface(b)
    pairwise = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=2)
    return pairwise.min(axis=1), pairwise.min(axis=0)


def test_random_blobs_match_an_all_pairs_computation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        a = rng.random((9, 11, 10)) > 0.7
        b = np.roll(a, 2, axis=2) | (rng.random(a.shape) > 0.9)
        forward, backward = naive_surface_distances(a, b, SPACING_XYZ[::-1])
        scores = evaluate_labels(on_grid(a), on_grid(b))[1]
        assert scores["hd95"] == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)))
        assert scores["assd"] == pytest.approx(np.concatenate([forward, backward]).mean())
        assert scores["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_single_voxels_apart_diagonally() -> None:
    a, b = np.zeros((5, 6, 7), bool), np.zeros((5, 6, 7), bool)
    a[1, 1, 1], b[3, 2, 5] = True, True
    expected = math.dist((1 * 2.5, 1 * 1.0, 1 * 0.5), (3 * 2.5, 2 * 1.0, 5 * 0.5))
    scores = mask_metrics(a, b, SPACING_XYZ[::-1])
    assert scores == {"dice": 0.0, "hd95": pytest.approx(expected), "assd": pytest.approx(expected)}


def test_direction_matrix_changes_no_distance() -> None:
    rotated = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    straight = evaluate_labels(on_grid(cube(corner=(5, 8, 5))), on_grid(cube()))
    turned = evaluate_labels(on_grid(cube(corner=(5, 8, 5)), direction=rotated), on_grid(cube(), direction=rotated))
    assert turned == straight


def test_empty_masks_edge_cases() -> None:
    empty = np.zeros((24, 24, 24), np.uint8)
    scores = evaluate_labels(on_grid(cube(value=2)), on_grid(empty), labels=[1, 2])
    assert scores[1] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}  # absent from both: a correct "nothing"
    assert scores[2] == {"dice": 0.0, "hd95": math.inf, "assd": math.inf}  # predicted but not in the reference
    assert evaluate_labels(on_grid(empty), on_grid(empty)) == {}


def test_geometry_mismatch_is_refused() -> None:
    with pytest.raises(InputError, match="voxel grids differ"):
        evaluate_labels(on_grid(cube()), on_grid(cube(), spacing=(1.0, 1.0, 1.0)))


def test_real_labels_against_themselves_and_eroded() -> None:
    labels = sitk.ReadImage(str(case_paths(ABDOMEN, "chaos_t2_19")[1]))
    perfect = evaluate_labels(labels, labels)
    assert sorted(perfect) == [1, 2, 3, 4]
    assert all(s == {"dice": 1.0, "hd95": 0.0, "assd": 0.0} for s in perfect.values())
    eroded = sitk.BinaryErode(labels == 1, [1, 1, 0])  # one in-plane voxel (1.25 mm) off the liver, or a diagonal
    liver = evaluate_labels(eroded, labels == 1)[1]
    assert 0.9 < liver["dice"] < 1.0
    assert 1.25 <= liver["hd95"] <= 1.25 * math.sqrt(2) + 1e-6
    assert 0 < liver["assd"] < liver["hd95"]


def test_evaluate_command_prints_a_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = on_grid(cube() + cube(corner=(1, 1, 16), side=5, value=2))
    prediction = on_grid(cube(corner=(8, 5, 5)))
    segments = [Segment(1, "liver", (1.0, 0.0, 0.0)), Segment(2, "spleen", (0.0, 1.0, 0.0))]
    write_label_map(reference, tmp_path / "reference.seg.nrrd", segments)
    write_label_map(prediction, tmp_path / "prediction.nii.gz", segments)
    arguments = ["evaluate", "--prediction", str(tmp_path / "prediction.nii.gz")]
    arguments += ["--reference", str(tmp_path / "reference.seg.nrrd")]

    assert main(arguments) == 0
    table = capsys.readouterr().out
    assert "liver" in table and "spleen" in table and "0.7000" in table and "inf" in table
    assert table.strip().splitlines()[-1].split()[:2] == ["mean", "0.3500"]

    assert main([*arguments, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"]["1"]["name"] == "liver" and report["labels"]["1"]["dice"] == pytest.approx(0.7)
    assert report["labels"]["1"]["hd95"] == pytest.approx(3 * 2.5)
    assert report["labels"]["2"]["hd95"] is None and report["mean"]["dice"] == pytest.approx(0.35)


def test_evaluate_command_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_label_map(on_grid(cube()), tmp_path / "reference.nrrd", [])
    write_label_map(on_grid(cube(), spacing=(1.0, 1.0, 1.0)), tmp_path / "prediction.nrrd", [])
    arguments = ["evaluate", "--prediction", str(tmp_path / "prediction.nrrd")]
    assert main([*arguments, "--reference", str(tmp_path / "reference.nrrd")]) == 1
    assert "voxel grids differ" in capsys.readouterr().err
    assert main([*arguments, "--reference", str(tmp_path / "missing.nrrd")]) == 1
    assert "missing.nrrd does not exist" in capsys.readouterr().err
