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

Styles (cross-domain retrieval): an image evaluated in a style (the ``style`` column of the run's
table: the gallery side of val/test, or the queries with ``query_style``) is rendered before
anything else, face detection included, and its eval view is a cache entry of its own whose
``Preprocessing.style`` names the style; ``Plan.train_styles`` renders every bank view of every
training image in a style drawn for it. The photo eval view of every image stays the shared entry.

Test-time AdaBN (``Plan.adabn``, config ``adabn: true``): each evaluated side (a split's queries, its
gallery) is read from entries of its own, extracted by a copy of the network whose BatchNorm statistics
were re-estimated on that side's images (``benchmark.features.adabn``); training reads the plain entry.

Test-time flip (``Plan.flip``, config ``tta: flip``): eval features are the mean over the eval view
and its mirror (``View.mirrored``), the mirror an entry of its own beside the plain one. An ensemble
(``EnsembleEngine``) is one engine per member, their eval features fused (``fuse``).

Both yield the same batches in the same order (``batch_order``), so with augmentation off they
train the same head up to float rounding.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import replace
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmark.config import ConfigError
from benchmark.data import DOMAIN_SIDES
from benchmark.features import adabn, runtime, styles
from benchmark.features.augment import random_resized_crop_flip, uniforms
from benchmark.features.cache import FeatureCache
from benchmark.features.extract import Output, content_hash, decoded_batches, extract_views, forward, output_shape
from benchmark.features.spec import EVAL, Plan, Preprocessing, View, entry_key
from benchmark.features.views import as_seen, decode, eval_view, train_view, view_seed
from benchmark.models.backbones import FrozenBackbone
from benchmark.training.sampling import batch_order


