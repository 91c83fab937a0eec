"""Two engines behind one interface: where the frozen-backbone features of a run come from.

reference: the report's way and the correctness oracle: every epoch decodes, augments and pushes
    the images through the backbone (fp32); validation features are recomputed every epoch.
cached (default): features computed once into the on-disk feature cache, shared by all runs;
    augmentation becomes a bank of views drawn from the same distribution as online augmentation
    (seed 0: epoch e trains on view e of each training image; other seeds: a per-image
    permutation of the bank's ``aug_views`` views), eval features once per backbone and
    preprocessing. Whatever a run needs and the cache lacks comes from one streaming pass over
    the images (``extract.extract_views``), in the resolved ``runtime`` (torch, or the verified ONNX
    Runtime export). Head training then runs on the cached features on the device.

Engines take the run's ``Preprocessing`` (what decides every feature: the cache key is made of it)
and ``Plan`` (what the run reads), never the whole config.

With ``trainable_blocks`` > 0 the backbone is split at the freeze boundary (``backbones.split``):
"features" are then the frozen part's boundary activations, which the cached engine stores in
``boundary_dtype`` (reduced precision: the dtype is in the cache key) after checking that the disk
holds them, and training runs the trainable blocks + head on them. The reference engine still runs
the full network every step (frozen part in fp32, then the trainable blocks).

Both yield the same batches in the same order (``batch_order``), so with augmentation off they
train the same head up to float rounding.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmark.config import ConfigError
from benchmark.features import runtime
from benchmark.features.augment import random_resized_crop_flip
from benchmark.features.cache import FeatureCache
from benchmark.features.extract import Output, content_hash, decoded_batches, extract_views, forward, output_shape
from benchmark.features.spec import EVAL, Plan, Preprocessing, View, entry_key
from benchmark.features.views import decode, eval_view, train_view, view_seed
from benchmark.models.backbones import FrozenBackbone
from benchmark.training.sampling import batch_order


class Engine:
    """Features for one run: ``train_batches(epoch)`` and ``eval_features(split)``.

    ``frozen`` computes the engine's features (the whole backbone, or its part before the freeze
    boundary) and ``trainable_units`` are the backbone units after the boundary (shared: ``fit``
    trains a copy). ``features_s``: the cost of the features this run uses (for cached ones, what
    computing them took when they were created), so that cost-based comparisons stay honest.
    """

    def __init__(self, prep: Preprocessing, plan: Plan, frozen: FrozenBackbone, trainable_units: list[nn.Module],
                 df: pd.DataFrame, device: torch.device, cache: FeatureCache):
        self.prep, self.plan, self.df, self.device, self.cache = prep, plan, df, device, cache
        self.frozen, self.trainable_units = frozen, trainable_units
        self.train_idx = np.flatnonzero(df["split"].to_numpy() == "train")
        classes = np.unique(df["label"].to_numpy()[self.train_idx])
        #: global label -> training class index (-1 for identities never trained on)
        self.class_of = np.full(df["label"].max() + 1, -1)
        self.class_of[classes] = np.arange(len(classes))
        self.n_classes = len(classes)
        self.features_s = 0.0
        #: time this run itself spent obtaining features (part of its wall time)
        self.fetch_s = 0.0
        self.paths = df["path"].tolist()
        self._faces: torch.Tensor | None = None

    def face_rows(self) -> torch.Tensor | None:
        """The backbone's face detection on every image (``FaceAligner.detect`` rows), from the
        feature cache (key: detector identity + pixels); None for backbones without alignment."""
        aligner = self.frozen.aligner
        if aligner is None:
            return None
        if self._faces is None:
            t0 = time.perf_counter()
            key = {"align": aligner.identity, "images": content_hash(self.paths)}
            batches = decoded_batches(self.paths, self.prep.decoder, self.plan.eval_batch_size, self.plan.workers,
                                      torch.device("cpu"))
            entry = self.cache.get_or_compute(key, lambda: torch.cat([aligner.detect_all(images) for images in batches]),
                                              {"dataset": self.plan.dataset, "kind": "face detections"})
            self.fetch_s += time.perf_counter() - t0
            self.features_s += entry["cost_s"]
            self._faces = entry["features"]
        return self._faces

    def aligned(self):
        """``prepare`` for ``extract_views``: image i -> its aligned face; None without alignment."""
        rows = self.face_rows()
        if rows is None:
            return None
        return lambda img, i: self.frozen.aligner.warp(img, rows[i])

    def no_face(self) -> int | None:
        """How many images of the dataset fell back to the central square (no face detected)."""
        rows = self.face_rows()
        return None if rows is None else int((rows[:, 0] == 0).sum())

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.df["split"].to_numpy() == split)

    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.class_of[self.df["label"].to_numpy()[self.train_idx]])

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """Training-item indices of each batch of ``epoch``: the same in both engines."""
        return batch_order(len(self.train_idx), self.plan.batch_size, self.plan.seed, epoch,
                           self.train_labels().numpy(), self.plan.samples_per_class)

    def n_batches(self) -> int:
        return len(self.batches(0))

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def eval_features(self, split: str) -> torch.Tensor:
        raise NotImplementedError


class CachedEngine(Engine):
    def __init__(self, prep, plan, frozen, trainable_units, df, device, cache):
        super().__init__(prep, plan, frozen, trainable_units, df, device, cache)
        self.net = runtime.network(frozen, prep, cache.root)
        self._views: dict[int, torch.Tensor] = {}
        self._eval: torch.Tensor | None = None
        self._labels = self.train_labels().to(device)
        self._space_checked = not prep.trainable_blocks

    def _entry(self, view: View) -> tuple[dict, Output]:
        """Cache key and pass output of the eval view (every image of the dataset, shared by all
        splits and protocols) or of a bank view (the training images; its pixels depend only on the
        view and the image, so the bank is shared by all seeds and runs)."""
        prep = self.prep
        if view == EVAL:
            return (entry_key(prep, view, content_hash(self.paths)),
                    Output(np.arange(len(self.paths)), lambda images, rows: torch.stack([eval_view(i, prep) for i in images])))
        train_paths = [self.paths[i] for i in self.train_idx]
        n = view.number
        if view.policy == "report":  # vectorized per batch, same distribution (benchmark.features.augment)
            def pixels(images, rows):
                return random_resized_crop_flip(images, view_seed(0, n, rows), prep.image_size)
        else:  # the policy of views.py, one seeded view per image
            def pixels(images, rows):
                return torch.stack([train_view(img, prep, view.policy, view_seed(0, n, int(r)))
                                    for img, r in zip(images, rows)])
        return entry_key(prep, view, content_hash(train_paths)), Output(self.train_idx, pixels, str(view))

    def _load(self, views: list[View]) -> None:
        """Read ``views`` from the cache; what is missing comes from ONE pass over the images."""
        entries = [self._entry(v) for v in views]
        if not self._space_checked:
            self._check_space()
        t0 = time.perf_counter()
        got = self.cache.get_or_compute_many([key for key, _ in entries], lambda missing: extract_views(
            self.net, self.paths, [entries[i][1] for i in missing], self.prep, self.plan.eval_batch_size,
            self.plan.workers, f"{self.prep.backbone} ({self.prep.runtime})", self.aligned()),
            {"dataset": self.plan.dataset})
        self.fetch_s += time.perf_counter() - t0
        for view, entry in zip(views, got):
            self.features_s += entry["cost_s"]
            features = entry["features"].to(self.device)
            if view == EVAL:
                self._eval = features
            else:
                self._views[view.number] = features

    def _bank(self, number: int) -> View:
        return View(self.plan.augment, number)

    def _needed(self) -> list[View]:
        """Everything this run will read: the eval view, and the bank views its epochs show (none
        without augmentation or without training: ``embedding=backbone`` reads only the eval view)."""
        if self.plan.augment == "none" or not self.plan.trains:
            return [EVAL]
        size = self.plan.epochs if self.plan.seed == 0 else self.plan.bank_size()
        return [EVAL, *map(self._bank, range(size))]

    def _check_space(self) -> None:
        """Print what the boundary cache of this run needs and refuse, with the fix, when the entries
        still missing would not fit the cache's free disk space."""
        self._space_checked = True
        shape = output_shape(self.net, self.prep)
        per_image = int(np.prod(shape)) * getattr(torch, self.prep.dtype).itemsize
        needed = [(key, len(out.index)) for key, out in map(self._entry, self._needed())]
        total = sum(n for _, n in needed) * per_image
        missing = sum(n for key, n in needed if not self.cache.path(key).exists()) * per_image
        self.cache.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.cache.root).free

        def size(n: float) -> str:  # in the unit that shows the number (never "0.00 GB")
            unit, scale = next(((u, v) for u, v in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if n >= v), ("bytes", 1))
            return f"{n / scale:.3g} {unit}"

        print(f"boundary cache: {self.prep.backbone} trainable_blocks={self.prep.trainable_blocks}, activations "
              f"{list(shape)} {self.prep.dtype} = {size(per_image)}/image; this run uses "
              f"{size(total)} ({len(needed)} entries), {size(missing)} still to write in "
              f"{self.cache.root} ({size(free)} free)", flush=True)
        if missing > free:
            raise ConfigError(
                f"the boundary cache needs {size(missing)} more in {self.cache.root} but only "
                f"{size(free)} are free. Fix: free disk space there, point cache_dir (or "
                "$BENCHMARK_CACHE_DIR) at a larger disk, store less (boundary_dtype=float16, fewer "
                "aug_views or epochs, augment=none, fewer trainable_blocks), or use engine=reference "
                "(no cache, slower)")

    def eval_all(self) -> torch.Tensor:
        if self._eval is None:
            self._load([v for v in self._needed() if v.number not in self._views])
        return self._eval

    def bank_view(self, number: int) -> torch.Tensor:
        if number not in self._views:
            needed = self._needed()
            view = self._bank(number)
            needed = needed if view in needed else [view]
            self._load([v for v in needed if (v.number not in self._views if v != EVAL else self._eval is None)])
        return self._views[number]

    def views_for(self, epoch: int) -> np.ndarray:
        """Which bank view each training image shows in ``epoch``: view ``epoch`` for seed 0; for
        other seeds a per-image permutation of the bank, so seeds see different augmentations
        without computing new ones."""
        n, size = len(self.train_idx), self.plan.bank_size()
        if self.plan.seed == 0:
            return np.full(n, epoch)
        rng = np.random.default_rng([self.plan.seed, 0xA06])
        return np.argsort(rng.random((n, size)), axis=1)[:, epoch]

    def train_features(self, epoch: int) -> torch.Tensor:
        if self.plan.augment == "none":
            return self.eval_all()[torch.as_tensor(self.train_idx, device=self.device)]
        views = self.views_for(epoch)
        unique = np.unique(views)
        if len(unique) == 1:
            return self.bank_view(int(unique[0]))
        out = torch.empty_like(self.bank_view(int(unique[0])))
        for v in unique:
            rows = torch.as_tensor(np.flatnonzero(views == v), device=self.device)
            out[rows] = self.bank_view(int(v))[rows]
        return out

    def train_batches(self, epoch):
        feats = self.train_features(epoch)
        for chunk in self.batches(epoch):
            chunk = chunk.to(self.device)
            yield feats[chunk], self._labels[chunk]

    def eval_features(self, split):
        return self.eval_all()[torch.as_tensor(self.split_index(split), device=self.device)]


