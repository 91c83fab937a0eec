"""``<root>/<identity>/<image>``: the competition's training layout."""

from __future__ import annotations

from pathlib import Path

from benchmark.config import Config, ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_imagefolder(cfg: Config) -> tuple[list[str], list[str]]:
    if not cfg.data_home:
        raise ConfigError("dataset=imagefolder needs data_home=<root> with one sub-folder per identity")
    root = Path(cfg.data_home).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data_home={root} is not a folder; expected <root>/<identity>/<image>")
    paths, identities = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in list_images(person):
            paths.append(str(image))
            identities.append(person.name)
    if not paths:
        raise ConfigError(f"no images found under {root}/<identity>/ "
                          f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, identities
