"""Check a dataset once, before any training: a corrupt image is found in seconds with every other
unreadable file, not 40 lines of traceback into a run; and an image filed under two identities (a
symlinked identity folder, a copy) is found before it lands in train and test under two names.

The check decodes every image with the pipeline's own decoder (``transforms.decode``); its result
is cached by the images' content hash (``<feature cache>/image-checks/<hash>.json``), so a dataset
is decoded for checking once, whatever the number of runs.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from benchmark.features.cache import FeatureCache
from benchmark.config import Config, ConfigError
from benchmark.data import from_files
from benchmark.features.extract import content_hash, file_digest
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


def shared_images(df: pd.DataFrame) -> list[list[tuple[str, str]]]:
    """Each image content filed under more than one identity, as its ``(path, identity)`` copies (the
    same file through a symlinked folder or a hard link, or a byte copy): one person under two labels
    leaks between train and test. By content digest, which the decode check has already read."""
    groups: dict[bytes, list[tuple[str, str]]] = {}
    for path, identity in zip(df["path"], df["identity"]):
        groups.setdefault(file_digest(path), []).append((path, identity))
    return [members for members in groups.values() if len({identity for _, identity in members}) > 1]


def _described(members: list[tuple[str, str]]) -> str:
    paths = [p for p, _ in members]
    how = "the same file" if all(os.path.samefile(paths[0], p) for p in paths[1:]) else "byte-identical"
    return " = ".join(f"{p} ({i})" for p, i in members) + f": {how}"


def check_images(df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, list[dict]]:
    """``df`` without its unusable images and the list of those skipped (``{path, reason}``) when
    ``cfg.on_bad_image`` is ``skip``; with ``error`` one ConfigError naming every such file. Unusable:
    it cannot be decoded, or it is filed under two identities (``shared_images``; every copy goes).
    What remains must still hold two identities to tell apart."""
    bad = unreadable(df["path"].tolist(), cfg.cache_dir, cfg.num_workers)
    shared = shared_images(df[~df["path"].isin(bad)])
    if not bad and not shared:
        return df, []
    if cfg.on_bad_image == "error":
        if bad:
            listed = "; ".join(f"{p} ({r})" for p, r in bad.items())
            raise ConfigError(f"{len(bad)} of {len(df)} images of dataset={cfg.dataset} cannot be read: {listed}. "
                              "Fix or remove them, or --set on_bad_image=skip to leave them out (recorded in the run)")
        raise ConfigError(f"{len(shared)} image(s) of dataset={cfg.dataset} are filed under two identities: "
                          f"{'; '.join(map(_described, shared[:5]))}{' ...' if len(shared) > 5 else ''}. "
                          "One person under two labels "
                          "leaks between train and test: remove the copy (or the symlinked folder), or --set "
                          "on_bad_image=skip to leave every copy out (recorded in the run)")
    gone = dict(bad)
    for members in shared:  # every copy goes: which label is right is unknown
        gone |= dict.fromkeys((p for p, _ in members), f"filed under two identities: {_described(members)}")
    kept = df[~df["path"].isin(gone)]
    if kept["identity"].nunique() < 2:
        raise ConfigError(f"on_bad_image=skip left {kept['identity'].nunique()} identity of dataset={cfg.dataset} "
                          f"({len(gone)} images skipped, e.g. {next(iter(gone))}: {next(iter(gone.values()))}); "
                          "retrieval needs at least 2: fix the images or add identities")
    return from_files(kept["path"].tolist(), kept["identity"].tolist()), \
        [{"path": p, "reason": r} for p, r in gone.items()]
