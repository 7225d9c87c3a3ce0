"""Support sets in the scene: save the chosen supports as a folder, load them back in a new scene, refuse a set whose
files changed before the scene changes (broken manifests: Testing/test_support_sets.py)."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from scene_helpers import KIDNEY, LIVER, SPLEEN, make_case, oblique_geometry, scene_snapshot, slicer

from FateSAMLib.errors import InputError
from FateSAMLib.slicer.scene import (
    register_segmentation_converters,
    segment_infos,
    segmentation_to_label_array,
    volume_to_array,
)
from FateSAMLib.slicer.support_set import load_support_set, save_support_set
from FateSAMLib.support_sets import MANIFEST_NAME, read_support_set


@pytest.fixture
def scene():
    register_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture
def saved(scene, tmp_path):
    """A support set of two cases (one with an odd name), and the arrays it was made from."""
    first = make_case(scene, "Patient A/T2", segments=(LIVER, SPLEEN))
    second = make_case(scene, "Patient B", shape=(7, 10, 12), geometry=oblique_geometry(angles=(0, 30, 5)), seed=2)
    before = scene_snapshot(scene)
    support_set = save_support_set(
        tmp_path / "abdomen", "Abdomen MRI", [first[:2], second[:2]], model_hints={"model": "sam2.1-small", "top_k": 3}
    )
    assert scene_snapshot(scene) == before  # saving touches no node (no storage node, no file name)
    return support_set, [first, second]


def test_saved_set_has_files_and_manifest(saved, tmp_path):
    support_set, _ = saved
    folder = tmp_path / "abdomen"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abdomen"]  # no staging folder left
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["name"] == "Abdomen MRI" and manifest["version"] == 1
    assert manifest["model_hints"] == {"model": "sam2.1-small", "top_k": 3}
    assert [case["segments"] for case in manifest["cases"]] == [["Liver", "Spleen"], ["Liver", "Spleen", "Left kidney"]]
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 5 and all("/" not in name for name in names)
    assert support_set.cases[0].name == "Patient A/T2"
    assert support_set.cases[0].volume.name.startswith("case01_Patient_A_T2")
    assert read_support_set(folder) == support_set  # what the command line's --support-set reads


def test_saved_folder_and_files_have_the_modes_a_user_expects(saved, tmp_path):
    """The umask's modes, as for any file the user saves (not the owner-only ones of temporary files)."""
    (tmp_path / "ordinary").mkdir()
    (tmp_path / "ordinary.txt").write_text("")
    folder_mode, file_mode = (stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("ordinary", "ordinary.txt"))
    assert stat.S_IMODE((tmp_path / "abdomen").stat().st_mode) == folder_mode
    assert {stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "abdomen").iterdir()} == {file_mode}


def test_set_loads_into_a_new_scene_with_the_same_voxels_geometry_and_segments(saved, tmp_path):
    _, originals = saved
    scene = slicer.vtkMRMLScene()
    support_set, pairs = load_support_set(scene, tmp_path / "abdomen")
    assert support_set.name == "Abdomen MRI" and support_set.model_hints["model"] == "sam2.1-small"
    assert len(pairs) == 2
    for (volume, segmentation), (original_volume, original_segmentation, labels) in zip(pairs, originals, strict=True):
        assert scene.IsNodePresent(volume) and scene.IsNodePresent(segmentation)
        array, matrix = volume_to_array(volume)
        original_array, original_matrix = volume_to_array(original_volume)
        np.testing.assert_array_equal(array, original_array)
        np.testing.assert_allclose(matrix, original_matrix, atol=1e-9)
        infos = segment_infos(segmentation)
        assert [(i.name, i.color) for i in infos] == [(i.name, i.color) for i in segment_infos(original_segmentation)]
        values = {LIVER.name: LIVER.value, SPLEEN.name: SPLEEN.value, KIDNEY.name: KIDNEY.value}
        label_values = {info.segment_id: values[info.name] for info in infos}
        expected = np.where(np.isin(labels, list(label_values.values())), labels, 0)
        np.testing.assert_array_equal(segmentation_to_label_array(segmentation, volume, label_values), expected)
        assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is volume
    assert volume_to_array(pairs[0][0])[0].shape == (9, 14, 12)


def test_existing_folder_is_kept_unless_overwrite(saved, scene, tmp_path):
    support_set, originals = saved
    with pytest.raises(InputError, match="exists"):
        save_support_set(tmp_path / "abdomen", "Again", [originals[0][:2]])
    replaced = save_support_set(tmp_path / "abdomen", "Again", [originals[0][:2]], overwrite=True)
    assert replaced.name == "Again" and len(replaced.cases) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abdomen"]
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a support set"):
        save_support_set(user_folder, "X", [originals[0][:2]], overwrite=True)
    assert (user_folder / "notes.txt").read_text() == "keep me"


def test_empty_name_or_no_supports_are_refused(scene, tmp_path):
    pair = make_case(scene, "a")[:2]
    with pytest.raises(InputError, match="needs a name"):
        save_support_set(tmp_path / "s", "  ", [pair])
    with pytest.raises(InputError, match="at least one"):
        save_support_set(tmp_path / "s", "S", [])
    assert not (tmp_path / "s").exists()


def _rewrite_manifest(folder, change):
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_changed_segments_fail_before_the_scene_changes(saved, tmp_path):
    folder = tmp_path / "abdomen"
    _rewrite_manifest(folder, lambda m: m["cases"][1].update(segments=["Liver", "Heart"]))
    scene = slicer.vtkMRMLScene()
    with pytest.raises(InputError, match="Heart"):
        load_support_set(scene, folder)
    assert scene_snapshot(scene) == []
