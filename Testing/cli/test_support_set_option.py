"""``--support-set DIR`` on the command line: the outputs of the equivalent ``--support`` pairs, bitwise, for
``segment`` and ``batch``; a damaged set refused before any model work; the two options are one or the other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, case_paths, write_support_set
from test_cli import FAST

from FateSAMLib.cli.arguments import hint_differences
from FateSAMLib.cli.main import main
from FateSAMLib.options import RunSettings
from FateSAMLib.support_sets import MANIFEST_NAME

QUERY = "hippocampus_004"
SUPPORTS = ("hippocampus_001", "hippocampus_003")
HINTS = {"model": "sam2.1-small", "top_k": 3, "slice_axis": "auto", "normalization": "percentile"}
"""What the Slicer module records (FateSAMLib.slicer.parameters.model_hints), with another model than FAST's."""


def support_options(support_set: Path | None = None, pairs=()) -> list[str]:
    if support_set is not None:
        return ["--support-set", str(support_set)]
    return [option for image, labels in pairs for option in ("--support", str(image), str(labels))]


def segment(supports: list[str], output: Path, query: Path | None = None) -> list[str]:
    query = query or case_paths(HIPPOCAMPUS, QUERY)[0]
    return ["segment", *supports, "--query", str(query), "--output", str(output), *FAST]


def batch(supports: list[str], queries: Path, output_dir: Path) -> list[str]:
    return ["batch", *supports, "--queries", str(queries), "--output-dir", str(output_dir), *FAST]


def query_folder(folder: Path, query: Path | None = None) -> Path:
    """A folder that links to the query."""
    folder.mkdir()
    (folder / f"{QUERY}.nii.gz").symlink_to(query or case_paths(HIPPOCAMPUS, QUERY)[0])
    return folder


@pytest.fixture(scope="module")
def cropped(tmp_path_factory) -> dict[str, Path]:
    """The supports' images and labels and the query, cut to a few axial slices of the real volumes (a short run)."""
    folder = tmp_path_factory.mktemp("cropped")
    files = {}
    for name, first, last in ((SUPPORTS[0], 14, 20), (SUPPORTS[1], 14, 20), (QUERY, 15, 19)):
        for kind, path in zip(("image", "labels"), case_paths(HIPPOCAMPUS, name), strict=True):
            files[f"{name} {kind}"] = folder / f"{name}_{kind}.nii.gz"
            sitk.WriteImage(sitk.ReadImage(str(path))[:, :, first:last], str(files[f"{name} {kind}"]))
    return files


@pytest.fixture(scope="module")
def slicer_set(cropped, tmp_path_factory) -> Path:
    """Two real hippocampus cases (cropped) saved as a support set by the Slicer module's writer (slicer-core)."""
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is needed to save a support set")
    from FateSAMLib.segments import Segment
    from FateSAMLib.slicer.scene import (
        add_to_scene,
        label_array_to_segmentation,
        read_volume,
        register_segmentation_converters,
        volume_to_array,
    )
    from FateSAMLib.slicer.support_set import save_support_set

    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    segments = [Segment(1, "Anterior", (0.9, 0.6, 0.2)), Segment(2, "Posterior", (0.2, 0.6, 0.9))]
    pairs = []
    for name in SUPPORTS:
        image, labels = cropped[f"{name} image"], cropped[f"{name} labels"]
        volume = add_to_scene(scene, read_volume(image, name))
        array, ijk_to_ras = volume_to_array(read_volume(labels))
        segmentation = add_to_scene(scene, label_array_to_segmentation(array, ijk_to_ras, segments, f"{name} labels"))
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        pairs.append((volume, segmentation))
    folder = tmp_path_factory.mktemp("slicer-set") / "Hippocampus"
    return save_support_set(folder, "Hippocampus", pairs, model_hints=HINTS).folder


@pytest.fixture(scope="module")
def from_pairs(slicer_set, cropped, tmp_path_factory) -> bytes:
    """The query segmented with the set's files given as ``--support`` pairs, in the manifest's order."""
    manifest = json.loads((slicer_set / MANIFEST_NAME).read_text())
    pairs = [(slicer_set / case["volume"], slicer_set / case["segmentation"]) for case in manifest["cases"]]
    assert [path.name.split("_")[0] for pair in pairs for path in pair] == ["case01", "case01", "case02", "case02"]
    output = tmp_path_factory.mktemp("pairs") / "out.nii.gz"
    assert main(segment(support_options(pairs=pairs), output, cropped[f"{QUERY} image"])) == 0
    return output.read_bytes()


def test_segment_with_a_support_set_writes_what_its_pairs_write_and_names_the_hints_it_did_not_apply(
    slicer_set, from_pairs, cropped, tmp_path, capsys
):
    capsys.readouterr()
    output = tmp_path / "out.nii.gz"
    assert main(segment(support_options(slicer_set), output, cropped[f"{QUERY} image"])) == 0
    assert output.read_bytes() == from_pairs
    err = capsys.readouterr().err
    assert (
        "The support set 'Hippocampus' was saved with --model sam2.1-small; this run uses --model sam2.1-tiny. "
        "A set's settings are hints, not applied: give those options to use them." in err
    ), err