def train_styles_of(tags: tuple[str | None, ...], view: int, rows: np.ndarray) -> np.ndarray:
    """The style (tag) of bank view ``view`` of training items ``rows``: drawn uniformly from ``tags``
    by a pure function of (view, item), so every run and seed shares the bank."""
    u = uniforms(np.asarray(view_seed(0, view, np.asarray(rows, dtype=np.int64))), 24)[:, -1]  # crops use 23
    pick = np.minimum((u * len(tags)).astype(int), len(tags) - 1)
    return np.array(list(tags), dtype=object)[pick]


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
        #: the style (``styles.tag``) each image is evaluated in: the ``style`` column that
        #: ``pipeline.prepare`` sets for query -> gallery retrieval (gallery side rendered), else photos
        self.eval_styles = np.array([s if isinstance(s, str) else None for s in df["style"]], dtype=object) \
            if "style" in df else np.full(len(df), None, dtype=object)
        self._faces: dict[str | None, torch.Tensor] = {}

    def styled_rows(self, style: str | None) -> np.ndarray:
        """Images some view renders in ``style`` (evaluation, or the training bank's ``train_styles``)."""
        rows = np.array([s == style for s in self.eval_styles], dtype=bool)
        if style in self.plan.train_styles and self.plan.banked():
            size = self.plan.epochs if self.plan.seed == 0 else self.plan.bank_size()
            drawn = np.stack([train_styles_of(self.plan.train_styles, n, np.arange(len(self.train_idx)))
                              for n in range(size)])
            rows[self.train_idx[(drawn == style).any(0)]] = True
        return np.flatnonzero(rows)

    def _face_key(self, style: str | None) -> tuple[dict, np.ndarray]:
        """Cache key of the face detections in ``style`` and the images they cover."""
        idx = np.arange(len(self.paths)) if style is None else self.styled_rows(style)
        key = {"align": self.frozen.aligner.identity, "images": content_hash([self.paths[i] for i in idx])}
        if style is not None:
            key["style"] = style
        return key, idx

    def face_rows(self, style: str | None = None, found: dict[int, np.ndarray] | None = None) -> torch.Tensor | None:
        """The backbone's face detection on every image (``FaceAligner.detect`` rows), from the
        feature cache (key: detector identity + pixels, + the style: the detector sees the rendered
        image; rows of images never rendered in ``style`` are zero); None without alignment.
        ``found``: rows already detected (on the rendered images of a feature pass); only the others
        are decoded and rendered here."""
        aligner = self.frozen.aligner
        if aligner is None:
            return None
        if style not in self._faces:
            t0 = time.perf_counter()
            key, idx = self._face_key(style)
            found = found or {}

            def detect() -> torch.Tensor:
                rest = [i for i in idx if int(i) not in found]
                batches = decoded_batches([self.paths[i] for i in rest], self.prep.decoder, self.plan.eval_batch_size,
                                          self.plan.workers, torch.device("cpu"), style)
                fresh = dict(zip(rest, torch.cat([aligner.detect_all(b) for b in batches]).numpy())) if rest else {}
                return torch.from_numpy(np.stack([found[int(i)] if int(i) in found else fresh[i] for i in idx]))

            entry = self.cache.get_or_compute(key, detect, {"dataset": self.plan.dataset, "kind": "face detections"})
            self.fetch_s += time.perf_counter() - t0
            self.features_s += entry["cost_s"]
            rows = entry["features"]
            if style is not None:
                rows = torch.zeros(len(self.paths), rows.shape[1]).index_copy_(0, torch.as_tensor(idx), rows)
            self._faces[style] = rows
        return self._faces[style]

    def aligned(self):
        """``prepare`` for ``extract_views``: image i in a style -> its aligned face (detected on the
        rendered image); None without alignment. Photos' detections come from the cache (or their own
        pass); a style's missing detections are made on the pass's rendered images (``prepare.found``,
        cached by ``store_faces``), so each image is rendered once."""
        aligner = self.frozen.aligner
        if aligner is None:
            return None
        found: dict[str, dict[int, np.ndarray]] = {}
        train_styles = self.plan.train_styles if self.plan.banked() else ()
        for style in {None, *self.eval_styles, *train_styles}:
            if style is None or self.cache.path(self._face_key(style)[0]).exists():
                self.face_rows(style)
            else:
                found[style] = {}

        def prepare(img: torch.Tensor, i: int, style: str | None) -> torch.Tensor:
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
        """Per evaluated style (by name): how many of its rendered images fell back to the central square."""
        if self.frozen.aligner is None:
            return {}
        return {styles.name_of(s): int((self.face_rows(s)[self.styled_rows(s), 0] == 0).sum())
                for s in sorted(set(self.eval_styles) - {None})}

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.df["split"].to_numpy() == split)

    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.class_of[self.df["label"].to_numpy()[self.train_idx]])

    def renders(self, idx: np.ndarray) -> np.ndarray:
        """Whether the images ``idx`` (rows of the table) are renders, by the ``domains`` manifest:
        domain-balanced batches and cross-domain positives."""
        return self.df["domain"].to_numpy()[idx] == DOMAIN_SIDES["render"]

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """Training-item indices of each batch of ``epoch``: the same in both engines."""
        return batch_order(len(self.train_idx), self.plan.batch_size, self.plan.seed, epoch,
                           self.train_labels().numpy(), self.plan.samples_per_class,
                           self.renders(self.train_idx) if self.plan.domain_balance else None)

    def n_batches(self) -> int:
        return len(self.batches(0))

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def eval_features(self, split: str) -> torch.Tensor:
        raise NotImplementedError

    def cache_files(self) -> list[str]:
        """The feature-cache files this run reads (none: the reference engine computes every feature)."""
        return []

    def _over_views(self, features_of) -> torch.Tensor:
        """Test-time augmentation: the mean of ``features_of(view)`` over the plan's eval views."""
        return torch.stack([features_of(v) for v in self.plan.eval_views()]).mean(0)


