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
    """``df`` with a ``split`` column per ``cfg.protocol``; checks the protocol's promise. Rows marked
    ``extra_test`` (people below min_faces_per_person, ``extra_test_min_faces``) are unseen test
    identities. With ``cfg.query_gallery`` also a ``side`` column (``sides``)."""
    if "extra_test" in df:
        extra = df["extra_test"].to_numpy(bool)
        split = pd.Series("test", index=df.index, dtype=object)
        split[~extra] = PROTOCOLS[cfg.protocol](df[~extra], tuple(cfg.split), cfg.split_seed)
    else:
        split = PROTOCOLS[cfg.protocol](df, tuple(cfg.split), cfg.split_seed)
    out = df.assign(split=split)
    if cfg.query_gallery:
        out["side"] = sides(out, cfg)
    if cfg.protocol == "open-set":
        assert_identity_disjoint(out)
    for name in ("train", "test"):
        if not (out["split"] == name).any():
            raise ConfigError(f"split={list(cfg.split)} leaves the {name} split empty; "
                              "use more identities/images or other fractions")
    check_sampling(out, cfg)
    return out


def sides(df: pd.DataFrame, cfg: Config) -> pd.Series:
    """Query -> gallery retrieval on val/test: ``query``, ``gallery`` or ``""`` (train, or left out).

    Style proxy (one domain of images): each identity's images of val, and of test, are divided, seeded by
    ``split_seed``, into round(query_fraction x n) queries (at least 1) and the rest gallery items
    (at least 1); an identity with fewer than 2 images is refused with the numbers. Real other
    domain (``gallery_home``: rows with ``domain == "gallery"``): those rows are the gallery, the
    val/test photos the queries; a query whose identity has no gallery item is left out (``""``).
    """
    fraction = 0.5 if cfg.query_fraction is None else cfg.query_fraction
    side = pd.Series("", index=df.index, dtype=object)
    evaluated = df["split"].isin(("val", "test"))
    if "domain" in df:
        side[evaluated & (df["domain"] == "gallery")] = "gallery"
        side[evaluated & (df["domain"] != "gallery")] = "query"
        return side
    counts = df[evaluated].groupby(["identity", "split"]).size()  # closed-set: an identity in both splits
    small = counts[counts < 2]
    if len(small):
        (who, split), n = small.index[0], int(small.iloc[0])
        raise ConfigError(f"query -> gallery retrieval needs >= 2 images of every identity in val and in test (one "
                          f"query, one gallery item), but {len(small)} of {len(counts)} have fewer (e.g. {who} in "
                          f"{split}: {n}); raise min_faces_per_person or change split")
    rng = np.random.default_rng([cfg.split_seed, 0x51DE])
    # by identity, then split: open-set (one split per identity) draws in the order of identities alone
    for _, idx in df[evaluated].groupby(["identity", "split"], sort=True).groups.items():
        idx = rng.permutation(np.asarray(idx))
        n_query = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        side[idx[:n_query]] = "query"
        side[idx[n_query:]] = "gallery"
    return side


def one_sided(df: pd.DataFrame, split: str) -> tuple[list[str], list[str]]:
    """Identities of ``split`` with queries but no gallery item, and with gallery items but no query."""
    part = df[df["split"] == split]
    q = set(part.loc[part["side"] == "query", "identity"])
    g = set(part.loc[part["side"] == "gallery", "identity"])
    return sorted(q - g), sorted(g - q)


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
        **({"sides": df["side"].tolist()} if "side" in df else {}),
    }, indent=1)


def load(path: Path) -> pd.DataFrame:
    """Reload a saved split as the dataset contract (path, identity, label, split)."""
    from benchmark.data import from_files

    doc = json.loads(Path(path).read_text())
    items = doc["items"]
    df = from_files([p for p, _, _ in items], [i for _, i, _ in items])
    df = df.assign(split=df["path"].map({p: s for p, _, s in items}))
    if "sides" in doc:
        df["side"] = df["path"].map({p: side for (p, _, _), side in zip(items, doc["sides"])})
    return df