def test_batch_with_a_support_set_writes_what_segment_with_its_pairs_writes(slicer_set, from_pairs, cropped, tmp_path):
    output_dir = tmp_path / "out"
    queries = query_folder(tmp_path / "queries", cropped[f"{QUERY} image"])
    assert main(batch(support_options(slicer_set), queries, output_dir)) == 0
    assert (output_dir / f"{QUERY}.nii.gz").read_bytes() == from_pairs
    assert json.loads((output_dir / "summary.json").read_text())["counts"] == {"done": 1, "skipped": 0, "failed": 0}


def _outside(folder: Path) -> None:
    """The first case's volume moved next to the set, and the manifest pointed at it there."""
    shutil.move(folder / "case01.nii.gz", folder.parent / "case01.nii.gz")
    _rewrite(folder, lambda manifest: manifest["cases"][0].update(volume="../case01.nii.gz"))


def _rewrite(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    change(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


# damaged set -> (what is done to a good set's folder, text the error must hold; "{set}" is the folder)
DAMAGED = {
    "missing folder": (lambda folder: shutil.rmtree(folder), "The support set folder {set} does not exist"),
    "no manifest": (
        lambda folder: (folder / MANIFEST_NAME).unlink(),
        f"{{set}} is not a FateSAM support set (no {MANIFEST_NAME}); choose the set's folder",
    ),
    "manifest not JSON": (
        lambda folder: (folder / MANIFEST_NAME).write_text('{"format": '),
        "is not valid JSON (",
    ),
    "manifest nested too deep": (
        lambda folder: (folder / MANIFEST_NAME).write_text('{"format": "fatesam-support-set", "cases": ' + "[" * 10**5),
        "nests arrays or objects more than 32 levels deep; save the support set again from FateSAM",
    ),
    "manifest of another format": (
        lambda folder: _rewrite(folder, lambda manifest: manifest.update(format="other")),
        "is not a fatesam-support-set manifest; save the support set again from FateSAM",
    ),
    "case file missing": (
        lambda folder: (folder / "case02_labels.nii.gz").unlink(),
        "The support set in {set} lists case02_labels.nii.gz, which is missing; copy the whole folder again",
    ),
    "case file outside the folder": (
        _outside,
        "names the volume file '../case01.nii.gz', which is not a plain file name in the set's folder",
    ),
}
COMMANDS = ("segment", "batch", "segment --server")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_support_set_is_refused_before_any_model_work_and_nothing_is_written(
    damage, command, tmp_path, capsys
):
    pairs = [case_paths(HIPPOCAMPUS, name) for name in SUPPORTS]
    folder = write_support_set(tmp_path / "set", pairs, HINTS)
    change, expected = DAMAGED[damage]
    change(folder)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    supports = support_options(folder)
    if command == "batch":
        args = batch(supports, query_folder(tmp_path / "queries"), outputs / "results")
    else:
        args = segment(supports, outputs / "out.nii.gz")
    if command == "segment --server":  # nothing listens there: the set is refused before any connection
        args = [arg for arg in args if arg not in FAST] + ["--server", "http://127.0.0.1:9"]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "fatesam: error:" in err and expected.format(set=folder) in err, err
    assert "Traceback" not in err and "RANDOM WEIGHTS" not in err and "hints" not in err
    assert list(outputs.iterdir()) == []


def test_support_and_support_set_are_one_or_the_other(tmp_path, capsys):
    image, labels = case_paths(HIPPOCAMPUS, "hippocampus_001")
    both = [*support_options(tmp_path), "--support", str(image), str(labels)]
    for args in (segment(both, tmp_path / "out.nii.gz"), batch(both, tmp_path / "queries", tmp_path / "results")):
        assert main(args) == 1
        assert "argument --support: not allowed with argument --support-set" in capsys.readouterr().err
    for args in (segment([], tmp_path / "out.nii.gz"), batch([], tmp_path / "queries", tmp_path / "results")):
        assert main(args) == 1
        assert "one of the arguments --support --support-set is required" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_only_hints_that_differ_from_the_run_settings_are_named():
    settings = RunSettings(model="sam2.1-tiny", top_k=4, random_weights=True)
    same = {"model": "sam2.1-tiny", "top_k": 4, "percentiles": [0.5, 99.5], "random_weights": True, "colour": "red"}
    assert hint_differences(same, settings) == []  # JSON's list is the settings' tuple; unknown hints are left out
    assert hint_differences(
        {"top_k": 3, "image_size": 512, "random_weights": False, "slice_axis": "auto"}, settings
    ) == [
        ("--top-k 3", "--top-k 4"),
        ("--image-size 512", "no --image-size"),
        ("no --random-weights", "--random-weights"),
    ]
