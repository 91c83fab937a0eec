"""A ``Preprocessing`` value for tests of the features package that need only its pixel fields."""

from __future__ import annotations

from benchmark.features.spec import Preprocessing


def make_prep(image_size: int = 32, resize: int = 40, **changes) -> Preprocessing:
    base = dict(backbone="test", weights="random:0", image_size=image_size, resize=resize, mean=None, std=None,
                decoder="pil", device="cpu", precision="fp32", runtime="torch", align=None, trainable_blocks=0,
                dtype="float32")
    return Preprocessing(**{**base, **changes})
