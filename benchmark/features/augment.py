"""The cached engine's augmentation bank ("report" policy: RandomResizedCrop + horizontal flip),
applied to a whole batch at once, on the batch's device.

Crop boxes follow torchvision's ``RandomResizedCrop`` sampling exactly (scale (0.08, 1), ratio
(3/4, 4/3), 10 tries, then the central-crop fallback), vectorized over the batch. Its random
numbers are a counter-based hash of (seed, view, image index), so a given image and view get the
same pixels whatever batch they are in and on any device, without forking a generator per image.
Crop + resize is one ``roi_align`` call (bilinear samples averaged over each output pixel's
footprint: torchvision's bilinear resize when upscaling, an antialiasing box filter when
downscaling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.ops import roi_align

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
_TRIES = 10


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(keys: np.ndarray, n: int) -> np.ndarray:
    """[len(keys), n] uniforms in [0, 1), a pure function of each key (non-negative ints)."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray(keys, dtype=np.uint64))
        bits = _splitmix64(base[:, None] + np.arange(1, n + 1, dtype=np.uint64))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def crop_params(sizes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (top, left, height, width) [n, 4] and horizontal flips [n] for images of ``sizes``
    [n, 2] (height, width): torchvision's RandomResizedCrop.get_params + RandomHorizontalFlip."""
    u = uniforms(keys, 2 * _TRIES + 3)
    h_img, w_img = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)
    area = h_img * w_img * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, :_TRIES])
    log_r = np.log(RATIO)
    ratio = np.exp(log_r[0] + (log_r[1] - log_r[0]) * u[:, _TRIES:2 * _TRIES])
    w = np.round(np.sqrt(area * ratio))
    h = np.round(np.sqrt(area / ratio))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = ok.argmax(1)
    rows = np.arange(len(sizes))
    h, w = h[rows, first], w[rows, first]
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    # no try fits: the central crop of the largest box within the ratio range
    none = ~ok.any(1)
    in_ratio = w_img / h_img
    fb_w = np.where(in_ratio < RATIO[0], w_img, np.where(in_ratio > RATIO[1], np.round(h_img * RATIO[1]), w_img))
    fb_h = np.where(in_ratio < RATIO[0], np.round(w_img / RATIO[0]), h_img)
    h, w = np.where(none, fb_h, h), np.where(none, fb_w, w)
    top = np.where(none, (h_img - h) // 2, np.floor(u[:, -3] * (h_img - h + 1)))
    left = np.where(none, (w_img - w) // 2, np.floor(u[:, -2] * (w_img - w + 1)))
    return np.stack([top, left, h, w], 1).astype(np.int64), u[:, -1] < 0.5


def random_resized_crop_flip(images: list[torch.Tensor], keys: np.ndarray, size: int) -> torch.Tensor:
    """uint8 NCHW [n, C, size, size]: the augmented view of each uint8 CHW image (any sizes)."""
    sizes = np.array([img.shape[-2:] for img in images])
    boxes, flip = crop_params(sizes, keys)
    h_max, w_max = sizes.max(0)
    # edge-replicate padding to a common size: bilinear samples at a box edge read the image's own edge
    batch = torch.stack([nnf.pad(img[None].float(), (0, int(w_max - img.shape[-1]), 0, int(h_max - img.shape[-2])),
                                 mode="replicate")[0] if tuple(img.shape[-2:]) != (h_max, w_max) else img.float()
                         for img in images])
    top, left, h, w = (torch.as_tensor(boxes[:, i], dtype=torch.float32, device=batch.device) for i in range(4))
    rois = torch.stack([torch.arange(len(images), dtype=torch.float32, device=batch.device),
                        left, top, left + w, top + h], 1)
    out = roi_align(batch, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flip_t = torch.as_tensor(flip, device=out.device)[:, None, None, None]
    out = torch.where(flip_t, out.flip(-1), out)
    return out.round_().clamp_(0, 255).to(torch.uint8)

