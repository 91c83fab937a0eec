"""The two values the features package works from, built once at the pipeline's edge (``pipeline.prepare``).

``Preprocessing`` holds everything that decides a feature's pixels and arithmetic; a cache entry's key
is all of its fields plus the ``View`` and the images' content hash (``entry_key``), by construction:
a new preprocessing field is part of every key the moment it exists, so no key can be forgotten and
serve stale features. ``Plan`` holds what a run reads and how it batches (never part of a key: it
changes which entries are read, not what is in them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: an augmentation policy's name in cache keys; change it when the policy's definition changes
POLICY_KEYS = {"none": "none", "report": "rrc+hflip", "strong": "strong-v1"}


#: fields added after entries existed: left out of the key while None, so the entries made before them
#: keep their keys (any value is still in the key: a different key from None's)
_ABSENT_WHEN_NONE = ("adabn",)


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image file into features: every field is part of every feature-cache key."""

    #: the backbone's name and its weights identity (a hash or tag, never just "imagenet")
    backbone: str
    weights: str
    #: eval view: resize the shorter side to ``resize``, centre-crop ``image_size``
    image_size: int
    resize: int
    #: input normalization (the backbone's published statistics); None = [0, 1] pixels
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    #: image decoder (resolved: pil | torchvision)
    decoder: str
    #: where and how the network computes: device type, fp32 | bf16, torch | onnxruntime (resolved)
    device: str
    precision: str
    runtime: str
    #: the model's per-image preprocessing (face alignment identity), None without
    align: str | None
    #: 0 = features of the whole frozen network; N = activations before its last N blocks
    trainable_blocks: int
    #: how the output is stored (float32 features; reduced precision for boundary activations)
    dtype: str
    #: the render applied to the pixels before anything else, face detection included (issue 17):
    #: None = photographs; a style's identity (``styles.tag``); or, for a training bank, a style drawn
    #: per image from several (``styles.drawn``)
    style: str | None = None
    #: test-time AdaBN (``adabn: true``): None = the backbone's own BatchNorm statistics; else how they were
    #: re-estimated on the entry's own images (the key's ``images``) before its features: ``batch=N``,
    #: cumulative averages over train-mode passes of their eval views in batches of N
    #: (``benchmark.features.adabn``)
    adabn: str | None = None

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in _ABSENT_WHEN_NONE and v is None)}

    def replace(self, **changes) -> Preprocessing:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class View:
    """Which view of an image: the eval view (``mirrored``: its horizontal mirror, what ``tta: flip``
    averages with it), or number ``number`` of an augmentation policy's bank (its pixels depend only on
    the image, the policy and the number: shared by all seeds and runs)."""

    policy: str = "none"
    number: int | None = None
    mirrored: bool = False

    def key(self) -> dict:
        if self.number is None:  # the plain eval view's key is as before mirrors existed: its entries stay valid
            return {"view": "eval", **({"mirror": "horizontal"} if self.mirrored else {})}
        return {"view": self.number, "augment": POLICY_KEYS[self.policy]}

    def __str__(self) -> str:
        if self.number is None:
            return "mirrored eval view" if self.mirrored else "eval view"
        return f"{self.policy} view {self.number}"


EVAL = View()
MIRRORED = View(mirrored=True)


def entry_key(prep: Preprocessing, view: View, images: str) -> dict:
    """The cache key of ``view`` of the images with content hash ``images``."""
    return {**prep.key(), **view.key(), "images": images}


@dataclass(frozen=True)
class Plan:
    """What a run reads from the features and how it batches (no effect on any feature)."""

    #: the training views' augmentation policy (none: training reads the eval view, unless train_styles)
    augment: str
    epochs: int
    #: augmented views per training image in the bank (>= epochs is used for seeds > 0)
    aug_views: int
    seed: int
    batch_size: int
    samples_per_class: int
    #: False for ``embedding=backbone``: no training, only the eval view is read
    trains: bool
    #: images per forward pass and decoding threads
    eval_batch_size: int
    workers: int
    #: shown by ``cache ls`` beside each entry
    dataset: str
    #: style augmentation: the styles (``styles.tag``; None = photo) each bank view of each training
    #: image is drawn from; () = none
    train_styles: tuple[str | None, ...] = ()
    #: test-time flip (``tta: flip``): eval features are the mean of the eval view's and its mirror's
    flip: bool = False
    #: each identity's samples_per_class images of a batch split between photos and renders
    domain_balance: bool = False
    #: test-time AdaBN: each evaluated side (a split's queries, its gallery) is read from entries whose
    #: BatchNorm statistics were re-estimated on its own images (``Preprocessing.adabn``)
    adabn: bool = False

    def eval_views(self) -> tuple[View, ...]:
        """The eval views every evaluated image is read in (their features are averaged)."""
        return (EVAL, MIRRORED) if self.flip else (EVAL,)

    def banked(self) -> bool:
        """Training reads bank views (augmentation or style randomization), not the eval view."""
        return self.trains and (self.augment != "none" or bool(self.train_styles))

    def bank_size(self) -> int:
        return max(self.aug_views, self.epochs)
