"""Two engines behind one interface: where the frozen-backbone features of a run come from.

reference: the report's way and the correctness oracle: every epoch decodes, augments and pushes
    the images through the backbone (fp32); validation features are recomputed every epoch.
cached (default): features computed once into the on-disk feature cache, shared by all runs;
    augmentation becomes a bank of views drawn from the same distribution as online augmentation
    (seed 0: epoch e trains on view e of each training image; other seeds: a per-image
    permutation of the bank's ``aug_views`` views), eval features once per backbone and
    preprocessing. Whatever a run needs and the cache lacks comes from one streaming pass over
    the images (``features.extract_views``). Head training then runs on the cached features on
    the device.

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
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.features import decoders, styles
from benchmark.features.augment import random_resized_crop_flip, uniforms
from benchmark.features.cache import FeatureCache
from benchmark.config import Config, ConfigError
from benchmark.features.extract import (View, content_hash, decoded_batches, extract_views, forward, output_shape,
                                precision)
from benchmark.models.backbones import FrozenBackbone, split
from benchmark.training.sampling import batch_order
from benchmark.features.views import POLICY_KEYS, decode, eval_view, train_view, view_seed


def row_styles(df: pd.DataFrame, cfg: Config) -> np.ndarray:
    """The style each image is rendered in for evaluation: gallery items of val/test in their split's
    gallery style, queries in ``query_style``, everything else (training images, same-domain) none."""
    out = np.full(len(df), styles.NONE, dtype=object)
    if "side" in df:
        side, split = df["side"].to_numpy(), df["split"].to_numpy()
        for name, style in cfg.gallery_styles.items():
            out[(side == "gallery") & (split == name)] = style
        out[side == "query"] = cfg.query_style
    return out


def train_styles_of(cfg: Config, view: int, rows: np.ndarray) -> np.ndarray:
    """The style of bank view ``view`` of training items ``rows``: drawn uniformly from
    ``train_styles`` by a pure function of (view, item), so every run and seed shares the bank."""
    u = uniforms(np.asarray(view_seed(0, view, np.asarray(rows, dtype=np.int64))), 24)[:, -1]  # crops use 23
    return np.asarray(cfg.train_styles, dtype=object)[np.minimum((u * len(cfg.train_styles)).astype(int),
                                                                 len(cfg.train_styles) - 1)]


class Engine:
    """Features for one run: ``train_batches(epoch)`` and ``eval_features(split)``.

    ``features_s``: the cost of the features this run uses (for cached ones, what computing them
    took when they were created), so that cost-based comparisons stay honest.
    """

    def __init__(self, cfg: Config, backbone: FrozenBackbone, df: pd.DataFrame, device: torch.device):
        self.cfg, self.backbone, self.df, self.device = cfg, backbone, df, device
        #: what computes the engine's features (the whole backbone, or its part before the freeze
        #: boundary) and the backbone units after the boundary (shared: ``fit`` trains a copy)
        self.frozen, self.trainable_units = split(backbone, cfg.trainable_blocks)
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
        #: the style each image is evaluated in (``row_styles``)
        self.eval_styles = row_styles(df, cfg)
        self._faces: dict[str, torch.Tensor] = {}

    def style_identity(self, style: str) -> dict | None:
        return styles.identity(style, self.cfg.style_args.get(style))

    def styled_rows(self, style: str) -> np.ndarray:
        """Images some view renders in ``style`` (evaluation, or the training bank's ``train_styles``)."""
        rows = self.eval_styles == style
        if style in self.cfg.train_styles:
            rows[self.train_idx] = True
        return np.flatnonzero(rows)

    def _face_key(self, style: str) -> tuple[dict, np.ndarray]:
        """Cache key of the face detections in ``style`` and the images they cover."""
        idx = np.arange(len(self.paths)) if style == styles.NONE else self.styled_rows(style)
        key = {"align": self.backbone.aligner.identity, "images": content_hash([self.paths[i] for i in idx])}
        if style != styles.NONE:
            key["style"] = self.style_identity(style)
        return key, idx

    def face_rows(self, style: str = styles.NONE, found: dict[int, np.ndarray] | None = None) -> torch.Tensor | None:
        """The backbone's face detection on every image (``FaceAligner.detect`` rows), from the
        feature cache (key: detector identity + pixels, + the style: the detector sees the rendered
        image; rows of images never rendered in ``style`` are zero); None without alignment.
        ``found``: rows already detected (on the rendered images of a feature pass); only the others
        are decoded and rendered again."""
        aligner = self.backbone.aligner
        if aligner is None:
            return None
        if style not in self._faces:
            t0 = time.perf_counter()
            key, idx = self._face_key(style)
            found = found or {}

            def detect() -> torch.Tensor:
                rest = [i for i in idx if int(i) not in found]
                fresh = [aligner.detect_all(images) for images in
                         decoded_batches([self.paths[i] for i in rest], self.cfg, torch.device("cpu"), style)]
                rows = dict(zip(rest, torch.cat(fresh).numpy())) if rest else {}
                return torch.from_numpy(np.stack([found[int(i)] if int(i) in found else rows[i] for i in idx]))

            entry = FeatureCache(self.cfg.cache_dir).get_or_compute(key, detect, {"dataset": self.cfg.dataset})
            self.fetch_s += time.perf_counter() - t0
            self.features_s += entry["cost_s"]
            rows = torch.zeros(len(self.paths), entry["features"].shape[1])
            rows[torch.as_tensor(idx)] = entry["features"]
            self._faces[style] = rows
        return self._faces[style]

    def aligned(self):
        """``prepare`` for ``extract_views``: image i in a style -> its aligned face (detected on the
        rendered image); None without alignment. Photos' detections come first from the cache (or
        their own pass); a style's missing detections are made on the pass's rendered images
        (``prepare.found``, stored by ``store_faces``): each image is rendered once."""
        aligner = self.backbone.aligner
        if aligner is None:
            return None
        cache = FeatureCache(self.cfg.cache_dir)
        found: dict[str, dict[int, np.ndarray]] = {}
        for style in {styles.NONE, *self.eval_styles, *self.cfg.train_styles}:
            if style == styles.NONE or cache.path(self._face_key(style)[0]).exists():
                self.face_rows(style)
            else:
                found[style] = {}

        def prepare(img: torch.Tensor, i: int, style: str) -> torch.Tensor:
            if style in found:
                found[style][i] = aligner.detect(img)
                return aligner.warp(img, found[style][i])
            return aligner.warp(img, self._faces[style][i])

        prepare.found = found
        return prepare

    def store_faces(self, prepare) -> None:
        """Cache the detections a feature pass made (``aligned``), detecting the images it did not see."""
        for style, found in getattr(prepare, "found", {}).items():
            self.face_rows(style, found)

    def no_face(self) -> int | None:
        """How many images of the dataset fell back to the central square (no face detected)."""
        rows = self.face_rows()
        return None if rows is None else int((rows[:, 0] == 0).sum())

    def no_face_styled(self) -> dict[str, int]:
        """Per evaluated style: how many of its rendered images fell back to the central square."""
        if self.backbone.aligner is None:
            return {}
        return {s: int((self.face_rows(s)[np.flatnonzero(self.eval_styles == s), 0] == 0).sum())
                for s in sorted(set(self.eval_styles) - {styles.NONE})}

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.df["split"].to_numpy() == split)

    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.class_of[self.df["label"].to_numpy()[self.train_idx]])

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """Training-item indices of each batch of ``epoch``: the same in both engines."""
        return batch_order(len(self.train_idx), self.cfg.batch_size, self.cfg.seed, epoch,
                           self.train_labels().numpy(), self.cfg.samples_per_class)

    def n_batches(self) -> int:
        return len(self.batches(0))

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def eval_features(self, split: str) -> torch.Tensor:
        raise NotImplementedError


