"""Datasets behind one contract: a DataFrame with ``path`` (absolute image file), ``identity``
(person name) and ``label`` (int code, by sorted identity). Splits add a ``split`` column."""

from __future__ import annotations

from pathlib import Path

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
    extra = []
    if cfg.extra_test_min_faces is not None:  # unseen test people below the threshold (make-competition's)
        extra = sorted(counts[(counts >= cfg.extra_test_min_faces) & (counts < cfg.min_faces_per_person)].index)
    rows = df["identity"].isin(keep + extra)
    out = from_files(df.loc[rows, "path"].tolist(), df.loc[rows, "identity"].tolist())
    if extra:
        out["extra_test"] = out["identity"].isin(extra)
    if cfg.gallery_home is not None:
        out = _with_gallery_home(out, cfg)
    if cfg.domains is not None:
        out = _with_domains(out, cfg)
    return out


#: a domain manifest's values -> the side of a val/test query -> gallery split they take
DOMAIN_SIDES = {"photo": "query", "render": "gallery"}


def _with_domains(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """``df`` with the ``domain`` column of its ``domains`` manifest (``path,domain``: photo -> query,
    render -> gallery, as real other-domain images are). Every image needs one of the two domains, and
    every manifest line an image: anything else is one ConfigError naming the lines."""
    import csv

    root = Path(cfg.data_home).expanduser().resolve()
    manifest = Path(cfg.domains).expanduser()
    manifest = manifest if manifest.is_absolute() else root / manifest
    if not manifest.is_file():
        raise ConfigError(f"domains={cfg.domains}: no such file ({manifest}); give the path,domain CSV, e.g. "
                          "make-competition's train/domains.csv")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"path", "domain"} - set(rows[0]):
        raise ConfigError(f"domains={manifest}: expected a header path,domain and one line per image")
    bad = sorted({r["domain"] for r in rows} - set(DOMAIN_SIDES))
    if bad:
        raise ConfigError(f"domains={manifest}: domain(s) {', '.join(map(repr, bad))}; the two domains are "
                          f"{', '.join(DOMAIN_SIDES)}")
    listed = {str((root / r["path"]).resolve()): DOMAIN_SIDES[r["domain"]] for r in rows}
    on_disk = set(df["path"])
    absent, unlisted = sorted(set(listed) - on_disk), sorted(on_disk - set(listed))
    if absent:
        raise ConfigError(f"domains={manifest}: {len(absent)} listed file(s) are not images of data_home={root} "
                          f"(e.g. {absent[0]}); fix the manifest or the folder")
    if unlisted:
        raise ConfigError(f"domains={manifest}: {len(unlisted)} image(s) of data_home have no domain (e.g. "
                          f"{unlisted[0]}); list each as photo or render")
    out = df.copy()
    out["domain"] = out["path"].map(listed)
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
