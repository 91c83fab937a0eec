"""The one definition of what a run record holds and what the results table looks like.

A record is a folder ``<results>/<run_id>/`` of the files in ``FILES``; the results table
(``benchmark.results.store.load``) has one row per run: the ``META`` columns, every config key
(bare names: ``backbone``, ``lr`` ...) and every metric (slash names ``val/score``,
``test/top1``, ``time/cost_s`` ..., plus ``BARE_METRICS``). A metric that could not be computed
is *missing* (null in ``metrics.json``, NaN in the table), never 0.

A record is whole and consistent, or it is *damaged* (``benchmark.results.record.RunRecord.check``,
the one gate of every reader): each file parses with what it must hold, and the files agree.

* config.yaml holds every key its writer's Config had: ``status.json`` lists them (``CONFIG_KEYS``,
  written by every record since it existed); a record from before names none, and is held to the
  keys every version has had (``FIRST_KEYS``). A key such a record lacks was added after it was
  written: its default is the behaviour of the code that ran. A key filled in by a default is never
  taken for a value the run used where the writer had the key (``check_config_keys``).
* embeddings.npz holds one finite row per test item (``check_embeddings``): as many rows as
  split.json counts, ``test/n_gallery`` = the rows less one (leave-one-out: each item queries all
  the others) or the gallery side's rows (query -> gallery), ``test/n_queries`` at most the rows that can query; non-finite
  values only where the metrics say nothing was computed from them (``test/n_queries`` null).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers

import numpy as np
import pandas as pd

from benchmark.config import FIELDS, Config, legacy
from benchmark.evaluation import measures
from benchmark.evaluation.scoring import KS, competition_score

CONFIG, METRICS, HISTORY = "config.yaml", "metrics.json", "history.csv"
EMBEDDINGS, SPLIT, ENVIRONMENT, STATUS = "embeddings.npz", "split.json", "environment.json", "status.json"
#: every file a successful record has (a failed one: config.yaml and status.json)
FILES = (CONFIG, METRICS, HISTORY, EMBEDDINGS, SPLIT, ENVIRONMENT, STATUS)
#: ``stopped``: a sweep's early termination (Hyperband) ended its training; its metrics are those at
#: the stop (``stopped_epoch``), so it is not ranked with finished runs unless asked.
#: ``damaged``: a record file could not be read or is invalid (set when reading; the sweep reruns it)
STATUSES = ("ok", "stopped", "failed", "damaged")
#: statuses a record is written with (``status.json``); the ones with metrics
RECORDED, WITH_METRICS = ("ok", "stopped", "failed"), ("ok", "stopped")
#: ``sweep``, ``sweep_method``, ``search_seed``, ``early_terminate``: the sweep that started the run
#: (none for a single run); ``started``/``ended``: its wall-clock times (epoch seconds)
META = ("run_id", "status", "error", "run_dir", "warnings", "stopped_epoch", "sweep", "sweep_method",
        "search_seed", "early_terminate", "started", "ended")
#: metric columns without a slash; ``diverged``: the training loss blew up (``benchmark.divergence``)
BARE_METRICS = ("score_per_minute", "best_epoch", "diverged")
#: per-split retrieval metrics that need at least one query with a same-identity item
SPLITS = ("val", "test")
#: per-split facts: what its metrics are measured on (``split_facts``); known even when nothing is scorable
SPLIT_FACTS = ("n_queries", "n_gallery", "positives", "identities")
#: per-split retrieval metrics (each defined once, in ``benchmark.evaluation.measures``)
RANKING = measures.RANKING

#: Config defaults (the shared base config = the report's baseline), without building a Config
DEFAULTS: dict = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                  for f in dataclasses.fields(Config)}
#: config keys that differ between runs of one configuration without changing what it is (the
#: seed, where the data and cache are, devices, workers, tracking): seeds are averaged, the rest
#: ignored. Also what ``benchmark.choose`` groups runs by.
RUN_SPECIFIC = ("seed", "device", "cache_dir", "eval_batch_size", "num_workers", "tracking",
                "wandb_project", "wandb_group", "data_home")
#: config keys that change the test set: configurations are only compared within one setting
SETTING_KEYS = ("dataset", "min_faces_per_person", "max_identities", "protocol", "split", "split_seed",
                "extra_test_min_faces", "gallery_style", "val_gallery_style", "style_args", "query_fraction",
                "gallery_home", "domains")


def flat_config(cfg: dict) -> dict:
    """A config as hashable table cells: lists -> tuples, mappings (``loss_args``) -> sorted JSON,
    old spellings (``augment: true``, e.g. from W&B) -> today's."""
    def cell(k, v):
        if isinstance(v, list):
            return tuple(v)
        return json.dumps(v, sort_keys=True) if isinstance(v, dict) else legacy(k, v)

    return {k: cell(k, v) for k, v in cfg.items()}


