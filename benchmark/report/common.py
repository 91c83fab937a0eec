"""The report's shared vocabulary: which columns are config and which are metrics, what a
configuration is, the baseline, display names and the one colour per architecture."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd

from benchmark.config import FIELDS, Config, legacy


class Unsupported(Exception):
    """This table or figure cannot be made from these results; the message says why (one line)."""


#: Config defaults (the shared base config = the report's baseline), without building a Config
DEFAULTS: dict = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                  for f in dataclasses.fields(Config)}
META = ("run_id", "status", "error", "run_dir")
#: metric columns without a slash
BARE_METRICS = ("score_per_minute", "best_epoch")
#: config keys that differ between runs of one configuration without changing what it is (the
#: seed, where the data and cache are, devices, workers, tracking): seeds are averaged, the rest
#: ignored. Also what ``benchmark.choose`` groups runs by.
RUN_SPECIFIC = ("seed", "device", "cache_dir", "eval_batch_size", "num_workers", "tracking",
                "wandb_project", "wandb_group", "data_home")
#: config keys that change the test set: configurations are only compared within one setting
SETTING_KEYS = ("dataset", "min_faces_per_person", "max_identities", "protocol", "split", "split_seed")
#: the report's controlled settings (Table 1): LR 0.001, 3 epochs, batch 32, augmentation and
#: ImageNet normalization on, a trained head
BASELINE = {k: DEFAULTS[k] for k in ("lr", "epochs", "batch_size", "augment", "normalize", "embedding")}
#: design choices an ablation (Figure 3) flips one at a time; lr/epochs/backbone have Figures 1, 2, 4
ABLATION_KEYS = ("batch_size", "augment", "normalize", "embedding", "weights", "dropout", "patience",
                 "monitor", "embedding_dim", "image_size", "resize", "engine")

ARCH_NAMES = {"efficientnet_b0": "EfficientNet-B0", "vit_b_16": "ViT-B/16", "resnet50": "ResNet50",
              "resnet18": "ResNet18", "efficientnet_lite0": "EfficientNet-Lite0"}
#: index into seaborn's "colorblind" palette; EfficientNet-B0 takes the vermillion (red) the report's
#: Figure 5 shows it in
_FIXED_COLORS = {"efficientnet_b0": 3, "vit_b_16": 0, "resnet50": 2, "resnet18": 1, "efficientnet_lite0": 4}


def arch_name(backbone) -> str:
    return ARCH_NAMES.get(str(backbone), str(backbone))


def palette(backbones=()) -> dict[str, str]:
    """One colour per backbone, the same in every figure: known backbones keep fixed colours,
    others take the remaining colours of seaborn's colorblind palette in sorted order."""
    import seaborn as sns

    colors = sns.color_palette("colorblind", 10).as_hex()
    out = {b: colors[i] for b, i in _FIXED_COLORS.items()}
    spare = [c for i, c in enumerate(colors) if i not in _FIXED_COLORS.values() and i != 7]  # 7: grey
    for i, b in enumerate(sorted({str(b) for b in backbones} - set(out))):
        out[b] = spare[i % len(spare)]
    return out


def arch_order(backbones) -> list[str]:
    """Known architectures in the report's order, then the others sorted."""
    known = [b for b in _FIXED_COLORS if b in set(map(str, backbones))]
    return known + sorted({str(b) for b in backbones} - set(known))


def missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v)) or (np.isscalar(v) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def norm(v):
    """A hashable, comparable stand-in for a config value: NaN/None -> None, 3.0 -> 3,
    'true' -> True, lists -> tuples, mappings -> sorted JSON (values read back from CSV or W&B
    compare equal)."""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(norm(x) for x in v)
    if missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return int(f) if f.is_integer() else float(f"{f:.12g}")
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def config_keys(df: pd.DataFrame) -> list[str]:
    """Config keys present in ``df`` that define a configuration (seed and run-specific keys excluded)."""
    return [k for k in FIELDS if k in df.columns and k not in RUN_SPECIFIC]


def row_key(df: pd.DataFrame, keys=None) -> pd.Series:
    """Per row, its values of ``keys`` (default ``config_keys(df)``: the row's configuration), each
    ``norm``-ed, as one JSON list: equal exactly where rows agree on every key (group by it)."""
    keys = config_keys(df) if keys is None else list(keys)
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    return df.apply(lambda r: json.dumps([norm(r[k]) for k in keys], default=str), axis=1)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if "/" in str(c) or c in BARE_METRICS]


def matches(df: pd.DataFrame, settings: dict) -> pd.Series:
    """Rows whose config equals ``settings`` on every key (a key the frame lacks counts as its default)."""
    ok = pd.Series(True, index=df.index)
    for k, v in settings.items():
        col = df[k] if k in df.columns else pd.Series([DEFAULTS.get(k)] * len(df), index=df.index)
        target = norm(v)
        ok &= col.map(lambda x: norm(x) == target).astype(bool)
    return ok


def fmt_num(v, digits: int = 3) -> str:
    """A number as the report writes it: 0.001, 0.1, 438.7 (no trailing zeros for small settings)."""
    if missing(v):
        return "–"
    if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        return f"{float(v):.{digits}g}"
    return str(norm(v))


def describe(key: str, value) -> str:
    """A config value in words, for ablation and sweep labels."""
    value = norm(value)
    if key == "batch_size":
        return f"batch size {value}"
    if key == "normalize":
        return "ImageNet normalization" if value else "no normalization"
    if key == "augment":
        return {"none": "no augmentation", "report": "augmentation",
                "strong": "strong augmentation"}.get(legacy(key, value), f"augment={value}")
    if key == "embedding":
        return "frozen features (no head)" if value == "backbone" else "trained head"
    if key == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    if key == "lr":
        return f"LR {fmt_num(value)}"
    if key == "weights":
        return f"{value} weights"
    return f"{key}={value}"
