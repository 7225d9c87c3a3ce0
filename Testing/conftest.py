"""Shared fixtures and helpers: the real example data next to the repository, a small SAM2 with seeded random weights,
and small files (label maps, segmentations, damaged copies) that tests in several folders make."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from FateSAMLib.io.geometry import ijk_to_lps
from FateSAMLib.segments import Segment
from FateSAMLib.support_sets import SupportCase, write_manifest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HIPPOCAMPUS = DATA / "msd_task04_hippocampus"
ABDOMEN = DATA / "chaos_t2spir_abdomen"
# Small input size: the SAM2 architecture is the real one, only the image it sees is smaller (fast on a CPU).
TEST_IMAGE_SIZE = 128


def case_paths(dataset: Path, name: str) -> tuple[Path, Path]:
    """(image, labels) of one case of a shared data set, skipping the test when the data is not there."""
    image, labels = dataset / "images" / f"{name}.nii.gz", dataset / "labels" / f"{name}.nii.gz"
    if not image.is_file():
        pytest.skip(f"example data missing: {image} (expected ../shared/data next to the repository)")
    return image, labels


@pytest.fixture
def no_model(tmp_path, monkeypatch):
    """An empty checkpoint cache and an unreachable download server: loading a real model fails with a network error.

    A run that is refused with another message was refused before it tried to load the model."""
    from FateSAMLib.models.checkpoints import MIRROR_ENV

    monkeypatch.setenv("FATESAM_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:1")


@pytest.fixture(scope="session")
def tiny_model():
    """SAM2.1 tiny with seeded random weights at the test input size, built once per test session."""
    from FateSAMLib.models.loading import load_model

    return load_model("sam2.1-tiny", random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", seed=0)


def assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    """Same voxels on the same grid (geometry to file-format precision)."""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def cut_short(path: Path, missing: int | float) -> None:
    """Drop the last ``missing`` bytes of a file (or that fraction of it), as an interrupted copy does."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - (missing if isinstance(missing, int) else int(len(data) * missing))])


def write_dicom_series(
    image: sitk.Image,
    folder: Path,
    series_uid: str,
    slices: Iterable[int] | None = None,
    change: Callable[[int, dict[str, str]], None] | None = None,
    copy: int = 0,
) -> None:
    """One DICOM file per slice (those in ``slices``, default all), with the position and orientation tags a scanner
    writes; ``change(k, tags)`` may alter slice k's tags; ``copy`` > 0 writes other files (other names and UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    for k in range(image.GetDepth()) if slices is None else slices:
        slice_image = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0008|0018": f"{series_uid}.{k + 1}" + (f".{copy}" if copy else ""),
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0028|0030": f"{image.GetSpacing()[1]}\\{image.GetSpacing()[0]}",
        }
        if change is not None:
            change(k, tags)
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{f'copy{copy}_' if copy else ''}{series_uid}_{k:03d}.dcm"))
        writer.Execute(slice_image)


def write_support_set(folder: Path, pairs: list[tuple[Path, Path]], model_hints: dict | None = None) -> Path:
    """A support set made by hand in the new ``folder``: a copy of each (image, labels) pair (``caseNN`` with their
    own suffixes) and its manifest, written by FateSAMLib.support_sets as the Slicer module writes it."""
    folder.mkdir(parents=True)
    cases = []
    for index, (image, labels) in enumerate(pairs, start=1):
        volume = folder / f"case{index:02d}{''.join(image.suffixes)}"
        segmentation = folder / f"case{index:02d}_labels{''.join(labels.suffixes)}"
        shutil.copyfile(image, volume)
        shutil.copyfile(labels, segmentation)
        cases.append(SupportCase(image.name, volume, segmentation, ("Label 1", "Label 2")))
    write_manifest(folder, "Hippocampus", "2026-01-01T00:00:00+00:00", cases, model_hints or {})
    return folder


def write_seg_nrrd(path: Path, image: sitk.Image, layers: np.ndarray, segments: list[dict]) -> None:
    """A Slicer segmentation file written with slicerio, voxels as (i, j, k) or (layer, i, j, k)."""
    slicerio.write_segmentation(str(path), {"voxels": layers, "ijkToLPS": ijk_to_lps(image), "segments": segments})


SEGMENT = {"id": "a", "name": "liver", "color": [0.1, 0.2, 0.3], "labelValue": 2, "layer": 0}


SEGMENTS = [Segment(2, "left kidney", (0.1, 0.5, 0.9)), Segment(7, "spleen", (0.8, 0.2, 0.3))]


def oblique_labels(max_value: int = 7) -> sitk.Image:
    array = np.zeros((5, 6, 7), np.int64)
    array[1:3, 2:4, 1:5] = 2
    array[3, 0, 0] = max_value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 3.0))
    image.SetOrigin((-12.5, 40.0, 7.25))
    angle = np.radians(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, -1.0))
    return image
