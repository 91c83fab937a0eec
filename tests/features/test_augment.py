"""The batched augmentation bank against torchvision: the crop-parameter distribution of
``RandomResizedCrop`` (+ flip), the pixels of a given box, and one image's view independent of its batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from benchmark.features.augment import SCALE, RATIO, crop_params, random_resized_crop_flip, uniforms


def _torchvision_params(h: int, w: int, n: int) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    return np.array([T.RandomResizedCrop.get_params(img, list(SCALE), list(RATIO)) for _ in range(n)])


@pytest.mark.parametrize("size", [(250, 250), (90, 320)])  # LFW's square, and a wide image that rejects tries
def test_crop_parameters_follow_torchvision(size):
    n = 4000
    ours, flips = crop_params(np.tile(size, (n, 1)), np.arange(n) + 12345)
    ref = _torchvision_params(*size, n)
    h_img, w_img = size

    def described(p):  # area fraction, log aspect ratio, relative top/left offsets
        top, left, h, w = p.T.astype(float)
        return {"area": h * w / (h_img * w_img), "log_ratio": np.log(w / h),
                "top": top / np.maximum(h_img - h, 1), "left": left / np.maximum(w_img - w, 1)}

    a, b = described(ours), described(ref)
    for name in a:
        assert stats.ks_2samp(a[name], b[name]).pvalue > 1e-3, name
        assert a[name].mean() == pytest.approx(b[name].mean(), abs=0.03), name
    assert (ours[:, 2] <= h_img).all() and (ours[:, 3] <= w_img).all()
    assert (ours[:, :2] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h_img).all() and (ours[:, 1] + ours[:, 3] <= w_img).all()
    assert stats.binomtest(int(flips.sum()), n).pvalue > 1e-3


def test_central_crop_fallback_when_no_try_fits():
    # 10 x 400: every try needs h >= 15, so torchvision falls back to the central 4:3 crop
    boxes, _ = crop_params(np.array([[10, 400]] * 3), np.arange(3))
    assert boxes.tolist() == [[0, 193, 10, 13]] * 3
    assert _torchvision_params(10, 400, 3).tolist() == [[0, 193, 10, 13]] * 3


def test_uniforms_are_a_function_of_the_key_only():
    u = uniforms(np.array([5, 7, 5]), 6)
    assert np.array_equal(u[0], u[2]) and not np.array_equal(u[0], u[1])
    assert np.array_equal(uniforms(np.array([7]), 6)[0], u[1])
    big = uniforms(np.arange(20000), 3)
    assert 0 <= big.min() and big.max() < 1 and abs(big.mean() - 0.5) < 0.01


def _images(rng, sizes):
    return [torch.from_numpy(rng.integers(0, 256, (3, *s), dtype=np.uint8)) for s in sizes]


def test_same_pixels_for_an_image_view_and_seed_whatever_the_batch():
    imgs = _images(np.random.default_rng(0), [(60, 50), (48, 48), (70, 90)])
    keys = np.array([11, 22, 33])
    together = random_resized_crop_flip(imgs, keys, 32)
    alone = random_resized_crop_flip([imgs[2]], keys[2:], 32)
    reordered = random_resized_crop_flip([imgs[1], imgs[0]], keys[[1, 0]], 32)
    assert together.dtype == torch.uint8 and together.shape == (3, 3, 32, 32)
    assert torch.equal(together[2], alone[0])  # padding to the batch's largest image changes nothing
    assert torch.equal(together[0], reordered[1]) and torch.equal(together[1], reordered[0])
    assert not torch.equal(random_resized_crop_flip([imgs[0]], np.array([12]), 32)[0], together[0])


def test_pixels_are_the_box_resized_like_torchvision():
    """Each view is its box resized to the output size (bilinear), flipped when drawn: compared
    with torchvision's resized_crop on the same box."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:80, 0:100]
    smooth = np.stack([120 + 100 * np.sin(x / 9.0), 120 + 100 * np.cos(y / 7.0), 128 + 0.5 * x])
    img = torch.from_numpy(np.clip(smooth, 0, 255).astype(np.uint8))
    keys = rng.integers(0, 2**40, 64)
    boxes, flips = crop_params(np.tile([80, 100], (64, 1)), keys)
    out = random_resized_crop_flip([img] * 64, keys, 56)
    diffs = []
    for view, (top, left, h, w), flip in zip(out, boxes, flips):
        want = F.resized_crop(img, int(top), int(left), int(h), int(w), [56, 56], antialias=True)
        want = want.flip(-1) if flip else want
        diffs.append((view.int() - want.int()).abs()[:, 2:-2, 2:-2].float().mean().item())
    # (borders left out: torchvision clamps at the crop's edge, roi_align reads the pixels beyond it)
    assert np.median(diffs) < 1.0 and max(diffs) < 3.0
    assert 0.2 < flips.mean() < 0.8
