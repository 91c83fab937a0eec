"""What ``benchmark list`` shows: named experiments, config keys, backbones, sweep files.

Everything is read from its single source (the experiment folders, ``Config`` and the comments above
its fields, the backbone registry, the sweep files), so the listing cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

import pandas as pd
import yaml

from benchmark import config


def experiments() -> pd.DataFrame:
    """Every named experiment: ``experiment``, ``overrides`` (what it sets beyond its file's
    ``defaults:``, the part that tells it from its neighbours), ``defaults`` (those shared ones; with
    the overrides, what differs from the base config), ``file``."""
    rows, shared = [], {}
    for name, (overrides, path) in config.experiment_sources().items():
        if path not in shared:
            shared[path] = config.read_yaml(path).get("defaults") or {}
        own = {k: v for k, v in overrides.items() if k not in shared[path] or shared[path][k] != v}
        own_text = " ".join(f"{k}={v}" for k, v in own.items())
        rows.append({"experiment": name,
                     "overrides": own_text or ("(base)" if not overrides else "(its file's defaults)"),
                     "defaults": " ".join(f"{k}={v}" for k, v in shared[path].items()), "file": str(path)})
    return pd.DataFrame(rows, columns=["experiment", "overrides", "defaults", "file"])


def key_docs() -> dict[str, str]:
    """The comment lines right above each ``Config`` field (``#:`` or ``#``; section rules excluded)."""
    lines = inspect.getsource(config).splitlines()
    cls = next(n for n in ast.parse("\n".join(lines)).body if isinstance(n, ast.ClassDef) and n.name == "Config")
    docs = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#") and not lines[i].strip().startswith("# ---"):
                comment.insert(0, lines[i].strip().lstrip("#:").strip())
                i -= 1
            docs[node.target.id] = " ".join(comment)
    return docs


def keys() -> pd.DataFrame:
    """Every config key: ``key``, ``type``, ``default``, ``choices``, ``doc``."""
    docs, hints = key_docs(), typing.get_type_hints(config.Config)
    rows = []
    for name, f in config.FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = hints[name]
        rows.append({"key": name, "type": hint.__name__ if isinstance(hint, type) else str(hint),
                     "default": yaml.safe_dump(list(default) if isinstance(default, tuple) else default,
                                               default_flow_style=True).strip().removesuffix("\n..."),
                     "choices": "|".join(f.metadata.get("choices", ())), "doc": docs.get(name, "")})
    return pd.DataFrame(rows)


def backbones() -> pd.DataFrame:
    """Every named backbone: ``backbone``, ``dim``, ``input_size``, ``input``, ``available`` and
    ``weights`` (where they are on this machine, or why they cannot be used). The open families
    (torchvision:<name>, timm:<name>, onnx:<path>) take any name of theirs."""
    from benchmark.models.backbones import describe, names

    return pd.DataFrame([describe(name) for name in names()])


def sweep_files() -> dict[str, Path]:
    """Named sweep files: ``sweeps/*.yaml`` of every experiments folder, by file stem (later folders win)."""
    return {p.stem: p for d in config.experiments_dirs() for p in sorted((d / "sweeps").glob("*.yaml"))}


def find_sweep(name_or_path: str | Path) -> Path:
    """A sweep file path as given, else the named sweep (file stem or the file's ``name:``)."""
    path = Path(name_or_path)
    if path.exists():  # a file, or a folder given by mistake (read_yaml says so)
        return path
    files = sweep_files()
    if str(name_or_path) in files:
        return files[str(name_or_path)]
    by_name = {(yaml.safe_load(p.read_text()) or {}).get("name"): p for p in files.values()}
    if str(name_or_path) in by_name:
        return by_name[str(name_or_path)]
    raise config.ConfigError(f"sweep file {name_or_path} not found, and no named sweep is called so; named sweeps: "
                             f"{', '.join(sorted(files))} (benchmark list sweeps)")


def sweeps() -> pd.DataFrame:
    """Every named sweep: ``sweep`` (file stem), ``name`` (W&B/offline sweep name), ``runs`` (grid points),
    ``parameters``, ``file``."""
    from benchmark.sweep import expand, load

    rows = []
    for stem, path in sweep_files().items():
        doc = load(path)
        params = ", ".join(f"{k} ({len(v.get('values', [v.get('value')]))})" for k, v in doc["parameters"].items())
        rows.append({"sweep": stem, "name": doc["name"], "runs": len(expand(doc)), "parameters": params,
                     "file": str(path)})
    return pd.DataFrame(rows, columns=["sweep", "name", "runs", "parameters", "file"])


def styles() -> pd.DataFrame:
    """Every gallery/query/training style: ``style``, ``parameters`` (defaults; ``style_args`` sets
    them) and ``doc`` (the first line of its function's docstring)."""
    from benchmark.features import styles as registry

    return pd.DataFrame([{"style": name, "parameters": " ".join(f"{k}={v}" for k, v in registry.defaults(name).items()),
                          "doc": " ".join((fn.__doc__ or "").split("\n\n")[0].split())} for name, fn in registry.STYLES.items()],
                        columns=["style", "parameters", "doc"])


LISTS = {"experiments": experiments, "keys": keys, "backbones": backbones, "sweeps": sweeps, "styles": styles}
