"""Datasets behind one contract: a DataFrame with ``path`` (absolute image file), ``identity``
(person name) and ``label`` (int code, by sorted identity). Splits add a ``split`` column."""

from __future__ import annotations

import pandas as pd

from benchmark.config import Config, ConfigError
from benchmark.data.domains_manifest import DOMAIN_SIDES, check_both, manifest_path, read_domains
from benchmark.data.imagefolder import load_imagefolder
from benchmark.data.lfw import load_lfw
from benchmark.data.orl import load_orl

DATASETS = {"lfw": load_lfw, "imagefolder": load_imagefolder, "orl": load_orl}
#: the config keys ``load_dataset`` reads: two configs that agree on them load the same table
DATA_KEYS = ("dataset", "data_home", "min_faces_per_person", "max_identities", "extra_test_min_faces",
             "gallery_home", "domains")


def from_files(paths: list[str], identities: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"path": [str(p) for p in paths], "identity": identities})
    df = df.sort_values(["identity", "path"], ignore_index=True)
    df["label"] = pd.factorize(df["identity"], sort=True)[0]
    return df


def load_dataset(cfg: Config) -> pd.DataFrame:
    """The dataset table for ``cfg``, filtered by ``min_faces_per_person`` and ``max_identities``."""
    paths, identities = DATASETS[cfg.dataset](cfg)
    df = from_files(paths, identities)
    # against every image of data_home: a listed image of a person filtered out below is no error
    domains = read_domains(cfg, df["path"].tolist()) if cfg.domains is not None else None
    counts = df["identity"].value_counts()
    keep = sorted(counts[counts >= cfg.min_faces_per_person].index)
    if cfg.max_identities is not None:
        keep = keep[: cfg.max_identities]
    if len(keep) < 2:
        fits = int(counts.iloc[1]) if len(counts) >= 2 else None  # what the second-largest identity holds
        raise ConfigError(f"dataset={cfg.dataset} has {len(keep)} identities with >= "
                          f"{cfg.min_faces_per_person} images; lower min_faces_per_person"
                          + (f" to <= {fits}" if fits and fits < cfg.min_faces_per_person else "")
                          + " (a run needs 2 identities)")
    extra = []
    if cfg.extra_test_min_faces is not None:  # unseen test people below the threshold (make-competition's)
        extra = sorted(counts[(counts >= cfg.extra_test_min_faces) & (counts < cfg.min_faces_per_person)].index)
    rows = df["identity"].isin(keep + extra)
    out = from_files(df.loc[rows, "path"].tolist(), df.loc[rows, "identity"].tolist())
    if extra:
        out["extra_test"] = out["identity"].isin(extra)
    if cfg.gallery_home is not None:
        out = _with_gallery_home(out, cfg)
    if domains is not None:
        out = _with_domains(out, cfg, domains)
    return out


def _with_domains(df: pd.DataFrame, cfg: Config, domains: dict[str, str]) -> pd.DataFrame:
    """``df`` (the images kept) with the ``domain`` column of its manifest (photo -> query, render ->
    gallery, as real other-domain images are); the images kept must still hold both domains."""
    out = df.copy()
    kept = out["path"].map(domains)
    check_both(kept, f"domains={manifest_path(cfg)}",
               f"the {len(out)} images kept (min_faces_per_person={cfg.min_faces_per_person}, "
               f"max_identities={cfg.max_identities}) hold no {{missing}} (every one is {{present}})")
    out["domain"] = kept.map(DOMAIN_SIDES)
    return out


def _with_gallery_home(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """``df`` (domain ``query``) plus the <gallery_home>/<identity>/<image> files (domain ``gallery``)
    of its identities; gallery identities the photos lack are named in a warning and left out."""
    import warnings

    paths, identities = load_imagefolder(cfg.replace(data_home=cfg.gallery_home))
    known = set(df["identity"])
    unknown = sorted(set(identities) - known)
    if unknown:
        warnings.warn(f"gallery_home {cfg.gallery_home}: {len(unknown)} identities have no photos in data_home "
                      f"(left out), e.g. {unknown[0]}", stacklevel=2)
    keep = [i in known for i in identities]
    other = pd.DataFrame({"path": [p for p, k in zip(paths, keep) if k],
                          "identity": [i for i, k in zip(identities, keep) if k]})
    out = from_files(df["path"].tolist() + other["path"].tolist(), df["identity"].tolist() + other["identity"].tolist())
    out["domain"] = out["path"].isin(set(other["path"])).map({True: "gallery", False: "query"})
    if "extra_test" in df:
        out["extra_test"] = out["identity"].isin(set(df.loc[df["extra_test"], "identity"]))
    return out
