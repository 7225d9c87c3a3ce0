"""MedSAM2 as a model like the others: in the registry at input 512 with its weights' license, built as MedSAM2's
published config (``sam2.1_hiera_t512.yaml``: SAM2.1 tiny, image_size 512, RoPE feat_sizes [32, 32]), a checkpoint
with its key set and shapes loaded strictly, and a run at 512 whose output lies on the query's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import write_small_case

from FateSAMLib.cli.main import main
from FateSAMLib.models.architecture import build_architecture
from FateSAMLib.models.registry import MEDSAM2, SAM2_LICENSE, get_model_spec, model_names
from FateSAMLib.options import RunSettings


def test_medsam2_is_listed_with_its_own_input_size_and_license():
    assert "medsam2" in model_names() and get_model_spec("medsam2") is MEDSAM2
    assert MEDSAM2.image_size == 512 and MEDSAM2.filename == "MedSAM2_latest.pt"
    assert MEDSAM2.url == "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"
    assert MEDSAM2.license == "CC-BY-SA-4.0" and "CC-BY-SA-4.0" in MEDSAM2.license_notice
    tiny = get_model_spec("sam2.1-tiny")
    assert tiny.license == SAM2_LICENSE and tiny.license_notice is None
    assert RunSettings(model="medsam2").image_size is None  # None: the model's own, 512


@pytest.fixture(scope="module")
def medsam2_checkpoint(tmp_path_factory):
    """A checkpoint in MedSAM2's format ({"model": state_dict}) with seeded random weights of its architecture."""
    model = build_architecture(MEDSAM2, seed=3)
    path = tmp_path_factory.mktemp("medsam2") / "MedSAM2_latest.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_medsam2_is_built_as_its_published_config(medsam2_checkpoint):
    model = build_architecture(MEDSAM2)
    assert model.image_size == 512
    for layer in model.memory_attention.layers:  # RoPE tables built for 32 x 32 stride-16 features
        assert layer.self_attn.freqs_cis.shape[0] == 32 * 32
        assert layer.cross_attn_image.freqs_cis.shape[0] == 32 * 32
    # MedSAM2 keeps SAM2.1 tiny's parameters: the same keys and shapes as a SAM2.1 tiny checkpoint.
    state = torch.load(medsam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    tiny = build_architecture(get_model_spec("sam2.1-tiny")).state_dict()
    assert {key: value.shape for key, value in state.items()} == {key: value.shape for key, value in tiny.items()}


def test_a_medsam2_checkpoint_loads_strictly_and_runs_at_512_on_the_query_grid(medsam2_checkpoint, tmp_path, capsys):
    paths = write_small_case(tmp_path)
    output, stats = tmp_path / "out.nii.gz", tmp_path / "stats.json"
    code = main(
        [
            "segment",
            "--support", str(paths["support"]), str(paths["labels"]),
            "--query", str(paths["query"]),
            "--output", str(output),
            "--model", "medsam2",
            "--checkpoint", str(medsam2_checkpoint),
            "--device", "cpu",
            "--stats-json", str(stats),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = json.loads(stats.read_text())
    assert run["model"] == "medsam2" and run["image_size"] == 512
    result, query = sitk.ReadImage(str(output)), sitk.ReadImage(str(paths["query"]))
    assert result.GetSize() == query.GetSize()
    np.testing.assert_allclose(result.GetOrigin(), query.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(result.GetDirection(), query.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(result.GetSpacing(), query.GetSpacing(), atol=1e-6)