class CachedEngine(Engine):
    def __init__(self, prep, plan, frozen, trainable_units, df, device, cache):
        super().__init__(prep, plan, frozen, trainable_units, df, device, cache)
        self.net = runtime.network(frozen, prep, cache.root)
        self._views: dict[int, torch.Tensor] = {}
        #: per eval view: its features of every image as photos, and of the images evaluated in each style
        self._evals: dict[tuple[View, str | None], torch.Tensor] = {}
        self._eval: dict[View, torch.Tensor] = {}
        self._labels = self.train_labels().to(device)
        self._space_checked = not prep.trainable_blocks
        #: ``adabn``: each evaluated side's rows, read from entries adapted to it (``benchmark.features.adabn``)
        self.adapt_groups = adabn.groups(df) if plan.adabn else {}
        self._adapted: dict[tuple[View, str], torch.Tensor] = {}

    def _entry(self, entry: tuple[View, str | None]) -> tuple[dict, Output]:
        """Cache key and pass output of ``(view, style)``: an eval view (or its mirror) of every image as
        photos (shared by all splits and protocols), of the images evaluated in ``style``, or a
        bank view (the training images; its pixels depend only on the view, the image and the styles
        it draws from, so the bank is shared by all seeds and runs). The style is a field of the
        entry's ``Preprocessing``, so it is in the key by construction."""
        view, style = entry
        prep = self.prep.replace(style=style)

        def eval_pixels(images, rows):
            return as_seen(torch.stack([eval_view(i, prep) for i in images]), view)

        if view.number is None:
            if style is None:
                return (entry_key(prep, view, content_hash(self.paths)),
                        Output(np.arange(len(self.paths)), eval_pixels, str(view)))
            index = self.styled_rows(style)
            return (entry_key(prep, view, content_hash([self.paths[i] for i in index])),
                    Output(index, eval_pixels, f"{styles.name_of(style)} {view}",
                           np.full(len(index), style, dtype=object)))
        train_paths = [self.paths[i] for i in self.train_idx]
        n = view.number
        if view.policy == "none":  # style randomization alone: the eval view of each rendered image
            pixels = eval_pixels
        elif view.policy == "report":  # vectorized per batch, same distribution (benchmark.features.augment)
            def pixels(images, rows):
                return random_resized_crop_flip(images, view_seed(0, n, rows), prep.image_size)
        else:  # the policy of views.py, one seeded view per image
            def pixels(images, rows):
                return torch.stack([train_view(img, prep, view.policy, view_seed(0, n, int(r)))
                                    for img, r in zip(images, rows)])
        drawn = None
        if self.plan.train_styles:  # domain randomization: each view of each image in a style drawn for it
            drawn = train_styles_of(self.plan.train_styles, n, np.arange(len(self.train_idx)))
        return entry_key(prep, view, content_hash(train_paths)), Output(self.train_idx, pixels, str(view), drawn)

    def cache_files(self) -> list[str]:
        adapted = [self._adapted_entry(v, g)[0] for g in self.adapt_groups for v in self.plan.eval_views()]
        return [self.cache.path(key).name for key in [*(k for k, _ in map(self._entry, self._needed())), *adapted]]

    def _adapted_entry(self, view: View, group: str) -> tuple[dict, Output]:
        """Cache key and pass output of eval view ``view`` of the images of adaptation domain ``group`` with
        BatchNorm statistics re-estimated on them (``adabn``): the key's images are exactly those images."""
        rows = self.adapt_groups[group]
        tags = set(self.eval_styles[rows])
        if len(tags) != 1:
            raise RuntimeError(f"adabn: {group} mixes styles {sorted(map(str, tags))}")
        style = tags.pop()
        prep = self.prep.replace(style=style, adabn=adabn.identity())

        def eval_pixels(images, _rows):
            return as_seen(torch.stack([eval_view(i, prep) for i in images]), view)

        return (entry_key(prep, view, content_hash([self.paths[i] for i in rows])),
                Output(rows, eval_pixels, f"adabn {group} {view}", np.full(len(rows), style, dtype=object)))

    def _load_adapted(self, group: str) -> None:
        """The eval views of ``group`` adapted to it, from the cache, or made by a statistics pass over its
        images' eval views (BatchNorm train mode, on a copy of the network) and then an eval pass."""
        views = self.plan.eval_views()
        made = [self._adapted_entry(v, group) for v in views]
        t0 = time.perf_counter()
        prepared = []

        def compute(missing: list[int]) -> list[torch.Tensor]:
            prepared.append(self.aligned())
            net = adabn.Adapting(self.frozen.net)
            desc = f"{self.prep.backbone} ({self.prep.runtime})"
            statistics = replace(self._adapted_entry(EVAL, group)[1], name=f"adabn {group} statistics")
            extract_views(net, self.paths, [statistics], self.prep, adabn.BATCH, self.plan.workers, desc,
                          prepared[0])
            return extract_views(net.done(), self.paths, [made[i][1] for i in missing], self.prep,
                                 self.plan.eval_batch_size, self.plan.workers, desc, prepared[0])

        got = self.cache.get_or_compute_many([key for key, _ in made], compute,
                                             {"dataset": self.plan.dataset, "kind": f"adabn {group}"})
        for prepare in prepared:
            self.store_faces(prepare)
        self.fetch_s += time.perf_counter() - t0
        for view, entry in zip(views, got):
            self.features_s += entry["cost_s"]
            self._adapted[view, group] = entry["features"].to(self.device)

    def adapted_rows(self, view: View, idx: np.ndarray) -> torch.Tensor:
        """Features of eval view ``view`` of the images ``idx``, each adaptation domain's with its own
        BatchNorm statistics (``adabn``); images of no domain (training) with the backbone's."""
        out, done = None, np.zeros(len(idx), dtype=bool)
        for group, rows in self.adapt_groups.items():
            where = np.flatnonzero(np.isin(idx, rows))
            if not len(where):
                continue
            if (view, group) not in self._adapted:
                self._load_adapted(group)
            feats = self._adapted[view, group][torch.as_tensor(np.searchsorted(rows, idx[where]), device=self.device)]
            if out is None:
                out = torch.empty(len(idx), *feats.shape[1:], dtype=feats.dtype, device=self.device)
            out[torch.as_tensor(where, device=self.device)] = feats
            done[where] = True
        if not done.all():
            rest = np.flatnonzero(~done)
            feats = self.eval_all(view)[torch.as_tensor(idx[rest], device=self.device)]
            if out is None:
                out = torch.empty(len(idx), *feats.shape[1:], dtype=feats.dtype, device=self.device)
            out[torch.as_tensor(rest, device=self.device)] = feats
        return out

    def _load(self, entries: list[tuple[View, str | None]]) -> None:
        """Read ``entries`` from the cache; what is missing comes from ONE pass over the images."""
        made = [self._entry(e) for e in entries]
        if not self._space_checked:
            self._check_space()
        t0 = time.perf_counter()
        prepared = []

        def compute(missing: list[int]) -> list[torch.Tensor]:
            prepared.append(self.aligned())
            return extract_views(self.net, self.paths, [made[i][1] for i in missing], self.prep,
                                 self.plan.eval_batch_size, self.plan.workers,
                                 f"{self.prep.backbone} ({self.prep.runtime})", prepared[0])

        got = self.cache.get_or_compute_many([key for key, _ in made], compute, {"dataset": self.plan.dataset})
        for prepare in prepared:
            self.store_faces(prepare)
        self.fetch_s += time.perf_counter() - t0
        for (view, style), entry in zip(entries, got):
            self.features_s += entry["cost_s"]
            features = entry["features"].to(self.device)
            if view.number is None:
                self._evals[view, style] = features
            else:
                self._views[view.number] = features

    def _bank(self, number: int) -> tuple[View, str | None]:
        return View(self.plan.augment, number), styles.drawn(self.plan.train_styles) if self.plan.train_styles else None

    def _needed(self) -> list[tuple[View, str | None]]:
        """Everything this run will read: the eval views (the mirror too for ``tta: flip``; one each per
        evaluated style), and the bank views its epochs show (none without augmentation or style
        randomization, or without training: ``embedding=backbone`` reads only the eval views)."""
        evals = [(v, s) for v in self.plan.eval_views() for s in (None, *sorted(set(self.eval_styles) - {None}))]
        if self.plan.adabn:  # evaluated sides come from adapted entries; only training reads the photos' entry
            evals = [(v, None) for v in self.plan.eval_views()] if self.plan.trains else []
        if not self.plan.banked():
            return evals
        size = self.plan.epochs if self.plan.seed == 0 else self.plan.bank_size()
        return [*evals, *map(self._bank, range(size))]

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

    def _missing(self, entries: list[tuple[View, str | None]]) -> list[tuple[View, str | None]]:
        return [(v, s) for v, s in entries
                if ((v, s) not in self._evals if v.number is None else v.number not in self._views)]

    def eval_all(self, view: View = EVAL) -> torch.Tensor:
        """Features of eval view ``view`` (or its mirror) of every image, each in its evaluation style
        (``eval_styles``)."""
        if view not in self._eval:
            needed = self._needed()
            self._load(self._missing(needed if (view, None) in needed else [(view, None)]))
            photos = out = self._evals[view, None]
            for style in [] if self.plan.adabn else sorted(set(self.eval_styles) - {None}):
                if out is photos:
                    out = out.clone()
                out[torch.as_tensor(self.styled_rows(style), device=self.device)] = self._evals[view, style]
            self._eval[view] = out
        return self._eval[view]

    def bank_view(self, number: int) -> torch.Tensor:
        if number not in self._views:
            needed = self._needed()
            entry = self._bank(number)
            self._load(self._missing(needed if entry in needed else [entry]))
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
        if not self.plan.banked():
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
        if self.adapt_groups:
            return self._over_views(lambda view: self.adapted_rows(view, self.split_index(split)))
        idx = torch.as_tensor(self.split_index(split), device=self.device)
        return self._over_views(lambda view: self.eval_all(view)[idx])


