"""LFW in scikit-learn's ``lfw_home`` layout, read as the original 250x250 JPEG files."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.config import Config, ConfigError
from benchmark.data.imagefolder import visible


def lfw_root(data_home: str | None, option: str = "--set data_home=") -> Path:
    """``<data home>/lfw_home/lfw_funneled``; data home = config, else $SCIKIT_LEARN_DATA, else
    scikit-learn's default. Downloads through scikit-learn when absent and online. A data home the
    user named (``data_home``, $SCIKIT_LEARN_DATA) that does not exist is an error, never created:
    it is a typo, not a place to download to. ``option``: how the caller's user sets the data home
    (the fix text names it)."""
    fix = (f"Fix: {option}<folder holding lfw_home/> (e.g. {option}../shared/data) or export "
           "SCIKIT_LEARN_DATA=<that folder>")
    named = data_home or os.environ.get("SCIKIT_LEARN_DATA")
    if named and not Path(named).expanduser().is_dir():
        source = f"{option}{data_home}" if data_home else f"$SCIKIT_LEARN_DATA={named}"
        raise ConfigError(f"LFW data home {named} ({source}) does not exist. {fix}")
    from sklearn.datasets import fetch_lfw_people, get_data_home

    home = Path(get_data_home(data_home))
    root = home / "lfw_home" / "lfw_funneled"
    if not root.is_dir():
        try:
            fetch_lfw_people(data_home=str(home), funneled=True, download_if_missing=True)
        except Exception as exc:  # offline: URLError, socket errors, HTTP errors
            raise ConfigError(
                f"LFW not found at {root} and the download failed ({type(exc).__name__}: {exc}). "
                f"{fix}, or go online once so scikit-learn can download it.") from None
    return root


def load_lfw(cfg: Config) -> tuple[list[str], list[str]]:
    root = lfw_root(cfg.data_home)
    paths, identities = [], []
    for person in (p for p in visible(root.iterdir(), root) if p.is_dir()):
        for image in visible(person.glob("*.jpg"), person):
            paths.append(str(image))
            identities.append(person.name)
    return paths, identities
