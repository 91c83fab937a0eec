"""Datasets behind one contract: a DataFrame with ``path`` (absolute image file), ``identity``
(person name) and ``label`` (int code, by sorted identity). Splits add a ``split`` column."""

from __future__ import annotations

import pandas as pd

from benchmark.config import Config, ConfigError
from benchmark.data.imagefolder import load_imagefolder
from benchmark.data.lfw import load_lfw
from benchmark.data.orl import load_orl

DATASETS = {"lfw": load_lfw, "imagefolder": load_imagefolder, "orl": load_orl}


def from_files(paths: list[str], identities: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"path": [str(p) for p in paths], "identity": identities})
    df = df.sort_values(["identity", "path"], ignore_index=True)
    df["label"] = pd.factorize(df["identity"], sort=True)[0]
    return df


def load_dataset(cfg: Config) -> pd.DataFrame:
    """The dataset table for ``cfg``, filtered by ``min_faces_per_person`` and ``max_identities``."""
    paths, identities = DATASETS[cfg.dataset](cfg)
    df = from_files(paths, identities)
    counts = df["identity"].value_counts()
    keep = sorted(counts[counts >= cfg.min_faces_per_person].index)
    if cfg.max_identities is not None:
        keep = keep[: cfg.max_identities]
    if len(keep) < 2:
        raise ConfigError(f"dataset={cfg.dataset} has {len(keep)} identities with >= "
                          f"{cfg.min_faces_per_person} images; lower min_faces_per_person")
    return from_files(df.loc[df["identity"].isin(keep), "path"].tolist(),
                      df.loc[df["identity"].isin(keep), "identity"].tolist())
