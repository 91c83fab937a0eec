"""``<root>/<identity>/<image>``: the competition's training layout."""

from __future__ import annotations

import warnings
from pathlib import Path

from benchmark.config import Config, ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


def is_hidden(path: Path) -> bool:
    """Dot-names (``.ipynb_checkpoints/``, ``.DS_Store``, macOS ``._x.jpg``) are tools' files, never data."""
    return path.name.startswith(".")


def visible(entries, where: Path | str) -> list[Path]:
    """``entries`` without the hidden ones, sorted; says how many were skipped under ``where``."""
    entries = sorted(entries)
    hidden = [p for p in entries if is_hidden(p)]
    if hidden:
        warnings.warn(f"skipped {len(hidden)} hidden file(s)/folder(s) under {where} "
                      f"(e.g. {hidden[0].name}): names starting with '.' are never images or identities",
                      stacklevel=2)
    return [p for p in entries if not is_hidden(p)]


def list_images(folder: Path) -> list[Path]:
    return [p for p in visible(folder.iterdir(), folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def load_imagefolder(cfg: Config) -> tuple[list[str], list[str]]:
    if not cfg.data_home:
        raise ConfigError("dataset=imagefolder needs data_home=<root> with one sub-folder per identity")
    root = Path(cfg.data_home).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data_home={root} is not a folder; expected <root>/<identity>/<image>")
    paths, identities = [], []
    for person in (p for p in visible(root.iterdir(), root) if p.is_dir()):
        for image in list_images(person):
            paths.append(str(image))
            identities.append(person.name)
    if not paths:
        raise ConfigError(f"no images found under {root}/<identity>/ "
                          f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, identities
