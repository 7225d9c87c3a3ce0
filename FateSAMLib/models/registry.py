"""The SAM2 models FateSAM knows: names, sam2 configs, official download addresses and pinned digests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

SAM2_LICENSE = "Apache-2.0"
SAM2_LICENSE_URL = "https://github.com/facebookresearch/sam2/blob/main/LICENSE"


@dataclass(frozen=True)
class ModelSpec:
    """One SAM2 release: its config in the sam2 package (with overrides, for a release that changed it), where its
    checkpoint is, its SHA-256 if pinned, its own input size (the default ``--image-size``) and the license of its
    weights (SPDX name, where it is stated)."""

    name: str
    config: str
    url: str
    sha256: str | None
    filename: str
    image_size: int = 1024
    config_overrides: tuple[str, ...] = ()  # hydra overrides of ``config`` that make the release's own config
    license: str = SAM2_LICENSE
    license_url: str = SAM2_LICENSE_URL

    @property
    def license_notice(self) -> str | None:
        """What to tell a user before the first download: the weights' license, where it is not SAM2's (the code's)."""
        if self.license == SAM2_LICENSE:
            return None
        return (
            f"The {self.name} weights ({self.filename}) are licensed {self.license} (stated at {self.license_url}), "
            f"not under FateSAM's or SAM2's {SAM2_LICENSE}: read it before using them or what you make with them."
        )


@dataclass(frozen=True)
class _Size:
    """What tells the sizes apart in a checkpoint: the Hiera trunk's width and number of blocks."""

    config_letter: str
    embed_dim: int
    blocks: int


_SIZES = {
    "tiny": _Size("t", 96, 12),
    "small": _Size("s", 96, 16),
    "base_plus": _Size("b+", 112, 24),
    "large": _Size("l", 144, 48),
}

_RELEASES = {
    # version: (config folder, file prefix, download folder)
    "sam2.0": ("sam2", "sam2", "https://dl.fbaipublicfiles.com/segment_anything_2/072824"),
    "sam2.1": ("sam2.1", "sam2.1", "https://dl.fbaipublicfiles.com/segment_anything_2/092824"),
}

# SAM2.1 digests are not pinned: the first download is checked by a strict load and its digest recorded.
_PINNED_SHA256 = {
    "sam2.0-tiny": "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
    "sam2.0-small": "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
    "sam2.0-base_plus": "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
    "sam2.0-large": "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
}

DEFAULT_MODEL = "sam2.1-tiny"

MEDSAM2 = ModelSpec(
    # bowang-lab's MedSAM2 (arXiv 2504.03600): SAM2.1 Hiera-tiny fine-tuned on 3D medical images and videos at input
    # 512. Its config (sam2.1_hiera_t512.yaml) is SAM2.1's tiny one with image_size 512 and feat_sizes [32, 32] in
    # the memory attention's two RoPE blocks (the stride-16 feature map at 512). No digest is published: the first
    # download is checked by a strict load and its digest recorded, as for SAM2.1.
    name="medsam2",
    config="configs/sam2.1/sam2.1_hiera_t.yaml",
    config_overrides=tuple(
        f"++model.memory_attention.layer.{block}.feat_sizes=[32,32]" for block in ("self_attention", "cross_attention")
    ),
    url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
    sha256=None,
    filename="MedSAM2_latest.pt",
    image_size=512,
    license="CC-BY-SA-4.0",
    license_url="https://huggingface.co/wanglab/MedSAM2",
)


def _build_specs() -> dict[str, ModelSpec]:
    specs = {}
    for version, (config_folder, prefix, folder_url) in _RELEASES.items():
        for size, facts in _SIZES.items():
            name = f"{version}-{size}"
            filename = f"{prefix}_hiera_{size}.pt"
            specs[name] = ModelSpec(
                name=name,
                config=f"configs/{config_folder}/{prefix}_hiera_{facts.config_letter}.yaml",
                url=f"{folder_url}/{filename}",
                sha256=_PINNED_SHA256.get(name),
                filename=filename,
            )
    specs[MEDSAM2.name] = MEDSAM2
    return specs


MODELS: dict[str, ModelSpec] = _build_specs()


def model_names() -> list[str]:
    """Every known model name: SAM2.0, then SAM2.1 (smallest first each), then MedSAM2."""
    return list(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; :class:`ModelError` naming the valid names if there is none."""
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(MODELS)
        raise ModelError(f"Unknown model '{name}'. Use one of: {valid} (default {DEFAULT_MODEL}).") from None


def model_matching(sam21: bool, embed_dim: int, blocks: int) -> str | None:
    """The name of the model whose architecture has these traits (read from a checkpoint), or None."""
    version = "sam2.1" if sam21 else "sam2.0"
    for size, facts in _SIZES.items():
        if (facts.embed_dim, facts.blocks) == (embed_dim, blocks):
            return f"{version}-{size}"
    return None


def check_image_size(image_size: int) -> None:
    """:class:`ModelError` unless ``image_size`` is a positive multiple of 32 (SAM2's coarsest feature stride)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
        raise ModelError(
            f"Image size {image_size!r} is not a positive multiple of 32; use e.g. 1024 (the model's own), 512 or 256."
        )


def cache_dir() -> Path:
    """Where checkpoints are kept: $FATESAM_CACHE_DIR, else $XDG_CACHE_HOME/fatesam, else ~/.cache/fatesam."""
    if os.environ.get("FATESAM_CACHE_DIR"):
        return Path(os.environ["FATESAM_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fatesam"
    return Path.home() / ".cache" / "fatesam"


def cached_checkpoint_path(spec: ModelSpec) -> Path:
    """The path the model's checkpoint has in the cache folder (whether or not it is there)."""
    return cache_dir() / spec.filename
