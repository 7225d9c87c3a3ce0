"""The Python API: one FateSamPredictor, loaded once, from paths or SimpleITK images, writing what the command line
writes; the query's slice frame made once and carried to the result; importing FateSAMLib loads no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cli.main import main
from FateSAMLib.errors import InputError
from FateSAMLib.method.pipeline import prepare_query
from FateSAMLib.method.predictor import FateSamPredictor

SETTINGS = {"random_weights": True, "image_size": TEST_IMAGE_SIZE, "device": "cpu", "slice_axis": "axial"}
CLI_SETTINGS = ["--random-weights", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu", "--slice-axis", "axial"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A support (image, labels) and a query cropped to a few axial slices of real hippocampus MRIs."""
    folder = tmp_path_factory.mktemp("inputs")
    image, labels = (sitk.ReadImage(str(path)) for path in case_paths(HIPPOCAMPUS, "hippocampus_001"))
    query = sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_004")[0]))
    paths = {name: folder / f"{name}.nii.gz" for name in ("image", "labels", "query")}
    for name, volume in (("image", image[:, :, 12:20]), ("labels", labels[:, :, 12:20]), ("query", query[:, :, 14:19])):
        sitk.WriteImage(volume, str(paths[name]))
    return paths


def written(path: Path) -> bytes:
    """A file's bytes but the writer's timestamp comment."""
    return re.sub(rb"\n# on [^\n]*\n", b"\n", path.read_bytes(), count=1)


def test_the_api_from_paths_or_images_writes_what_the_command_line_writes_and_loads_once(files, tmp_path):
    cli_output = tmp_path / "cli.seg.nrrd"
    arguments = ["segment", "--support", str(files["image"]), str(files["labels"]), "--query", str(files["query"])]
    assert main([*arguments, "--output", str(cli_output), *CLI_SETTINGS]) == 0

    predictor = FateSamPredictor.from_settings(**SETTINGS)
    from_paths = predictor.segment(query=files["query"], supports=[(files["image"], files["labels"])])
    from_paths.write(tmp_path / "paths.seg.nrrd")
    images = {name: sitk.ReadImage(str(path)) for name, path in files.items()}
    predictor.prepare_supports([(images["image"], images["labels"])])
    from_images = predictor.segment(query=images["query"])
    from_images.write(tmp_path / "images.seg.nrrd")

    assert written(tmp_path / "paths.seg.nrrd") == written(cli_output)
    assert written(tmp_path / "images.seg.nrrd") == written(cli_output)
    assert predictor.model_loads == 1
    assert from_paths.stats.support_slices_encoded > 0
    assert from_images.stats.support_slices_encoded == 0  # the supports' features kept from the first call
    assert from_images.stats.support_memories_encoded == 0
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        from_images.write(tmp_path / "images.seg.nrrd")


def test_images_in_memory_get_the_command_lines_checks(files):
    predictor = FateSamPredictor.from_settings(**SETTINGS)
    image, labels = sitk.ReadImage(str(files["image"])), sitk.ReadImage(str(files["labels"]))
    blank = sitk.Image(image.GetSize(), sitk.sitkFloat32)
    blank.CopyInformation(image)
    with pytest.raises(InputError, match="the query has a single intensity value"):
        predictor.prepare_query(blank)
    shifted = sitk.Image(labels)
    shifted.SetOrigin([value + 5.0 for value in labels.GetOrigin()])
    with pytest.raises(InputError, match="support 1 labels does not match its image: the voxel grids differ"):
        predictor.prepare_supports([(image, shifted)])
    empty = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(labels)
    with pytest.raises(InputError, match="support 1 labels: the support labels are empty"):
        predictor.prepare_supports([(image, empty)])
    with pytest.raises(InputError, match="--top-k must be a whole number"):
        FateSamPredictor.from_settings(top_k=0)
    assert predictor.loaded is None  # every refusal came before any model work


def test_the_query_frame_is_made_once_and_carried_to_the_result(files):
    predictor = FateSamPredictor.from_settings(**SETTINGS)
    prepared = prepare_query(files["query"], "auto")
    result = predictor.segment(prepared, supports=[(files["image"], files["labels"])])
    assert result.frame is prepared.frame and result.slice_axis == "axial"
    assert result.frame.num_slices == result.stats.query_slices == sitk.ReadImage(str(files["query"])).GetSize()[2]
    centers = np.array([d.center_lps for d in result.doubtful_slices])
    np.testing.assert_allclose(centers, prepared.frame.slice_centers()[[d.slice_index for d in result.doubtful_slices]])


def test_importing_the_package_loads_no_torch_and_the_api_is_exported_lazily():
    code = (
        "import sys, FateSAMLib; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'FateSamPredictor' in dir(FateSAMLib); "
        "from FateSAMLib import FateSamPredictor; assert 'torch' in sys.modules; print(FateSamPredictor.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FateSamPredictor"


def test_a_kept_predictors_memory_cache_is_bounded_dropping_the_least_recently_used_query_first(files, tmp_path):
    other_query = tmp_path / "other.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(case_paths(HIPPOCAMPUS, "hippocampus_004")[0]))[:, :, 19:24], str(other_query))
    predictor = FateSamPredictor.from_settings(**SETTINGS)
    predictor.prepare_supports([(files["image"], files["labels"])])
    first = predictor.segment(query=files["query"])
    cache = predictor._shared.feature_cache
    cache.max_bytes = cache.bytes_held  # full: the next query's features must push something out

    second = predictor.segment(query=other_query)
    assert cache.bytes_held <= cache.max_bytes
    assert second.stats.support_slices_encoded == 0  # the supports' features, read by every run, are kept
    again = predictor.segment(query=files["query"])
    assert again.stats.encoder_passes > 0  # the first query's features were the ones dropped: encoded anew
    assert again.stats.support_slices_encoded == 0
    assert np.array_equal(sitk.GetArrayFromImage(again.labels), sitk.GetArrayFromImage(first.labels))