class _Images(Dataset):
    """Decode + view per item, in DataLoader workers (the report's per-epoch data path)."""

    def __init__(self, paths: list[str], prep: Preprocessing, augment: str | None, aligner=None, faces=None,
                 styles_of: np.ndarray | None = None):
        self.paths, self.prep, self.augment, self.aligner, self.faces = paths, prep, augment, aligner, faces
        self.styles = styles_of

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = decode(self.paths[i])
        if self.styles is not None:  # rendered before anything else, as in the cached engine's pass
            img = styles.render_tag(img, self.styles[i])
        if self.aligner is not None:
            img = self.aligner.warp(img, self.faces[i])
        return train_view(img, self.prep, self.augment) if self.augment else eval_view(img, self.prep)


class ReferenceEngine(Engine):
    def _spent(self, t0: float) -> None:
        self.features_s += time.perf_counter() - t0
        self.fetch_s = self.features_s

    def _loader(self, idx, train: bool, batches, epoch: int) -> DataLoader:
        """Epoch ``epoch``'s items ``idx``, each rendered in its style: the evaluated one, or for training
        the style ``train_styles`` draws for the epoch (the cached engine's bank view ``epoch`` at seed 0)."""
        if train:
            tags = train_styles_of(self.plan.train_styles, epoch, np.arange(len(idx))) if self.plan.train_styles \
                else None
        else:
            tags = self.eval_styles[idx]
        rows = None
        if self.frozen.aligner is not None:  # each item's detection, made on its rendered pixels
            rows = self.face_rows()[idx] if tags is None else torch.stack(
                [self.face_rows(t)[i] for t, i in zip(tags, idx)])
        images = _Images([self.paths[i] for i in idx], self.prep, self.plan.augment if train else None,
                         self.frozen.aligner, rows, tags)
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
        out = torch.cat([self._over_views(lambda view: self._features(as_seen(b, view)))
                         for b in self._loader(idx, False, batches, 0)])
        self._spent(t0)
        return out