class Unsupported(Exception):
    """This table, figure or statistic cannot be made from these results; the message says why (one line)."""


def split_facts(labels) -> dict:
    """What a split's retrieval numbers are measured on (every item queries all the others):
    ``n_gallery`` items searched per query and ``positives``, the mean number of same-identity items
    among them. A score on 1 positive among 79 is a different task from one on 2 among 119."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    n = int(counts.sum())
    return {"n_gallery": max(n - 1, 0), "positives": float((counts * (counts - 1)).sum() / n) if n else math.nan,
            "identities": len(counts)}


def empty_split() -> dict:
    """The metrics of a split without any image: its facts, and every metric missing."""
    return {"n_queries": 0, "n_gallery": 0, "positives": None, "identities": 0, **dict.fromkeys(RANKING)}


def unscorable(metrics: dict) -> list[str]:
    """The splits of ``metrics`` whose retrieval metrics could not be computed or mean nothing: no
    query has a same-identity item (``<split>/n_queries`` = 0), or the split holds fewer than 2
    identities (every neighbour is then a correct match: a perfect score that measures nothing)."""
    return [s for s in SPLITS if metrics.get(f"{s}/n_queries") == 0
            or (metrics.get(f"{s}/identities") is not None and metrics[f"{s}/identities"] < 2)]


def _why(split: str, metrics: dict) -> str:
    n_ids, n = metrics.get(f"{split}/identities"), metrics.get(f"{split}/n_gallery", 0) + 1
    if metrics.get(f"{split}/n_queries") == 0 and n_ids == 0 and metrics.get(f"{split}/positives") == 0:
        return (f"{split} has queries but no gallery item (none of its identities has an image on the gallery "
                "side, e.g. a render): its metrics are missing; give its people gallery images, or another "
                "split_seed or `split`")
    if metrics.get(f"{split}/n_queries") == 0 and n_ids == 0:
        return (f"{split} is empty (no image): its metrics are missing; raise the {split} fraction of `split` "
                "or use more identities (max_identities, min_faces_per_person)")
    if n_ids is not None and n_ids < 2:
        return (f"{split} holds {n} image(s) of {n_ids} identity: every neighbour is the same person, so a score "
                f"would read as perfect and measure nothing; its metrics are missing. Give {split} at least 2 "
                "identities: more identities (max_identities, min_faces_per_person) or a larger "
                f"{split} fraction of `split`")
    return (f"{split} has no scorable queries (no {split} image has another image of its identity in "
            f"{split}): its metrics are missing, not 0; raise the {split} fraction of `split` or "
            "min_faces_per_person")


def mark_missing(metrics: dict) -> tuple[dict, list[str]]:
    """``metrics`` with every metric of an unscorable split (and what derives from it) set to None,
    plus one warning per such split: a number that could not be computed must not read as 0 (or 1000)."""
    out, notes = dict(metrics), []
    for split in unscorable(metrics):
        for k in out:
            if k.startswith(f"{split}/") and k.split("/", 1)[1] not in SPLIT_FACTS:
                out[k] = None
        if split == "test":
            out["score_per_minute"] = None
        notes.append(_why(split, metrics))
    return out, notes


def check_metrics(metrics) -> dict:
    """``metrics.json`` content validated: a mapping of names to plain numbers or null (NaN -> None)."""
    if not isinstance(metrics, dict):
        raise ValueError(f"expected a mapping of metric names to numbers, got a {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)) or not (v is None or isinstance(v, numbers.Real)):
            raise ValueError(f"metric {k!r} = {v!r} is not a number")
        out[k] = None if v is None or math.isnan(v) else int(v) if isinstance(v, numbers.Integral) else float(v)
    return out


#: keys every successful record's metrics.json holds (null where the split is unscorable)
REQUIRED_METRICS = ("val/score", "test/score")
#: the range of a metric, by the part of its name after the split
RANGES = {**measures.RANGES, "nmi": (0.0, 1.0), "degenerate": (0.0, 1.0), "n_queries": (0, math.inf),
          "n_gallery": (0, math.inf), "positives": (0.0, math.inf), "identities": (0, math.inf), "intra": (0.0, 2.0), "inter": (0.0, 2.0),
          "score_sample_ci": (0.0, 1000.0)}


def check_record_metrics(metrics) -> dict:
    """A successful record's ``metrics.json``: ``check_metrics``, then what it must contain. A
    required key missing, a value outside its range (score > 1000, a negative time, inf), a number
    missing where its split is scorable, or Top-k/score that contradict each other are damage
    (ValueError): never a default filled in, never ranked."""
    out = check_metrics(metrics)
    absent = [k for k in REQUIRED_METRICS if k not in out]
    if absent:
        raise ValueError(f"required metric(s) {', '.join(absent)} missing")
    for k, v in out.items():
        if v is None:
            continue
        lo, hi = RANGES.get(k.split("/", 1)[-1], (-math.inf, math.inf))
        if k.startswith("time/") or k in ("best_epoch", "score_per_minute"):
            lo = 0.0
        if not (lo <= v <= hi) or math.isinf(v):
            raise ValueError(f"metric {k!r} = {v!r} is impossible (outside [{lo:g}, {hi:g}])")
    gone = unscorable(out)
    for split in SPLITS:
        scorable = split not in gone and out.get(f"{split}/n_queries", 1) is not None
        if scorable and out.get(f"{split}/score", 0) is None:
            raise ValueError(f"{split}/score is null although {split} is scorable (n_queries "
                             f"{out.get(f'{split}/n_queries')}): a number is required")
        top = [out.get(f"{split}/top{k}") for k in KS]
        if None not in top and out.get(f"{split}/score") is not None:
            if not top[0] <= top[1] + 1e-9 <= top[2] + 2e-9:
                raise ValueError(f"{split} Top-1/5/10 = {top} are not increasing")
            if abs(competition_score(dict(zip(KS, top))) - out[f"{split}/score"]) > 1e-6 * 1000:
                raise ValueError(f"{split}/score = {out[f'{split}/score']} is not 600 Top-1 + 300 Top-5 + "
                                 "100 Top-10")
    return out


#: ``status.json`` key: the config keys of the writer's Config (``RunRecord.write``)
CONFIG_KEYS = "config_keys"
#: the first version's config keys: every version since has written them all (records before ``CONFIG_KEYS``)
FIRST_KEYS = ("experiment", "dataset", "data_home", "min_faces_per_person", "max_identities", "protocol", "split",
              "split_seed", "image_size", "resize", "augment", "normalize", "backbone", "weights", "embedding_dim",
              "dropout", "embedding", "lr", "epochs", "batch_size", "patience", "monitor", "seed", "engine", "device",
              "cache_dir", "eval_batch_size", "num_workers", "tracking", "wandb_project", "wandb_group")


class Inconsistent(ValueError):
    """A record file that contradicts another file of the same record (the message says which)."""


def check_config_keys(config: dict, status: dict) -> None:
    """Every key the record's writer had (``status.json``'s ``CONFIG_KEYS``, else ``FIRST_KEYS``) is in
    its config.yaml ``config``: a default filled in on load is not a value the run used."""
    absent = [k for k in status.get(CONFIG_KEYS, FIRST_KEYS) if k not in config]
    if absent:
        source = "status.json lists them" if CONFIG_KEYS in status else "every version wrote them"
        raise Inconsistent(f"key(s) {', '.join(absent)} missing although its writer had them ({source}); "
                           "a default is not a value the run used")


def check_embeddings(shapes: dict[str, tuple], finite: bool, gallery: int | None, metrics: dict,
                     split: dict) -> None:
    """``embeddings.npz`` (each array's ``shapes``, whether its embeddings are ``finite``, how many rows
    are on the ``gallery`` side, None without sides) against the record's ``metrics`` and ``split``: what
    ``benchmark.run`` saves, one row per test item (module docstring)."""
    if len(shapes["embeddings"]) != 2:
        raise ValueError(f"embeddings of shape {shapes['embeddings']}, not (items, dimensions)")
    n = shapes["embeddings"][0]
    uneven = {k: s[0] if s else 0 for k, s in shapes.items() if not s or s[0] != n}
    if uneven:
        raise ValueError(f"{n} embeddings but " + ", ".join(f"{v} {k}" for k, v in uneven.items()))
    counts = split.get("counts") or {}
    if "test" in counts and counts["test"] != n:
        raise Inconsistent(f"{n} rows, but split.json counts {counts['test']} test items")
    n_queries, n_gallery = metrics.get("test/n_queries"), metrics.get("test/n_gallery")
    computed = "test/n_queries" not in metrics or n_queries is not None  # null: non-finite, nothing computed
    if finite != computed:
        raise Inconsistent("non-finite values (NaN or inf), yet metrics.json holds test numbers computed from them"
                           if computed else "finite values, yet metrics.json says nothing could be computed "
                                            "from them (test/n_queries null)")
    against_gallery = gallery is not None and computed
    if n_gallery is not None and n_gallery != (gallery if against_gallery else max(n - 1, 0)):
        raise Inconsistent(f"{n} rows" + (f", {gallery} on the gallery side" if against_gallery else "")
                           + f", but metrics.json says test/n_gallery = {n_gallery}")
    if n_queries is not None and n_queries > n - (gallery if against_gallery else 0):
        raise Inconsistent(f"{n} rows, but metrics.json says test/n_queries = {n_queries}")


def missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v)) or (np.isscalar(v) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def norm(v):
    """A hashable, comparable stand-in for a config value: NaN/None -> None, 3.0 -> 3,
    'true' -> True, lists -> tuples, mappings -> sorted JSON (values read back from CSV or W&B
    compare equal)."""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(norm(x) for x in v)
    if missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return int(f) if f.is_integer() else float(f"{f:.12g}")
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def config_keys(df: pd.DataFrame) -> list[str]:
    """Config keys present in ``df`` that define a configuration (seed and run-specific keys excluded)."""
    return [k for k in FIELDS if k in df.columns and k not in RUN_SPECIFIC]


def row_key(df: pd.DataFrame, keys=None) -> pd.Series:
    """Per row, its values of ``keys`` (default ``config_keys(df)``: the row's configuration), each
    ``norm``-ed, as one JSON list: equal exactly where rows agree on every key (group by it)."""
    keys = config_keys(df) if keys is None else list(keys)
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    return df.apply(lambda r: json.dumps([norm(r[k]) for k in keys], default=str), axis=1)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if "/" in str(c) or c in BARE_METRICS]


def matches(df: pd.DataFrame, settings: dict) -> pd.Series:
    """Rows whose config equals ``settings`` on every key (a key the frame lacks counts as its default)."""
    ok = pd.Series(True, index=df.index)
    for k, v in settings.items():
        col = df[k] if k in df.columns else pd.Series([DEFAULTS.get(k)] * len(df), index=df.index)
        target = norm(v)
        ok &= col.map(lambda x: norm(x) == target).astype(bool)
    return ok