class _Images(Dataset):
    """Decode + view per item, in DataLoader workers (the report's per-epoch data path)."""

    def __init__(self, paths: list[str], prep: Preprocessing, augment: str | None, aligner=None, faces=None):
        self.paths, self.prep, self.augment, self.aligner, self.faces = paths, prep, augment, aligner, faces

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = decode(self.paths[i])
        if self.aligner is not None:
            img = self.aligner.warp(img, self.faces[i])
        return train_view(img, self.prep, self.augment) if self.augment else eval_view(img, self.prep)


class ReferenceEngine(Engine):
    def _spent(self, t0: float) -> None:
        self.features_s += time.perf_counter() - t0
        self.fetch_s = self.features_s

    def _loader(self, idx, train: bool, batches, epoch: int) -> DataLoader:
        rows = self.face_rows()
        images = _Images([self.paths[i] for i in idx], self.prep, self.plan.augment if train else None,
                         self.frozen.aligner, None if rows is None else rows[idx])
        return DataLoader(images, batch_sampler=batches,
                          num_workers=self.plan.workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.plan.seed * 1000 + epoch),
                          persistent_workers=False)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return forward(self.frozen, images.to(self.device, non_blocking=True), self.prep)

    def train_batches(self, epoch):
        labels = self.train_labels()
        batches = self.batches(epoch)
        t0 = time.perf_counter()
        for chunk, images in zip(batches, self._loader(self.train_idx, True, batches, epoch)):
            feats = self._features(images)
            self._spent(t0)
            yield feats, labels[chunk].to(self.device)
            t0 = time.perf_counter()

    def eval_features(self, split):
        t0 = time.perf_counter()
        idx = self.split_index(split)
        batches = list(torch.arange(len(idx)).split(self.plan.eval_batch_size))
        out = torch.cat([self._features(b) for b in self._loader(idx, False, batches, 0)])
        self._spent(t0)
        return out


ENGINES = {"cached": CachedEngine, "reference": ReferenceEngine}


def image_features(paths: list[str], prep: Preprocessing, plan: Plan, frozen: FrozenBackbone, device: torch.device,
                   cache: FeatureCache) -> tuple[torch.Tensor, float]:
    """Eval-view features of any list of images (a submission's query or gallery folder) through the
    same pass, alignment and cache entries as a run's images; (features in ``paths`` order, what
    computing them cost)."""
    df = pd.DataFrame({"path": list(map(str, paths)), "identity": "?", "label": 0, "split": "eval"})
    engine = CachedEngine(prep, replace(plan, trains=False, dataset="image folder"), frozen, [], df, device, cache)
    return engine.eval_all(), engine.features_s