ENGINES = {"cached": CachedEngine, "reference": ReferenceEngine}


def fuse(features: list[torch.Tensor], weights) -> torch.Tensor:
    """An ensemble's member features side by side, one row per image: each member's L2-normalized and
    scaled by sqrt(its weight). Normalized again (``embed``) this is ``fusion: concat``'s embedding (its
    cosine is the weighted mean of the members'); ``fusion: minmax`` ranks by each member's block
    (``benchmark.evaluation.fusion``)."""
    return torch.cat([math.sqrt(w) * F.normalize(f.float(), dim=1) for f, w in zip(features, weights)], 1)


class EnsembleEngine:
    """The eval features of an ensemble (``backbone: ensemble``): each member's own engine, hence its own
    cache entries (those of the member's own run with these settings: an ensemble computes nothing beyond
    its members), ``fuse``d. Frozen members only: nothing trains, so only the eval side of ``Engine``."""

    def __init__(self, members: list[Engine], weights):
        self.members, self.weights = members, [float(w) for w in weights]

    @property
    def fetch_s(self) -> float:
        return sum(m.fetch_s for m in self.members)

    @property
    def features_s(self) -> float:
        return sum(m.features_s for m in self.members)

    def split_index(self, split: str) -> np.ndarray:
        return self.members[0].split_index(split)

    def eval_features(self, split: str) -> torch.Tensor:
        return fuse([m.eval_features(split) for m in self.members], self.weights)

    def no_face(self) -> int | None:
        """The face detections of the first member that aligns faces (None: none does)."""
        return next((n for n in (m.no_face() for m in self.members) if n is not None), None)

    def no_face_styled(self) -> dict[str, int]:
        return next((n for n in (m.no_face_styled() for m in self.members) if n), {})

    def describe(self) -> list[dict]:
        """Each member as the run's record lists it: backbone, weight, feature size, the preprocessing its
        features are keyed by and the feature-cache files they are read from."""
        return [{"backbone": m.prep.backbone, "weight": w, "dim": m.frozen.spec.dim, "preprocessing": m.prep.key(),
                 "features": m.cache_files()} for m, w in zip(self.members, self.weights)]


def image_features(paths: list[str], prep: Preprocessing, plan: Plan, frozen: FrozenBackbone, device: torch.device,
                   cache: FeatureCache, style: str | None = None) -> tuple[torch.Tensor, float]:
    """Eval features (the plan's eval views averaged: ``tta``) of any list of images (a submission's query
    or gallery folder) through the same pass, alignment and cache entries as a run's images, rendered in
    ``style`` first (a ``styles.tag``: ``query_style``); (features in ``paths`` order, what they cost)."""
    df = pd.DataFrame({"path": list(map(str, paths)), "identity": "?", "label": 0, "split": "eval"})
    if style is not None:
        df["style"] = style
    engine = CachedEngine(prep, replace(plan, trains=False, dataset="image folder"), frozen, [], df, device, cache)
    return engine.eval_features("eval"), engine.features_s
