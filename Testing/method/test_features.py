"""How many slices the image encoder takes at once, on a CPU and on a GPU."""

from __future__ import annotations

import torch

from FateSAMLib.method.encoder import CPU_BATCHING_MAX_SIZE, encoder_batch_size

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
