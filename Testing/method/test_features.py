"""The image encoder: how many slices it takes at once, on a CPU and on a GPU, and the geometry of its features."""

from __future__ import annotations

import numpy as np
import torch

from FateSAMLib.method.encoder import CPU_BATCHING_MAX_SIZE, EncoderOutputGeometry, SliceEncoder, encoder_batch_size
from FateSAMLib.method.normalization import to_model_input
from FateSAMLib.progress import CancelToken

GIB = 1024**3


def test_cpu_batches_only_small_inputs():
    cpu = torch.device("cpu")
    assert encoder_batch_size(cpu, 128, 64 * GIB) == 4
    assert encoder_batch_size(cpu, CPU_BATCHING_MAX_SIZE, 64 * GIB) == 4
    assert encoder_batch_size(cpu, 512, 64 * GIB) == 1
    assert encoder_batch_size(cpu, 1024, 64 * GIB) == 1


def test_gpu_batches_are_sized_to_free_memory():
    cuda = torch.device("cuda")
    assert encoder_batch_size(cuda, 1024, 80 * GIB) == 16
    assert encoder_batch_size(cuda, 1024, 1 * GIB) == 3
    assert encoder_batch_size(cuda, 1024, GIB // 8) == 1


def test_the_feature_geometry_without_encoding_is_the_encoders(tiny_model):
    """A run whose features all come from the cache encodes nothing; its geometry must be the encoder's, bitwise."""
    encoder = SliceEncoder(tiny_model.model, tiny_model.device, batch_size=1)
    slices = np.random.default_rng(1).random((1, 40, 30), dtype=np.float32)
    encoder.encode(to_model_input(slices, tiny_model.image_size), CancelToken())
    derived = EncoderOutputGeometry.of_model(tiny_model.model, tiny_model.device)
    assert derived.feat_sizes == encoder.geometry.feat_sizes
    for ours, encoded in zip(derived.pos_embeds, encoder.geometry.pos_embeds, strict=True):
        assert ours.dtype == encoded.dtype and torch.equal(ours, encoded)
