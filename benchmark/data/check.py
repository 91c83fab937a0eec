"""Decode-check a dataset once, before any training: a corrupt image is found in seconds with
every other unreadable file, not 40 lines of traceback into a run.

The check decodes every image with the pipeline's own decoder (``transforms.decode``); its result
is cached by the images' content hash (``<feature cache>/image-checks/<hash>.json``), so a dataset
is decoded for checking once, whatever the number of runs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from benchmark.features.cache import FeatureCache
from benchmark.config import Config, ConfigError
from benchmark.data import from_files
from benchmark.features.extract import content_hash
from benchmark.files import write_atomic
from benchmark.features.views import decode


def _reason(path: str) -> str | None:
    try:
        decode(path)
        return None
    except Exception as exc:  # any failure to decode is the reason, whatever the library raised
        return str(exc).replace(f"cannot read image {path}: ", "") or type(exc).__name__


def unreadable(paths: list[str], cache_root: Path | str | None = None, workers: int = 2) -> dict[str, str]:
    """``{path: reason}`` of the images that cannot be decoded (cached by content hash)."""
    record = FeatureCache(cache_root).root / "image-checks" / f"{content_hash(paths)}.json"
    try:
        bad = {int(i): r for i, r in json.loads(record.read_text()).items()}
    except (OSError, ValueError):
        with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while decoding
            reasons = list(pool.map(_reason, paths))
        bad = {i: r for i, r in enumerate(reasons) if r is not None}
        try:
            write_atomic(record, json.dumps(bad))
        except OSError:  # a read-only cache only costs the next run this check again
            pass
    return {paths[i]: r for i, r in bad.items()}


def check_images(df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, list[dict]]:
    """``df`` without its unreadable images and the list of those skipped (``{path, reason}``) when
    ``cfg.on_bad_image`` is ``skip``; with ``error`` one ConfigError naming every unreadable file."""
    bad = unreadable(df["path"].tolist(), cfg.cache_dir, cfg.num_workers)
    if not bad:
        return df, []
    if cfg.on_bad_image == "error":
        listed = "; ".join(f"{p} ({r})" for p, r in bad.items())
        raise ConfigError(f"{len(bad)} of {len(df)} images of dataset={cfg.dataset} cannot be read: {listed}. "
                          "Fix or remove them, or --set on_bad_image=skip to leave them out (recorded in the run)")
    kept = df[~df["path"].isin(bad)]
    return from_files(kept["path"].tolist(), kept["identity"].tolist()), \
        [{"path": p, "reason": r} for p, r in bad.items()]
