"""Train / val / test splits, saved as JSON beside the results and reloadable.

closed-set: the report's protocol, each identity's images split 50/20/30 (every identity in every
split). open-set: identities split 50/20/30, so validation and test people are never trained on —
the report's own lesson (its section 4.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.config import Config, ConfigError

SPLITS = ("train", "val", "test")


def _counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rounded (train, val, test) sizes; every non-empty ratio keeps >= 1 item when n allows."""
    n_train = int(round(n * ratios[0]))
    n_val = int(round(n * ratios[1]))
    if ratios[2] > 0 and n_train + n_val >= n and n >= 3:
        n_train -= n_train + n_val - n + 1
    if ratios[1] > 0 and n_val == 0 and n - n_train >= 2:
        n_val = 1
    if ratios[2] == 0:  # no test share: rounding leftovers (or excess) settle in val, else train
        n_val = max(n - n_train, int(n >= 2)) if ratios[1] > 0 else 0
        n_train = n - n_val
    return n_train, n_val, n - n_train - n_val


def closed_set(df: pd.DataFrame, ratios=(0.5, 0.2, 0.3), seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    split = pd.Series("", index=df.index, dtype=object)
    for _, idx in df.groupby("identity", sort=True).groups.items():
        idx = rng.permutation(np.asarray(idx))
        n_train, n_val, _ = _counts(len(idx), ratios)
        split[idx[:n_train]] = "train"
        split[idx[n_train:n_train + n_val]] = "val"
        split[idx[n_train + n_val:]] = "test"
    return split


def open_set(df: pd.DataFrame, ratios=(0.5, 0.2, 0.3), seed: int = 0) -> pd.Series:
    people = np.random.default_rng(seed).permutation(sorted(df["identity"].unique()))
    n_train, n_val, _ = _counts(len(people), ratios)
    which = {p: "train" for p in people[:n_train]}
    which |= {p: "val" for p in people[n_train:n_train + n_val]}
    which |= {p: "test" for p in people[n_train + n_val:]}
    return df["identity"].map(which)


PROTOCOLS = {"closed-set": closed_set, "open-set": open_set}


def make_split(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """``df`` with a ``split`` column per ``cfg.protocol``; checks the protocol's promise."""
    out = df.assign(split=PROTOCOLS[cfg.protocol](df, tuple(cfg.split), cfg.split_seed))
    if cfg.protocol == "open-set":
        assert_identity_disjoint(out)
    for name in ("train", "test"):
        if not (out["split"] == name).any():
            raise ConfigError(f"split={list(cfg.split)} leaves the {name} split empty; "
                              "use more identities/images or other fractions")
    check_sampling(out, cfg)
    return out


def check_sampling(df: pd.DataFrame, cfg: Config) -> None:
    """``samples_per_class`` against the training split, before any feature is computed: m images
    of an identity that has fewer would repeat images as their own positives, and batch_size must be
    reachable with m images of distinct identities."""
    m = cfg.samples_per_class
    if not m or cfg.embedding != "head":
        return
    counts = df.loc[df["split"] == "train", "identity"].value_counts()
    if m > counts.min():
        raise ConfigError(f"samples_per_class={m} but the training split holds only {counts.min()} images of "
                          f"{counts.idxmin()} (the fewest of its {len(counts)} identities): batches would repeat "
                          f"images as their own positives; use samples_per_class <= {counts.min()} (a divisor "
                          "of batch_size) or identities with more images (a higher min_faces_per_person)")
    most = min(m * len(counts), int(counts.sum())) // m * m
    if cfg.batch_size > most:
        raise ConfigError(f"batch_size={cfg.batch_size} with samples_per_class={m} needs {cfg.batch_size // m} "
                          f"identities x {m} images per batch, but the training split has {len(counts)} identities "
                          f"({counts.sum()} images); lower batch_size to <= {most} (a multiple of {m})")


def assert_identity_disjoint(df: pd.DataFrame) -> None:
    """Raise if any identity appears in more than one split (the open-set guarantee)."""
    per_identity = df.groupby("identity")["split"].nunique()
    shared = per_identity[per_identity > 1]
    if len(shared):
        raise AssertionError(f"{len(shared)} identities appear in several splits, e.g. {shared.index[0]}")


def to_json(df: pd.DataFrame, cfg: Config) -> str:
    return json.dumps({
        "protocol": cfg.protocol, "ratios": list(cfg.split), "seed": cfg.split_seed,
        "counts": {s: int((df["split"] == s).sum()) for s in SPLITS},
        "identities": {s: int(df.loc[df["split"] == s, "identity"].nunique()) for s in SPLITS},
        "items": [[p, i, s] for p, i, s in zip(df["path"], df["identity"], df["split"])],
    }, indent=1)


def load(path: Path) -> pd.DataFrame:
    """Reload a saved split as the dataset contract (path, identity, label, split)."""
    from benchmark.data import from_files

    items = json.loads(Path(path).read_text())["items"]
    df = from_files([p for p, _, _ in items], [i for _, i, _ in items])
    return df.assign(split=df["path"].map({p: s for p, _, s in items}))
