"""The pipeline's front half, shared by ``benchmark run`` and ``benchmark submit``: a config's data,
split, device, frozen backbone and feature engine (``prepare``), and the feature values they decide
(``feature_spec``, ``style_tag``). Both commands build their inputs here, so they cannot drift. An
ensemble's members are each built as the config of that backbone alone (``member_configs``), so each
reads the feature-cache entries its own run would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from benchmark import splits
from benchmark.config import ENSEMBLE, FIELDS, Config, ConfigError
from benchmark.data import DATA_KEYS, load_dataset
from benchmark.data.check import check_images
from benchmark.features import decoders, runtime, styles
from benchmark.features.cache import FeatureCache
from benchmark.evaluation.fusion import member_weights
from benchmark.features.engines import ENGINES, EnsembleEngine, Engine
from benchmark.features.spec import Plan, Preprocessing
from benchmark.models.backbones import FrozenBackbone, adapt, build_backbone, check_adabn, check_backbone, split
from benchmark.training import losses


def resolve_device(cfg: Config) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


@dataclass
class Prepared:
    """What a run has built before training: reused by ``submit`` to embed new images."""

    cfg: Config
    df: pd.DataFrame
    device: torch.device
    engine: Engine | EnsembleEngine
    #: images left out by ``on_bad_image: skip`` (``{path, reason}``)
    skipped_images: list[dict] = field(default_factory=list)
    #: what a reader of the run must know (unscorable splits, divergence ...): status.json and the log
    warnings: list[str] = field(default_factory=list)
    #: the epoch after which a sweep's early termination stopped training (None: not stopped)
    stopped_epoch: int | None = None
    #: each test item's own score as a query (query -> gallery runs; ``evaluation.split_evaluation``)
    test_query_scores: np.ndarray | None = None


_BACKBONES: dict[tuple, FrozenBackbone] = {}


def frozen_backbone(cfg: Config, device: torch.device) -> FrozenBackbone:
    """Built once per process and reused by the runs of a sweep (frozen, so sharing is safe)."""
    key = (cfg.backbone, cfg.weights, cfg.input_mean, cfg.input_std, cfg.align, str(device))
    if key not in _BACKBONES:
        if len(_BACKBONES) >= 4:
            _BACKBONES.pop(next(iter(_BACKBONES)))
        _BACKBONES[key] = build_backbone(cfg).to(device)  # fails fast (e.g. offline weights)
    return _BACKBONES[key]


def precision(cfg: Config, device: torch.device) -> str:
    """fp32 | bf16. ``auto``: bf16 only for the cached engine on CUDA; the reference engine is the
    oracle and stays fp32 on every device unless bf16 is asked for explicitly."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" and cfg.engine == "cached" else "fp32"


def feature_spec(cfg: Config, frozen: FrozenBackbone, device: torch.device,
                 cache: FeatureCache) -> tuple[Preprocessing, Plan]:
    """The features package's two values for ``cfg`` (an adapted config), built here once: what
    decides every feature (its runtime resolved: an ONNX Runtime export is made and verified on first
    use) and what the run reads."""
    spec = frozen.spec
    prep = Preprocessing(
        backbone=cfg.backbone, weights=frozen.weights_id, image_size=cfg.image_size, resize=cfg.resize,
        mean=tuple(spec.mean) if cfg.normalize else None, std=tuple(spec.std) if cfg.normalize else None,
        decoder=decoders.resolve(cfg.decoder, device), device=device.type, precision=precision(cfg, device),
        runtime=spec.runtime, align=frozen.aligner.identity if frozen.aligner is not None else None,
        trainable_blocks=cfg.trainable_blocks, dtype=cfg.boundary_dtype if cfg.trainable_blocks else "float32")
    if cfg.engine == "cached":  # the reference engine is the torch oracle; adabn re-estimates statistics in torch
        prep = prep.replace(runtime=runtime.resolve("torch" if cfg.adabn else cfg.runtime, frozen, prep, cache.root))
    plan = Plan(augment=cfg.augment, epochs=cfg.epochs, aug_views=cfg.aug_views, seed=cfg.seed,
                batch_size=cfg.batch_size, samples_per_class=cfg.samples_per_class,
                trains=cfg.embedding == "head", eval_batch_size=cfg.eval_batch_size, workers=cfg.num_workers,
                dataset=cfg.dataset, train_styles=tuple(style_tag(cfg, s) for s in cfg.train_styles),
                flip=cfg.tta == "flip", domain_balance=cfg.domain_balance, adabn=cfg.adabn)
    return prep, plan


def member_configs(cfg: Config) -> list[Config]:
    """The configs whose backbones make ``cfg``'s features: each ensemble member's (the ensemble's
    settings with that backbone alone, adapted to its input size; a member that aligns faces itself
    keeps its own crop: ``align`` none), else ``cfg`` itself."""
    if cfg.backbone != ENSEMBLE:
        return [cfg]
    alone = {k: FIELDS[k].default for k in ("members", "member_weights", "fusion")}
    return [adapt(cfg.replace(backbone=name, **alone, **({"align": "none"} if check_backbone(name).align else {})))
            for name in cfg.members]


