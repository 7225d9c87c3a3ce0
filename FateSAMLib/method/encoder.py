"""Image-encoder features of slices, computed once and reused by retrieval and tracking."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import write_file_atomically
from ..errors import InputError, ResourceError
from ..progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)


@dataclass
class StackFeatures:
    """SAM2 backbone features of a set of slices, in the flattened layout SAM2's tracking step uses.

    ``levels[l]`` has shape (S, HW_l, C_l): slice ``i`` of level ``l`` is ``levels[l][i]``. The high-resolution levels
    already went through the mask decoder's ``conv_s0``/``conv_s1`` projections, as in ``SAM2Base.forward_image``.
    """

    levels: list[torch.Tensor]

    @property
    def num_slices(self) -> int:
        return self.levels[0].shape[0]

    def slice_levels(self, index: int) -> list[torch.Tensor]:
        """One slice's features as SAM2 expects them: a list of (HW, 1, C) tensors, coarsest level last."""
        return [level[index].unsqueeze(1) for level in self.levels]

    def select(self, rows: list[int]) -> StackFeatures:
        """The features of these slices only, in this order."""
        return StackFeatures(levels=[level[rows] for level in self.levels])

    @staticmethod
    def concatenate(parts: list[StackFeatures]) -> StackFeatures:
        """The slices of several stacks, in order, as one stack."""
        return StackFeatures(levels=[torch.cat([p.levels[i] for p in parts]) for i in range(len(parts[0].levels))])