class CachedEngine(Engine):
    def __init__(self, cfg, backbone, df, device, cache: FeatureCache | None = None):
        super().__init__(cfg, backbone, df, device)
        self.cache = cache or FeatureCache(cfg.cache_dir)
        #: loaded cache entries by name: "eval", "eval:<style>", bank view numbers
        self._got: dict[str | int, torch.Tensor] = {}
        self._eval: torch.Tensor | None = None
        self._labels = self.train_labels().to(device)
        self.base_key = {
            "backbone": cfg.backbone, "weights": backbone.weights_id, "normalize": cfg.normalize,
            "mean": list(backbone.spec.mean) if cfg.normalize else None,
            "std": list(backbone.spec.std) if cfg.normalize else None,
            "resize": cfg.resize, "image_size": cfg.image_size,
            "precision": f"{device.type}-{precision(cfg, device)}",
            "decoder": decoders.resolve(cfg.decoder, device),
        }
        if backbone.aligner is not None:  # face alignment is preprocessing: part of every key
            self.base_key["align"] = backbone.aligner.identity
        self.dtype = torch.float32
        if cfg.trainable_blocks:  # boundary activations instead of features
            self.dtype = getattr(torch, cfg.boundary_dtype)
            self.base_key |= {"trainable_blocks": cfg.trainable_blocks, "dtype": cfg.boundary_dtype}
            self._space_checked = False

    def _entry(self, view: str | int) -> tuple[dict, View]:
        """Cache key and pass output of the eval view (every image of the dataset, shared by all
        splits and protocols), of a styled eval view ``eval:<style>`` (the images evaluated in that
        style) or of bank view ``view`` (the training images; its pixels depend only on the view
        index and the image, so the bank is shared by all seeds and runs)."""
        cfg = self.cfg

        def eval_pixels(images, rows):
            return torch.stack([eval_view(img, cfg) for img in images])

        if view == "eval":
            index = np.arange(len(self.paths))
            return ({**self.base_key, "images": content_hash(self.paths), "view": "eval"}, View(index, eval_pixels))
        if isinstance(view, str):  # eval:<style>
            style = view.split(":", 1)[1]
            index = np.flatnonzero(self.eval_styles == style)
            return ({**self.base_key, "images": content_hash([self.paths[i] for i in index]), "view": "eval",
                     "style": self.style_identity(style)},
                    View(index, eval_pixels, np.full(len(index), style, dtype=object)))
        train_paths = [self.paths[i] for i in self.train_idx]
        if cfg.augment == "none":  # train_styles alone: the eval view of each rendered image
            pixels = eval_pixels
        elif cfg.augment == "report":  # vectorized per batch, same distribution (benchmark.features.augment)
            def pixels(images, rows):
                return random_resized_crop_flip(images, view_seed(0, view, rows), cfg.image_size)
        else:  # the policy of views.py, one seeded view per image
            def pixels(images, rows):
                return torch.stack([train_view(img, cfg, view_seed(0, view, int(r))) for img, r in zip(images, rows)])
        key = {**self.base_key, "images": content_hash(train_paths), "view": view,
               "augment": POLICY_KEYS.get(cfg.augment, cfg.augment)}
        drawn = None
        if cfg.train_styles:  # domain randomization: each view of each image in a style drawn for it
            key["train_styles"] = [self.style_identity(s) or s for s in cfg.train_styles]
            drawn = train_styles_of(cfg, view, np.arange(len(self.train_idx)))
        return key, View(self.train_idx, pixels, drawn)

    def _load(self, names: list[str | int]) -> None:
        """Read ``names`` from the cache; what is missing comes from ONE pass over the images."""
        entries = [self._entry(n) for n in names]
        if self.cfg.trainable_blocks and not self._space_checked:
            self._check_space()
        t0 = time.perf_counter()
        prepared = []

        def compute(missing: list[int]) -> list[torch.Tensor]:
            prepared.append(self.aligned())
            return extract_views(self.frozen, self.paths, [entries[i][1] for i in missing], self.cfg,
                                 f"features {self.cfg.backbone} ({', '.join(str(names[i]) for i in missing)})",
                                 self.dtype, prepared[0])

        got = self.cache.get_or_compute_many([key for key, _ in entries], compute, {"dataset": self.cfg.dataset})
        for prepare in prepared:
            self.store_faces(prepare)
        self.fetch_s += time.perf_counter() - t0
        for name, entry in zip(names, got):
            self.features_s += entry["cost_s"]
            self._got[name] = entry["features"].to(self.device)

    def _banked(self) -> bool:
        """Training reads bank views (augmentation or style randomization), not the eval view."""
        return self.cfg.augment != "none" or bool(self.cfg.train_styles)

    def _needed(self) -> list[str | int]:
        """Everything this run will read: the eval view (and one per evaluated style), and the bank
        views its epochs show (none without augmentation or without training: ``embedding=backbone``
        reads only the eval views)."""
        evals = ["eval", *(f"eval:{s}" for s in sorted(set(self.eval_styles) - {styles.NONE}))]
        if not self._banked() or self.cfg.embedding == "backbone":
            return evals
        size = self.cfg.epochs if self.cfg.seed == 0 else max(self.cfg.aug_views, self.cfg.epochs)
        return [*evals, *range(size)]

    def _check_space(self) -> None:
        """Print what the boundary cache of this run needs and refuse, with the fix, when the entries
        still missing would not fit the cache's free disk space."""
        self._space_checked = True
        shape = output_shape(self.frozen, self.cfg)
        per_image = int(np.prod(shape)) * self.dtype.itemsize
        needed = [(key, len(view.index)) for key, view in map(self._entry, self._needed())]
        total = sum(n for _, n in needed) * per_image
        missing = sum(n for key, n in needed if not self.cache.path(key).exists()) * per_image
        self.cache.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.cache.root).free
        gb = 1e9
        print(f"boundary cache: {self.cfg.backbone} trainable_blocks={self.cfg.trainable_blocks}, activations "
              f"{list(shape)} {self.cfg.boundary_dtype} = {per_image / 1e3:.1f} kB/image; this run uses "
              f"{total / gb:.2f} GB ({len(needed)} entries), {missing / gb:.2f} GB still to write in "
              f"{self.cache.root} ({free / gb:.1f} GB free)", flush=True)
        if missing > free:
            raise ConfigError(
                f"the boundary cache needs {missing / gb:.2f} GB more in {self.cache.root} but only "
                f"{free / gb:.2f} GB are free. Fix: free disk space there, point cache_dir (or "
                "$BENCHMARK_CACHE_DIR) at a larger disk, store less (boundary_dtype=float16, fewer "
                "aug_views or epochs, augment=none, fewer trainable_blocks), or use engine=reference "
                "(no cache, slower)")

    def eval_all(self) -> torch.Tensor:
        """Eval features of every image, each in its evaluation style (``eval_styles``)."""
        if self._eval is None:
            self._load([n for n in self._needed() if n not in self._got])
            self._eval = self._got["eval"]
            for name in (n for n in self._got if isinstance(n, str) and n != "eval"):
                if self._eval is self._got["eval"]:
                    self._eval = self._eval.clone()
                rows = torch.as_tensor(np.flatnonzero(self.eval_styles == name.split(":", 1)[1]), device=self.device)
                self._eval[rows] = self._got[name]
        return self._eval

    def bank_view(self, view: int) -> torch.Tensor:
        if view not in self._got:
            needed = self._needed()
            needed = needed if view in needed else [view]
            self._load([n for n in needed if n not in self._got])
        return self._got[view]

    def views_for(self, epoch: int) -> np.ndarray:
        """Which bank view each training image shows in ``epoch``: view ``epoch`` for seed 0; for
        other seeds a per-image permutation of the bank, so seeds see different augmentations
        without computing new ones."""
        n, size = len(self.train_idx), max(self.cfg.aug_views, self.cfg.epochs)
        if self.cfg.seed == 0:
            return np.full(n, epoch)
        rng = np.random.default_rng([self.cfg.seed, 0xA06])
        return np.argsort(rng.random((n, size)), axis=1)[:, epoch]

    def train_features(self, epoch: int) -> torch.Tensor:
        if not self._banked():
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

    def __init__(self, paths: list[str], cfg: Config, train: bool, aligner=None, faces=None):
        self.paths, self.cfg, self.train, self.aligner, self.faces = paths, cfg, train, aligner, faces

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = decode(self.paths[i])
        if self.aligner is not None:
            img = self.aligner.warp(img, self.faces[i])
        return train_view(img, self.cfg) if self.train else eval_view(img, self.cfg)


class ReferenceEngine(Engine):
    def __init__(self, cfg, backbone, df, device):
        super().__init__(cfg, backbone, df, device)
        if cfg.train_styles or (self.eval_styles != styles.NONE).any():
            raise ConfigError("engine=reference does not render styles (gallery_style, query_style, train_styles); "
                              "use engine=cached")

    def _spent(self, t0: float) -> None:
        self.features_s += time.perf_counter() - t0
        self.fetch_s = self.features_s

    def _loader(self, idx, train: bool, batches, epoch: int) -> DataLoader:
        rows = self.face_rows()
        images = _Images([self.paths[i] for i in idx], self.cfg, train, self.backbone.aligner,
                         None if rows is None else rows[idx])
        return DataLoader(images, batch_sampler=batches,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch),
                          persistent_workers=False)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return forward(self.frozen, images.to(self.device, non_blocking=True), self.cfg)

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
        batches = list(torch.arange(len(idx)).split(self.cfg.eval_batch_size))
        out = torch.cat([self._features(b) for b in self._loader(idx, False, batches, 0)])
        self._spent(t0)
        return out


ENGINES = {"cached": CachedEngine, "reference": ReferenceEngine}