def build_engine(cfg: Config, df: pd.DataFrame, device: torch.device, cache: FeatureCache) -> Engine | EnsembleEngine:
    """The feature engine of ``cfg`` (adapted) over ``df``: its backbone's, or its members' fused."""
    engines = []
    for one in member_configs(cfg):
        frozen, units = split(frozen_backbone(one, device), one.trainable_blocks)
        features, plan = feature_spec(one, frozen, device, cache)
        engines.append(ENGINES[one.engine](features, plan, frozen, units, df, device, cache))
    return EnsembleEngine(engines, member_weights(cfg)) if cfg.backbone == ENSEMBLE else engines[0]


def style_tag(cfg: Config, name: str) -> str | None:
    """The ``Preprocessing.style`` of renders in style ``name`` with the config's ``style_args``
    (checked against the style's declared parameters when the config was made)."""
    return styles.tag(name, cfg.style_args.get(name))


def row_styles(df, cfg: Config) -> list[str | None]:
    """The style (tag) each image is evaluated in: gallery items of val/test in their split's gallery
    style, queries in ``query_style``, everything else (training images, same-domain) as photos."""
    tags = {name: style_tag(cfg, name) for name in {cfg.query_style, *cfg.gallery_styles.values()}}
    side, split = df["side"].to_numpy(), df["split"].to_numpy()
    gallery = cfg.gallery_styles
    return [tags[gallery[sp]] if sd == "gallery" and sp in gallery else tags[cfg.query_style] if sd == "query"
            else None for sd, sp in zip(side, split)]


def check_input(cfg: Config, seen: dict | None = None) -> None:
    """The cheap part of ``preflight``, for a sweep's plan before any of its runs starts: the backbone
    and ensemble members, the loss and miner, and the dataset's files, labels, domains manifest and
    identity counts (``load_dataset``: read once per distinct dataset in ``seen``). No image is
    decoded and no weights loaded (a run's own failure, recorded); warnings are left to the run."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = adapt(cfg)
        losses.check(cfg)
        key = tuple((k, str(getattr(cfg, k))) for k in DATA_KEYS)
        if seen is None or key not in seen:
            load_dataset(cfg)
            if seen is not None:
                seen[key] = True


@dataclass
class Checked:
    """A config's input, checked (``preflight``): what ``prepare`` builds the engine on."""

    cfg: Config
    #: the dataset with its split (and sides), unusable images left out
    df: pd.DataFrame
    device: torch.device
    skipped: list[dict]
    #: ``time.perf_counter()`` when the check began: a run's ``time/total_s`` counts from it
    started: float


def preflight(cfg: Config) -> Checked:
    """Everything that can refuse ``cfg``'s input, cheapest first, before a run writes anything
    (``run.run`` calls it before its record folder and its W&B run exist, so a ConfigError here is one
    line and nothing written): the backbone and ensemble members (``adapt``), the loss and miner, the
    dataset's files and labels with its domains manifest and identity counts (``load_dataset``), the
    device, each member's weights (built here, downloaded when not cached, and kept for the run) and
    ``trainable_blocks``, every image decoded (``check_images``, cached by content) and the split's
    promises (``make_split``). What fails after it, in the work itself, is a run's recorded failure."""
    started = time.perf_counter()
    cfg = adapt(cfg)
    losses.check(cfg)  # the loss and miner build (a miner with loss=ce has no effect) before any feature is computed
    df = load_dataset(cfg)
    device = resolve_device(cfg)
    built = {}
    for one in member_configs(cfg):  # weights this machine lacks, blocks it has not: before any image is decoded
        built[one.backbone] = frozen_backbone(one, device)
        split(built[one.backbone], one.trainable_blocks)
    check_adabn(cfg, built)  # a network without BatchNorm layers (vit_b_16): nothing to re-estimate
    df, skipped = check_images(df, cfg)  # every image decodes, or one error lists them
    df = splits.make_split(df, cfg)
    if "side" in df:
        df["style"] = pd.Series(row_styles(df, cfg), index=df.index, dtype=object)
    return Checked(cfg, df, device, skipped, started)


def prepare(cfg: Config, checked: Checked | None = None) -> Prepared:
    """Data, split, device and engine of ``cfg``, its input size set to what the backbone requires;
    ``checked``: its ``preflight``, when the caller ran it already."""
    checked = checked or preflight(cfg)
    cfg, df, device, skipped = checked.cfg, checked.df, checked.device, checked.skipped
    prep = Prepared(cfg, df, device, build_engine(cfg, df, device, FeatureCache(cfg.cache_dir)), skipped)
    if skipped:
        prep.warnings.append(f"{len(skipped)} unreadable image(s) skipped (on_bad_image=skip), e.g. "
                             f"{skipped[0]['path']}: {skipped[0]['reason']}")
    if "side" in df:
        for name in ("val", "test"):
            queries_only, _ = splits.one_sided(df, name)
            if queries_only:
                n = int((df["identity"].isin(queries_only) & (df["split"] == name) & (df["side"] == "query")).sum())
                prep.warnings.append(f"{name}: {len(queries_only)} identities have queries but no gallery item, "
                                     f"their {n} queries are left out: {', '.join(queries_only[:10])}"
                                     + (" ..." if len(queries_only) > 10 else ""))
    return prep