@dataclass
class EncoderOutputGeometry:
    """What every slice shares: the spatial size of each level and its positional encoding (HW, 1, C)."""

    feat_sizes: list[tuple[int, int]]
    pos_embeds: list[torch.Tensor]

    @classmethod
    def of_model(cls, model: torch.nn.Module, device: torch.device) -> EncoderOutputGeometry:
        """The geometry without encoding a slice (a run whose features all come from the cache).

        SAM2 keeps the FPN levels of strides 4, 8 and 16 (``num_feature_levels`` of them, coarsest last) and encodes
        their positions with its neck's sine encoding, which depends on the level's size only.
        """
        strides = [model.backbone_stride // 2**i for i in range(model.num_feature_levels)][::-1]
        sizes = [(model.image_size // stride, model.image_size // stride) for stride in strides]
        channels = model.image_encoder.neck.d_model
        with torch.inference_mode(), compute_autocast(device):
            embeds = [
                model.image_encoder.neck.position_encoding(torch.zeros(1, channels, h, w, device=device))
                for h, w in sizes
            ]
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the neck's output dtype
        return cls(sizes, [pos.to(dtype).flatten(2).permute(2, 0, 1) for pos in embeds])


def compute_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, as SAM2 runs there; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Largest input size at which batching speeds SAM2's image encoder up on a CPU. Measured with SAM2.1 tiny on 2 cores:
# per slice, batches of 4 take 0.71x the time of single slices at 128 and 0.94x at 256, but 1.09x at 512 and
# 1.24x at 1024, where single slices are fastest and keep the peak memory lowest.
CPU_BATCHING_MAX_SIZE = 256


def encoder_batch_size(device: torch.device, image_size: int, available_bytes: int) -> int:
    """Slices per image-encoder batch: as many as half the free memory holds on a GPU (at most 16).

    The estimate is about 300 MB of activations per slice at 1024 (bf16 halves it). On a CPU: 4 at small input sizes
    (up to ``CPU_BATCHING_MAX_SIZE``), else 1.
    """
    if device.type != "cuda":
        return 4 if image_size <= CPU_BATCHING_MAX_SIZE else 1
    per_slice = 150 * 1024**2 * (image_size / 1024) ** 2
    return int(min(16, max(1, available_bytes // 2 // per_slice)))


class SliceEncoder:
    """Runs SAM2's image encoder over slices in batches and counts how many slices it encoded."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int) -> None:
        self.model = model
        self.device = device
        self.batch_size = max(1, batch_size)
        self.passes = 0
        self._geometry: EncoderOutputGeometry | None = None

    @property
    def geometry(self) -> EncoderOutputGeometry:
        """Level sizes and positional encodings: those of the encoded slices, else SAM2's for the model's input."""
        if self._geometry is None:
            self._geometry = EncoderOutputGeometry.of_model(self.model, self.device)
        return self._geometry

    def _run(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), compute_autocast(self.device):
            backbone_out = self.model.forward_image(images.to(self.device, non_blocking=True))
            _, vision_feats, vision_pos, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        if self._geometry is None:
            self._geometry = EncoderOutputGeometry(
                feat_sizes=[tuple(size) for size in feat_sizes], pos_embeds=[pos[:, :1] for pos in vision_pos]
            )
        return [feats.permute(1, 0, 2) for feats in vision_feats]  # (HW, B, C) -> (B, HW, C)

    def encode(
        self, images: torch.Tensor, cancel: CancelToken, progress: ProgressCallback | None = None, label: str = ""
    ) -> StackFeatures:
        """Encode every slice of ``images`` (S, 3, size, size) once, in batches; checks ``cancel`` between batches."""
        parts = []
        total = images.shape[0]
        for start in range(0, total, self.batch_size):
            cancel.raise_if_cancelled()
            batch = images[start : start + self.batch_size]
            parts.append(StackFeatures(self._run(batch)))
            self.passes += batch.shape[0]
            if progress is not None:
                done = start + batch.shape[0]
                progress(done / total, f"Encoding {label}: slice {done}/{total}")
        return StackFeatures.concatenate(parts)


class FeatureCache:
    """Encoder features and support memories saved on disk, keyed by the model and the exact model input.

    The key is the FateSAM version, the model's identity (name, input size, weights) and the normalised slices (for a
    support memory, also its masks and how memories are stored), so it follows the files' content, not their names. A
    second run with the same supports (a saved support set) loads their features and memories instead of encoding
    them; a refine run loads the query's features too. The cache is an optimisation: a folder that cannot be written
    is warned about once (the ``FateSAMLib`` logger) and the run goes on without saving, and an entry that does not
    read as one this cache wrote for that key, with the structure its use needs, is ignored (and written again).
    """

    def __init__(self, folder: Path, model_key: str) -> None:
        self.folder = Path(folder)
        self.model_key = model_key
        self.writable = True

    def _key(self, kind: str, *arrays: np.ndarray) -> str:
        digest = hashlib.sha256(f"FateSAM {__version__}\0{self.model_key}".encode())
        digest.update(kind.encode())
        for array in arrays:
            digest.update(str((array.shape, array.dtype.str)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:32]

    def _read(self, key: str, device: torch.device, valid: Callable[[object], bool]) -> object | None:
        """The value stored under ``key``, or None: no entry, or one that does not read as ours (unreadable, not
        written by this cache under this key, or a value that ``valid`` refuses)."""
        path = self.folder / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # whatever a damaged or foreign file makes torch raise: not our entry
            return None
        if not (isinstance(entry, dict) and entry.get("entry") == _ENTRY and entry.get("key") == key):
            return None
        return entry["value"] if valid(entry.get("value")) else None

    def _write(self, key: str, value: object) -> None:
        """Store ``value`` (tensors, in lists and dicts) under ``key`` atomically (:func:`write_file_atomically`).

        A failure (folder not writable, disk full) is warned about once; later saves of this run are skipped.
        """
        if not self.writable:
            return
        on_cpu = _tensors_to_cpu(value)
        try:
            entry = {"entry": _ENTRY, "key": key, "value": on_cpu}
            write_file_atomically(
                self.folder / f"{key}.pt", lambda temporary: torch.save(entry, temporary), overwrite=True
            )
        except (InputError, ResourceError, OSError) as error:  # the folder cannot be made, written or renamed into
            self.writable = False
            logger.warning(
                f"The feature cache {self.folder} cannot be written ({str(error).strip() or type(error).__name__}); "
                "the run goes on without it. Free disk space or choose another --feature-cache folder."
            )

    def load(self, slices01: np.ndarray, device: torch.device) -> StackFeatures | None:
        """The cached features of these normalised slices, or None."""
        levels = self._read(self._key("features", slices01), device, lambda value: _is_levels(value, len(slices01)))
        return None if levels is None else StackFeatures(levels=levels)

    def save(self, slices01: np.ndarray, features: StackFeatures) -> None:
        """Store the features of these normalised slices."""
        self._write(self._key("features", slices01), list(features.levels))

    def _memory_key(self, slice01: np.ndarray, masks: torch.Tensor, memory_dtype: torch.dtype) -> str:
        return self._key(f"support memory {memory_dtype}", slice01, masks.to(torch.uint8).cpu().numpy())

    def load_memory(
        self, slice01: np.ndarray, masks: torch.Tensor, memory_dtype: torch.dtype, device: torch.device
    ) -> dict | None:
        """The cached conditioning memory of a support slice with these (L, 1, size, size) masks, or None."""
        key = self._memory_key(slice01, masks, memory_dtype)
        return self._read(key, device, lambda value: _is_memory(value, masks.shape[0]))

    def save_memory(self, slice01: np.ndarray, masks: torch.Tensor, memory_dtype: torch.dtype, memory: dict) -> None:
        """Store the conditioning memory of a support slice with these masks."""
        self._write(self._memory_key(slice01, masks, memory_dtype), memory)


class MemoryFeatureCache(FeatureCache):
    """The feature cache kept in this process's memory (on the model's device): a cohort worker or a warm server
    encodes its supports and their memories for the first case only.

    It holds at most ``max_bytes`` of tensors: past that, the least recently used entries are dropped (a query's
    features, read by its own run only, go first; supports read by every case stay), so a process that serves case
    after case does not grow without bound. A dropped entry is simply encoded again when needed.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(Path(), model_key="this process's model")
        self.max_bytes = max_bytes
        self.bytes_held = 0
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()

    def _read(self, key: str, device: torch.device, valid: Callable[[object], bool]) -> object | None:
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key][0]

    def _write(self, key: str, value: object) -> None:
        size = _tensor_bytes(value)
        if key in self._entries:
            self.bytes_held -= self._entries.pop(key)[1]
        if size > self.max_bytes:
            return
        while self.bytes_held + size > self.max_bytes:
            self.bytes_held -= self._entries.popitem(last=False)[1][1]
        self._entries[key] = (value, size)
        self.bytes_held += size


_ENTRY = "FateSAM feature cache entry"


def _is_levels(value: object, slices: int) -> bool:
    """Whether ``value`` is a list of feature levels of ``slices`` slices, (S, HW, C) tensors."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(t, torch.Tensor) and t.ndim == 3 and t.shape[0] == slices for t in value)
    )


def _is_memory(value: object, labels: int) -> bool:
    """Whether ``value`` is a support slice's conditioning memory for ``labels`` labels (see ``SliceTracker``)."""
    if not isinstance(value, dict) or set(value) != {"maskmem_features", "maskmem_pos_enc", "obj_ptr"}:
        return False
    features, pos_enc, pointer = value["maskmem_features"], value["maskmem_pos_enc"], value["obj_ptr"]
    return (
        isinstance(features, torch.Tensor)
        and isinstance(pointer, torch.Tensor)
        and features.ndim == 4
        and features.shape[0] == pointer.shape[0] == labels
        and isinstance(pos_enc, list)
        and all(isinstance(t, torch.Tensor) for t in pos_enc)
    )


def _tensor_bytes(value: object) -> int:
    """How many bytes the tensors in ``value`` (in lists, tuples and dicts) hold."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    return 0


def _tensors_to_cpu(value: object) -> object:
    """``value`` with every tensor (in lists, tuples and dicts) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, list | tuple):
        return type(value)(_tensors_to_cpu(item) for item in value)
    if isinstance(value, dict):
        return {key: _tensors_to_cpu(item) for key, item in value.items()}
    return value
