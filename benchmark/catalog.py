"""What ``benchmark list`` shows: named experiments, config keys, backbones, sweep files, styles, remedies.

Everything is read from its single source (the experiment folders, ``Config`` and the comments above
its fields, the backbone registry, the sweep files), so the listing cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

import pandas as pd
import yaml

from benchmark import config, sweepfile
from benchmark.params import describe


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
    """Every config key: ``key``, ``type``, ``default``, ``choices``, ``domain`` (its declared valid
    values, ``benchmark.params``), ``doc``."""
    docs, hints = key_docs(), typing.get_type_hints(config.Config)
    rows = []
    for name, f in config.FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = hints[name]
        rows.append({"key": name, "type": hint.__name__ if isinstance(hint, type) else str(hint),
                     "default": yaml.safe_dump(list(default) if isinstance(default, tuple) else default,
                                               default_flow_style=True).strip().removesuffix("\n..."),
                     "choices": "|".join(config.PARAMS[name].choices) if name in config.PARAMS else "",
                     "domain": config.PARAMS[name].domain() if name in config.PARAMS else "",
                     "doc": docs.get(name, "")})
    return pd.DataFrame(rows)


def backbones() -> pd.DataFrame:
    """Every named backbone: ``backbone``, ``dim``, ``input_size``, ``input``, ``available`` and
    ``weights`` (where they are on this machine, or why they cannot be used). The open families
    (torchvision:<name>, timm:<name>, onnx:<path>) take any name of theirs."""
    from benchmark.models.backbones import describe, names

    return pd.DataFrame([describe(name) for name in names()])


def sweeps() -> pd.DataFrame:
    """Every named sweep: ``sweep`` (file stem), ``name`` (W&B/offline sweep name), ``runs`` (grid
    points; random/bayes: the method and its run_cap), ``parameters``, ``file``."""
    rows = []
    for stem, path in sweepfile.sweep_files().items():
        doc = sweepfile.load(path)
        runs, params = sweepfile.describe(doc)
        rows.append({"sweep": stem, "name": doc["name"], "runs": runs, "parameters": params, "file": str(path)})
    return pd.DataFrame(rows, columns=["sweep", "name", "runs", "parameters", "file"])


def styles() -> pd.DataFrame:
    """Every gallery/query/training style: ``style``, ``parameters`` (defaults; ``style_args`` sets
    them) and ``doc`` (the first line of its function's docstring)."""
    from benchmark.features import styles as registry

    return pd.DataFrame([{"style": name, "parameters": describe(registry.params(name)),
                          "doc": " ".join((fn.__doc__ or "").split("\n\n")[0].split())} for name, fn in registry.STYLES.items()],
                        columns=["style", "parameters", "doc"])


def remedies() -> pd.DataFrame:
    """Every test-time remedy: ``remedy``, ``config`` (how a config switches it on), ``parameters``
    (``rerank_args``: defaults and domains) and ``doc``."""
    from benchmark.evaluation.remedies import listing

    return pd.DataFrame(listing(), columns=["remedy", "config", "parameters", "doc"])


LISTS = {"experiments": experiments, "keys": keys, "backbones": backbones, "sweeps": sweeps, "styles": styles,
         "remedies": remedies}
