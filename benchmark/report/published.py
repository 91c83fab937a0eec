"""The reproduction table: the student report's published numbers (``published.yaml``) beside ours.

Each published number comes with what it measures (an experiment's metric, a change or ratio
between two experiments, or an aggregate over an architecture's configurations); ``reproduction``
computes our counterpart from the configurations of one setting and the difference.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from benchmark.results.schema import Unsupported, missing
from benchmark.report.tables import markdown

PUBLISHED = Path(__file__).with_name("published.yaml")


def load(path: Path | str | None = None) -> pd.DataFrame:
    """One row per published number: ``ref, item, published, spec, note`` (tables are expanded
    into one ``value`` statement per cell)."""
    doc = yaml.safe_load(Path(path or PUBLISHED).read_text())
    rows = []
    for tab in doc.get("tables") or []:
        units = tab.get("units") or {}
        for row in tab["rows"]:
            for metric, name, value in zip(tab["metrics"], tab["names"], row["values"]):
                operand = {"experiment": row["experiment"], "metric": metric}
                if metric in units:
                    operand["unit"] = units[metric]
                rows.append({"ref": tab["ref"], "item": f"{row['label']}: {name}", "published": float(value),
                             "spec": {"kind": "value", "of": operand}, "note": row.get("note", "")})
    for st in doc.get("statements") or []:
        spec = {k: v for k, v in st.items() if k not in ("ref", "item", "published", "note")}
        rows.append({"ref": st["ref"], "item": st["item"], "published": float(st["published"]), "spec": spec,
                     "note": st.get("note", "")})
    return pd.DataFrame(rows, columns=["ref", "item", "published", "spec", "note"])


class _Missing(Exception):
    pass


def _operand(op: dict, configs: pd.DataFrame) -> float:
    metric = op.get("metric", "test/score")
    if metric not in configs.columns:
        raise _Missing(f"no {metric} in the results")
    if "experiment" in op:
        hit = configs[configs["experiment"].map(str) == op["experiment"]] if "experiment" in configs else configs[:0]
        if hit.empty:
            raise _Missing(f"{op['experiment']} not in the results")
        value = float(hit.sort_values("n", ascending=False).iloc[0][metric])
    else:
        hit = configs[configs["backbone"].map(str) == op["backbone"]].dropna(subset=[metric])
        if hit.empty:
            raise _Missing(f"no {op['backbone']} configuration in the results")
        value = float(hit[metric].agg(op.get("agg", "mean")))
    if missing(value):
        raise _Missing(f"{metric} missing")
    return value / 60 if op.get("unit") == "min" else value


def evaluate(spec: dict, configs: pd.DataFrame) -> float:
    """Our counterpart of one published number; raises ``_Missing`` with the reason."""
    kind = spec.get("kind", "value")
    if kind == "value":
        return _operand(spec["of"], configs)
    if kind == "change":
        a, b = _operand(spec["from"], configs), _operand(spec["to"], configs)
        return 100 * (b - a) / a if spec.get("percent") else b - a
    if kind == "ratio":
        a, b = _operand(spec["num"], configs), _operand(spec["den"], configs)
        return (100 if spec.get("percent") else 1) * a / b
    raise ValueError(f"unknown kind {kind!r} in published.yaml")


def reproduction(configs: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """``ref, item, published, ours, diff`` (ours − published), ``diff_pct`` (of |published|), ``note``."""
    published = load() if published is None else published
    rows = []
    for _, p in published.iterrows():
        note = p["note"] or ""
        try:
            ours = evaluate(p["spec"], configs)
        except _Missing as exc:
            ours, note = math.nan, "; ".join(x for x in (note, str(exc)) if x)
        diff = ours - p["published"]
        rows.append({"ref": p["ref"], "item": p["item"], "published": p["published"], "ours": ours, "diff": diff,
                     "diff_pct": 100 * diff / abs(p["published"]) if p["published"] else math.nan, "note": note})
    t = pd.DataFrame(rows)
    if t.empty or t["ours"].isna().all():
        raise Unsupported("none of the report's experiments (experiments/report.yaml) are in these results")
    return t


def read_reproduction(t: pd.DataFrame, tolerance_pct: float = 5.0) -> str:
    have = t.dropna(subset=["ours"])
    close = have[have["diff_pct"].abs() <= tolerance_pct]
    worst = have.loc[have["diff_pct"].abs().idxmax()]
    return (f"{len(have)} of {len(t)} published numbers have a counterpart in these results; {len(close)} agree "
            f"within ±{tolerance_pct:g}% (median |difference| {have['diff_pct'].abs().median():.1f}%); the largest "
            f"gap is {worst['ref']} {worst['item']}: published {worst['published']:g}, ours {worst['ours']:.3g}.")


def reproduction_markdown(t: pd.DataFrame) -> str:
    def num(v, ref):
        if missing(v):
            return "–"
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"

    rows = [[r["ref"], r["item"], num(r["published"], r), num(r["ours"], r),
             "–" if missing(r["diff"]) else f"{r['diff']:+.3f}" if abs(r["published"]) < 1 else f"{r['diff']:+.1f}",
             "–" if missing(r["diff_pct"]) else f"{r['diff_pct']:+.1f}%", r["note"]] for _, r in t.iterrows()]
    return markdown(["Reference", "Number", "Published", "Ours", "Difference", "Difference %", "Note"], rows)
