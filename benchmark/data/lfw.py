"""LFW in scikit-learn's ``lfw_home`` layout, read as the original 250x250 JPEG files."""

from __future__ import annotations

from pathlib import Path

from benchmark.config import Config, ConfigError
from benchmark.data.imagefolder import visible


def lfw_root(data_home: str | None) -> Path:
    """``<data home>/lfw_home/lfw_funneled``; data home = config, else $SCIKIT_LEARN_DATA, else
    scikit-learn's default. Downloads through scikit-learn when absent and online."""
    from sklearn.datasets import fetch_lfw_people, get_data_home

    home = Path(get_data_home(data_home))
    root = home / "lfw_home" / "lfw_funneled"
    if not root.is_dir():
        try:
            fetch_lfw_people(data_home=str(home), funneled=True, download_if_missing=True)
        except Exception as exc:  # offline: URLError, socket errors, HTTP errors
            raise ConfigError(
                f"LFW not found at {root} and the download failed ({type(exc).__name__}: {exc}). "
                "Fix: set data_home=<folder holding lfw_home/> (e.g. --set data_home=../shared/data) "
                "or export SCIKIT_LEARN_DATA=<that folder>, or go online once so scikit-learn can "
                "download it.") from None
    return root


def load_lfw(cfg: Config) -> tuple[list[str], list[str]]:
    root = lfw_root(cfg.data_home)
    paths, identities = [], []
    for person in (p for p in visible(root.iterdir(), root) if p.is_dir()):
        for image in visible(person.glob("*.jpg"), person):
            paths.append(str(image))
            identities.append(person.name)
    return paths, identities
