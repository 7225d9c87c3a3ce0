"""Intensity normalisation and the tensors SAM2 receives."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import HIPPOCAMPUS, case_paths

from FateSAMLib.errors import InputError
from FateSAMLib.method.normalization import logits_to_slice, masks_to_model_input, normalize_intensities, to_model_input


def test_percentile_normalisation_of_real_uint8_and_float_volumes() -> None:
    for case in ("hippocampus_001", "hippocampus_003"):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(case_paths(HIPPOCAMPUS, case)[0])))
        result = normalize_intensities(array)
        assert result.dtype == np.float32 and result.shape == array.shape
        assert result.min() == 0.0 and result.max() == 1.0
        low, high = np.percentile(array, [0.5, 99.5])
        assert np.mean(result == 1.0) == pytest.approx(np.mean(array >= high), abs=1e-6)
        assert np.mean(result == 0.0) == pytest.approx(np.mean(array <= low), abs=1e-6)


def test_window_level_width() -> None:
    array = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 1, 5)
    np.testing.assert_allclose(normalize_intensities(array, window=(40, 400)).ravel(), [0, 0, 0.5, 1, 1])
    with pytest.raises(InputError, match="window width must be positive"):
        normalize_intensities(array, window=(40, 0))


def test_constant_volume_gives_zeros_and_mostly_empty_volume_keeps_its_content() -> None:
    assert not normalize_intensities(np.full((3, 4, 5), 7.0)).any()
    sparse = np.zeros((10, 10, 10))
    sparse[0, 0, :3] = [5.0, 10.0, 20.0]  # the 0.5 and 99.5 percentiles are both 0
    result = normalize_intensities(sparse)
    np.testing.assert_allclose(result[0, 0, :3], [0.25, 0.5, 1.0])


def test_bad_values_and_bad_percentiles_are_refused() -> None:
    with pytest.raises(InputError, match="NaN"):
        normalize_intensities(np.array([[[1.0, np.nan]]]))
    with pytest.raises(InputError, match="Percentiles"):
        normalize_intensities(np.ones((2, 2, 2)), percentiles=(99, 1))


def test_model_input_shape_and_imagenet_normalisation() -> None:
    slices = np.zeros((2, 30, 40), np.float32)
    slices[1] = 1.0
    tensor = to_model_input(slices, 64)
    assert tensor.shape == (2, 3, 64, 64) and tensor.dtype == torch.float32
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(tensor[0, :, 5, 5], -mean / std)
    torch.testing.assert_close(tensor[1, :, 5, 5], (1 - mean) / std)
    # Shrinking (antialiased) keeps the mean grey level of a ramp; non-contiguous (flipped) stacks are accepted.
    ramp = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (1, 100, 1))[:, ::-1, ::-1]
    small = to_model_input(ramp, 50)
    assert small.shape == (1, 3, 50, 50)
    assert float(small[0, 0].mean() * 0.229 + 0.485) == pytest.approx(0.5, abs=1e-3)


def test_masks_to_model_input_is_binary_and_keeps_the_shape() -> None:
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 5:15, 5:15] = True
    out = masks_to_model_input(masks, 40)
    assert out.shape == (2, 1, 40, 40)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert int(out[0].sum()) == 400 and int(out[1].sum()) == 0


def test_logits_back_to_the_slice_size() -> None:
    logits = torch.full((3, 16, 16), -5.0)
    logits[1, 4:12, 4:12] = 5.0
    out = logits_to_slice(logits, 40, 24)
    assert out.shape == (3, 40, 24)
    assert (out[1] > 0).sum() == pytest.approx(40 * 24 / 4, rel=0.1) and not (out[0] > 0).any()
