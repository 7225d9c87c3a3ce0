"""Building the frozen SAM2 model: seeded random weights, local checkpoints (good and bad), devices, memory."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from sam2.modeling.sam2_base import SAM2Base

from FateSAMLib.errors import CheckpointError, ModelError
from FateSAMLib.models.devices import available_memory_bytes, resolve_device
from FateSAMLib.models.loading import RANDOM_WEIGHTS_WARNING, load_model


def build(caplog: pytest.LogCaptureFixture, **options):
    """Load SAM2.1 tiny with random weights; the library logger warns about them exactly once."""
    options = {"random_weights": True, "image_size": 256, "device": "cpu", **options}
    caplog.clear()
    loaded = load_model("sam2.1-tiny", **options)
    warnings = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [("FateSAMLib.models.loading", logging.WARNING, RANDOM_WEIGHTS_WARNING)]
    return loaded


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_random_weights_build_a_frozen_sam2base_with_tracking_settings_deterministically(caplog):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    loaded = build(caplog, seed=0)
    assert torch.equal(torch.rand(3), expected_next), "building must not disturb the caller's random numbers"

    model = loaded.model
    assert type(model) is SAM2Base
    assert (loaded.image_size, model.image_size, loaded.device) == (256, 256, torch.device("cpu"))
    assert loaded.random_weights and loaded.checkpoint_path is None
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.binarize_mask_from_pts_for_mem_enc
    decoder = model.sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability
    assert (decoder.dynamic_multimask_stability_delta, decoder.dynamic_multimask_stability_thresh) == (0.05, 0.98)
    assert not hasattr(model, "fill_hole_area")

    assert same_weights(model, build(caplog, seed=0).model)
    assert not same_weights(model, build(caplog, seed=1).model)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    """A SAM2.1 tiny checkpoint file in sam2's format ({"model": state_dict}), random weights."""
    path = tmp_path_factory.mktemp("checkpoints") / "my_tiny.pt"
    torch.save({"model": tiny_model.model.state_dict()}, path)
    return path


def test_a_local_checkpoint_is_loaded_strictly_at_any_input_size(tiny_checkpoint, tiny_model):
    loaded = load_model("sam2.1-tiny", checkpoint=tiny_checkpoint, image_size=256, device="cpu", seed=7)
    assert loaded.checkpoint_path == tiny_checkpoint and not loaded.random_weights
    assert loaded.image_size == 256
    assert same_weights(loaded.model, tiny_model.model)


@pytest.mark.parametrize(
    ("model", "fix"),
    [
        ("sam2.1-small", "It looks like a checkpoint of sam2.1-tiny: pass --model sam2.1-tiny"),
        ("sam2.0-tiny", "It looks like a checkpoint of sam2.1-tiny: pass --model sam2.1-tiny"),
    ],
)
def test_a_checkpoint_of_another_model_names_the_model_it_fits(tiny_checkpoint, model, fix):
    with pytest.raises(CheckpointError, match="do not match the architecture") as error:
        load_model(model, checkpoint=tiny_checkpoint, image_size=128, device="cpu")
    message = str(error.value)
    assert str(tiny_checkpoint) in message and f"loaded into model {model}" in message and fix in message


def test_corrupt_or_foreign_local_checkpoints_are_refused_and_kept(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: 1024 * 1024])
    not_sam2 = tmp_path / "classifier.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, not_sam2)
    other_net = tmp_path / "other_net.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other_net)
    cases = [
        (truncated, "torch.load cannot read it"),
        (not_sam2, "not a SAM2 checkpoint"),
        (other_net, "471 missing keys.*1 unexpected keys.*leave out --checkpoint"),
    ]
    for path, reason in cases:
        with pytest.raises(CheckpointError, match=f"{path}.*sam2.1-tiny.*{reason}"):
            load_model("sam2.1-tiny", checkpoint=path, image_size=128, device="cpu")
        assert path.exists(), "a user's own file is never deleted"


def test_a_missing_checkpoint_is_reported_before_any_work(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*leave out --checkpoint"):
        load_model("sam2.1-large", checkpoint=tmp_path / "nowhere.pt", device="cpu")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model("sam2.1-tiny", checkpoint=tmp_path, device="cpu")


@pytest.mark.parametrize("size", [100, 0, -32, 1000])
def test_image_size_must_be_a_positive_multiple_of_32(size):
    with pytest.raises(ModelError, match="multiple of 32"):
        load_model("sam2.1-tiny", random_weights=True, image_size=size, device="cpu")


def test_bad_requests_are_model_errors_with_a_fix(tiny_checkpoint):
    with pytest.raises(ModelError, match="Unknown model 'sam2.1-huge'.*sam2.1-tiny"):
        load_model("sam2.1-huge", random_weights=True)
    with pytest.raises(ModelError, match="exclude each other"):
        load_model("sam2.1-tiny", checkpoint=tiny_checkpoint, random_weights=True)
    with pytest.raises(ModelError, match="Unknown device 'gpu0'"):
        load_model("sam2.1-tiny", random_weights=True, device="gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_refused_with_the_fix():
    with pytest.raises(ModelError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")


def test_auto_device_and_free_memory():
    device = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert device.type == expected
    free = available_memory_bytes(torch.device("cpu"))
    assert 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if torch.cuda.is_available():
        assert 0 < available_memory_bytes(torch.device("cuda")) <= torch.cuda.get_device_properties(0).total_memory
