"""Names for plain label maps: --label-names, and the labels block of an nnU-Net / MSD dataset.json beside them."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.errors import InputError
from FateSAMLib.io.label_names import parse_label_names, read_dataset_json
from FateSAMLib.io.labels import read_labels


def test_label_names_are_value_name_pairs():
    names = parse_label_names(["1=anterior", " 2 = posterior hippocampus "])
    assert names == {1: "anterior", 2: "posterior hippocampus"}


@pytest.mark.parametrize("item", ["anterior", "0=background", "x=liver", "1=", "70000=big", "-1=minus"])
def test_a_bad_label_name_is_refused_with_the_form_to_use(item):
    with pytest.raises(InputError, match="VALUE=NAME|label value"):
        parse_label_names([item])


def test_a_value_named_twice_is_refused():
    with pytest.raises(InputError, match="twice"):
        parse_label_names(["1=a", "1=b"])


@pytest.mark.parametrize(
    "labels",
    [
        {"0": "background", "1": "Anterior", "2": "Posterior"},  # Medical Segmentation Decathlon
        {"background": 0, "Anterior": 1, "Posterior": 2, "whole": [1, 2]},  # nnU-Net v2 (regions left out)
    ],
)
def test_dataset_json_beside_the_labels_names_them_and_given_names_win(tmp_path, labels):
    """The MSD layout: Task/dataset.json with Task/labelsTr/case.nii.gz."""
    _, source = case_paths(HIPPOCAMPUS, "hippocampus_001")
    (tmp_path / "labelsTr").mkdir()
    copy = tmp_path / "labelsTr" / source.name
    shutil.copyfile(source, copy)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Hippocampus", "labels": labels}))
    assert read_dataset_json(tmp_path / "dataset.json") == {1: "Anterior", 2: "Posterior"}
    assert [s.name for s in read_labels(copy)[1]] == ["Anterior", "Posterior"]
    assert [s.name for s in read_labels(copy, {2: "tail"})[1]] == ["Anterior", "tail"]
    assert [s.name for s in read_labels(source)[1]] == ["Label 1", "Label 2"]  # no dataset.json beside the original


def test_a_dataset_json_of_another_kind_is_warned_about_and_left_out(tmp_path, caplog):
    _, source = case_paths(HIPPOCAMPUS, "hippocampus_001")
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    (tmp_path / "dataset.json").write_text('{"name": "no labels"}')
    assert [s.name for s in read_labels(copy, {1: "head"})[1]] == ["head", "Label 2"]
    assert "dataset.json has no readable 'labels' block" in caplog.text and "--label-names" in caplog.text
    with pytest.raises(InputError, match="no readable 'labels' block"):
        read_dataset_json(tmp_path / "dataset.json")


def test_values_named_alike_are_refused_as_the_name_rule_would_make_them_one_segment(tmp_path):
    with pytest.raises(InputError, match="names the values 1 and 2 alike"):
        parse_label_names(["1=Anterior", "2= anterior "])
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "Liver", "2": "LIVER"}}')
    with pytest.raises(InputError, match="names the values 1 and 2 alike"):
        read_dataset_json(tmp_path / "dataset.json")


def test_a_dataset_json_nested_too_deep_or_not_an_object_is_one_message(tmp_path):
    for text in ("[" * 100_000 + "]" * 100_000, "[1, 2]", "not json"):
        (tmp_path / "dataset.json").write_text(text)
        with pytest.raises(InputError, match="dataset.json") as refused:
            read_dataset_json(tmp_path / "dataset.json")
        assert "--label-names" in str(refused.value)
