"""Decoding and preprocessing (report section 2.1), shared by both engines so that their inputs match.

eval  = resize(shorter side) + CenterCrop(image_size)
train = RandomResizedCrop(image_size) + horizontal flip when ``augment``, else eval
then  float in [0, 1] and, when ``normalize``, the backbone's published mean/std.
Every image is decoded to uint8 RGB (greyscale, CMYK, RGBA, palette all become RGB).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from benchmark.config import Config


def decode(path: str) -> torch.Tensor:
    """uint8 CHW RGB tensor; a clear error names the file that cannot be read."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit greyscale: convert() would clip
                grey = np.round(np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 257).astype(np.uint8)
                im = Image.fromarray(grey)  # mode L
            rgb = np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def eval_view(img: torch.Tensor, cfg: Config) -> torch.Tensor:
    img = F.resize(img, [cfg.resize], antialias=True)
    return F.center_crop(img, [cfg.image_size])


_AUGMENT_CACHE: dict[int, v2.Compose] = {}


def train_view(img: torch.Tensor, cfg: Config) -> torch.Tensor:
    """A random augmented view (the reference engine's online augmentation; the cached engine's
    bank draws the same crops per batch, ``benchmark.augment``)."""
    if not cfg.augment:
        return eval_view(img, cfg)
    aug = _AUGMENT_CACHE.get(cfg.image_size)
    if aug is None:
        aug = _AUGMENT_CACHE[cfg.image_size] = v2.Compose(
            [v2.RandomResizedCrop(cfg.image_size, antialias=True), v2.RandomHorizontalFlip()])
    return aug(img)


def to_input(batch: torch.Tensor, cfg: Config, mean, std) -> torch.Tensor:
    """uint8 NCHW -> float NCHW, normalized with the backbone's statistics when ``normalize``."""
    x = batch.float().div_(255)
    if cfg.normalize:
        x = F.normalize(x, mean=list(mean), std=list(std))
    return x


def view_seed(seed: int, view: int, index: int) -> int:
    """Seed of augmented view ``view`` of image ``index`` for run seed ``seed`` (stable, no overlap)."""
    return (seed * 1_000_003 + view) * 10_000_019 + index
