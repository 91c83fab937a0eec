"""Decoding and preprocessing (report section 2.1), shared by both engines so that their inputs match.

eval  = resize(shorter side) + CenterCrop(image_size)
train = the ``augment`` policy (``policy``): none = eval; report = RandomResizedCrop(image_size) +
        horizontal flip (the report's section 2.1); strong = the report's section 4.4 list
then  float in [0, 1] and, unless ``normalize`` is off, the backbone's published mean/std.
Every image is decoded to uint8 RGB (greyscale, CMYK, RGBA, palette all become RGB).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from benchmark.features.spec import Preprocessing, View


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


def eval_view(img: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    img = F.resize(img, [prep.resize], antialias=True)
    return F.center_crop(img, [prep.image_size])


def as_seen(batch: torch.Tensor, view: View) -> torch.Tensor:
    """A batch of eval views (uint8 NCHW) as ``view`` shows them: mirrored left-right for ``tta: flip``
    (the mirror of exactly the pixels the network sees, in both engines)."""
    return batch.flip(-1) if view.mirrored else batch


def policy(name: str, image_size: int) -> v2.Transform | None:
    """The training-view transform of augmentation policy ``name`` on a uint8 CHW image (None: the
    eval view). Each policy is defined here only; ``spec.POLICY_KEYS`` names it in cache keys."""
    if name == "none":
        return None
    crop_flip = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    if name == "report":
        return v2.Compose(crop_flip)
    if name == "strong":  # pose/viewpoint, lighting, occlusion (report section 4.4)
        return v2.Compose([
            *crop_flip,
            v2.RandomApply([v2.RandomAffine(degrees=15, translate=(0.05, 0.05), scale=(0.9, 1.1))], p=0.5),
            v2.RandomPerspective(distortion_scale=0.2, p=0.3),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
            v2.RandomGrayscale(p=0.1),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.2), value=0),
        ])
    raise ValueError(f"augment={name!r} is not a policy; choose one of: none, report, strong")


_POLICIES: dict[tuple[str, int], v2.Transform | None] = {}


def train_view(img: torch.Tensor, prep: Preprocessing, augment: str, seed: int | None = None) -> torch.Tensor:
    """A random view under policy ``augment`` (the reference engine's online augmentation, and the cached
    engine's strong bank; its report bank draws the same crops vectorized, ``benchmark.features.augment``);
    ``seed`` makes it reproducible (one view per image, epoch and seed)."""
    key = (augment, prep.image_size)
    if key not in _POLICIES:
        _POLICIES[key] = policy(*key)
    aug = _POLICIES[key]
    if aug is None:
        return eval_view(img, prep)
    if seed is None:
        return aug(img)
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's stream stays untouched
        torch.default_generator.manual_seed(seed)
        return aug(img)


def to_input(batch: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 NCHW -> float NCHW, normalized with the backbone's statistics unless ``prep.mean`` is None."""
    x = batch.float().div_(255)
    if prep.mean is not None:
        x = F.normalize(x, mean=list(prep.mean), std=list(prep.std))
    return x


def view_seed(seed: int, view: int, index: int) -> int:
    """Seed of augmented view ``view`` of image ``index`` for run seed ``seed`` (stable, no overlap)."""
    return (seed * 1_000_003 + view) * 10_000_019 + index
