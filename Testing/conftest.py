"""Shared fixtures: the real example data next to the repository and a small SAM2 with seeded random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

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


@pytest.fixture(scope="session")
def tiny_model():
    """SAM2.1 tiny with seeded random weights at the test input size, built once per test session."""
    from FateSAMLib.model_loading import load_model

    return load_model("sam2.1-tiny", random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", seed=0)


def assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    """Same voxels on the same grid (geometry to file-format precision)."""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
