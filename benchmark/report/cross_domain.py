"""The report section "What should have been submitted? — under the domain gap" (issue 17):
same-domain and cross-domain query -> gallery retrieval side by side, from any results folder
holding such runs (experiments/study-cross-domain.yaml).

A configuration is (backbone, remedy, gallery style). Its *remedy* is ``study.recipe``: the training
recipe plus the cross-domain remedies that differ from the default (``train_styles``: style
augmentation, ``query_style``, ``centering``, ``rerank``). The *gap* of a backbone on a style
is the same-domain frozen score minus the cross-domain frozen score (same query -> gallery
protocol, gallery in photos vs rendered); a remedy *closes* (its score - frozen's) / gap of it.
``benchmark choose`` picks, per gallery style, from validation only (whose gallery may be another,
held-out style: ``val_gallery_style``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.report import tables
from benchmark.report.study import backbone_label, recipe
from benchmark.results.schema import Unsupported, missing
from benchmark.results.stats import aggregate

PHOTO = "photo (same-domain)"


def _style(row) -> str:
    style = str(row.get("gallery_style", "none"))
    return PHOTO if style in ("none", "nan") else style


def _query_gallery(df: pd.DataFrame) -> pd.Series:
    """Rows of query -> gallery runs: a gallery style, or an explicit ``query_fraction``."""
    if "gallery_style" not in df.columns:
        return pd.Series(False, index=df.index)
    styled = df["gallery_style"].notna() & df["gallery_style"].astype(str).ne("none")
    fraction = pd.to_numeric(df.get("query_fraction", pd.Series(np.nan, index=df.index)), errors="coerce")
    return styled | fraction.notna()


def present(df: pd.DataFrame) -> bool:
    """Whether ``df`` holds query -> gallery runs (the section is left out of reports without any)."""
    return bool(_query_gallery(df).any())


def cross_domain_configs(df: pd.DataFrame, confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(configurations of the successful query -> gallery runs of the most common protocol, those runs)."""
    ok = df[df.get("status", pd.Series("ok", index=df.index)).eq("ok")]
    if "gallery_style" not in ok.columns:
        raise Unsupported("no cross-domain runs (run experiments/sweeps/study-cross-domain.yaml)")
    runs = ok[_query_gallery(ok)]
    if runs.empty or "test/score" not in runs:
        raise Unsupported("no successful query -> gallery runs (experiments/sweeps/study-cross-domain.yaml)")
    protocol = runs["protocol"].astype(str).value_counts().index[0]  # open-set when the study ran
    runs = runs[runs["protocol"].astype(str) == protocol]
    c = aggregate(runs, confidence)
    c = c.assign(backbone_label=c.apply(backbone_label, axis=1), remedy=c.apply(recipe, axis=1),
                 style=c.apply(_style, axis=1)).reset_index(drop=True)
    # two configurations of one backbone, style and recipe (e.g. two learning rates): the first keeps
    # the recipe's name (the gap reads "frozen"), the others add their configuration's (the figure
    # and the tables key rows by it; duplicates crashed the figure)
    again = c.duplicated(["backbone_label", "style", "remedy"])
    c.loc[again, "remedy"] = c.loc[again, "remedy"] + " (" + c.loc[again, "label"].astype(str) + ")"
    return c, runs


def _run_query_scores(run_dir) -> tuple[np.ndarray, np.ndarray] | None:
    """Each scored test query's own score and identity: saved by the run (``query_scores`` in its
    embeddings.npz), or for older records recomputed from its test embeddings and config
    (``evaluation.query_scores``); None without them or for a same-domain run."""
    from pathlib import Path

    from benchmark.config import load_yaml
    from benchmark.evaluation.evaluate import query_scores

    d = Path(run_dir) if isinstance(run_dir, str) else None
    if d is None or not (d / "embeddings.npz").is_file() or not (d / "config.yaml").is_file():
        return None
    with np.load(d / "embeddings.npz") as z:
        if "sides" not in z.files:
            return None
        labels = z["labels"]
        scores = z["query_scores"] if "query_scores" in z.files else \
            query_scores(z["embeddings"], labels, z["sides"].astype(str), load_yaml(d / "config.yaml"))
    valid = ~np.isnan(scores)
    return scores[valid], labels[valid]


def _same_queries(a: tuple[np.ndarray, np.ndarray] | None, b: tuple[np.ndarray, np.ndarray] | None) -> bool:
    """Whether two per-query score sets were measured on the same queries (their identities in order)."""
    return a is not None and b is not None and np.array_equal(a[1], b[1])


def _config_query_scores(row) -> tuple[np.ndarray, np.ndarray] | None:
    """A configuration's per-query scores, the mean over its seeds' runs (the same queries), if every
    run's recomputation gives its recorded test score (anything else is not the same measurement)."""
    got = [_run_query_scores(d) for d in row.get("run_dirs") or ()]
    if not got or not all(_same_queries(got[0], g) for g in got):
        return None
    scores = np.mean([g[0] for g in got], axis=0)
    return (scores, got[0][1]) if abs(scores.mean() - row["test/score"]) < 1e-6 else None


def paired_gains(c: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
    """``t`` (``gap_table``) plus, for each remedy on a rendered gallery, its gain over the frozen
    backbone on the same gallery and the 95% interval of that gain over a bootstrap of the test
    people (paired: both measured on the same queries; ``metrics.sample_interval``)."""
    from benchmark.evaluation.metrics import sample_interval

    t = t.assign(gain=math.nan, gain_people_ci=math.nan)
    per_query = {i: None for i in c.index}
    for i, r in c.iterrows():
        if r["style"] != PHOTO:
            per_query[i] = _config_query_scores(r)
    for i, r in c.iterrows():
        if r["style"] == PHOTO or r["remedy"] == "frozen" or per_query[i] is None:
            continue
        frozen = c[(c["backbone_label"] == r["backbone_label"]) & (c["style"] == r["style"]) & (c["remedy"] == "frozen")]
        base = per_query[frozen.index[0]] if len(frozen) else None
        if not _same_queries(base, per_query[i]):
            continue
        diff = per_query[i][0] - base[0]
        at = (t["backbone"] == r["backbone_label"]) & (t["gallery"] == r["style"]) & (t["remedy"] == r["remedy"])
        t.loc[at, "gain"] = float(diff.mean())
        t.loc[at, "gain_people_ci"] = sample_interval(diff, per_query[i][1])
    return t


def gap_table(c: pd.DataFrame) -> pd.DataFrame:
    """Backbone x remedy x style: score ± CI, cost, and the share of the gap it closes."""
    rows = []
    for _, r in c.iterrows():
        same = c[(c["backbone_label"] == r["backbone_label"]) & (c["remedy"] == "frozen")]
        photo = same.loc[same["style"] == PHOTO, "test/score"]
        frozen = same.loc[same["style"] == r["style"], "test/score"]
        gap = float(photo.iloc[0] - frozen.iloc[0]) if len(photo) and len(frozen) else math.nan
        closed = (r["test/score"] - frozen.iloc[0]) / gap if gap and not missing(gap) and r["style"] != PHOTO \
            and gap > 0 else math.nan
        rows.append({"backbone": r["backbone_label"], "remedy": r["remedy"], "gallery": r["style"],
                     "val_gallery": str(r.get("val_gallery_style")) if not missing(r.get("val_gallery_style")) else "",
                     "n": int(r["n"]), "test_score": r["test/score"], "test_score_ci": r.get("test/score_ci", math.nan),
                     "test_sample_ci": r.get("test/score_sample_ci", math.nan),
                     "val_score": r.get("val/score", math.nan), "cost_s": r.get("time/cost_s", math.nan),
                     "gap": gap if r["style"] != PHOTO else math.nan, "gap_closed": closed,
                     "n_queries": r.get("test/n_queries", math.nan), "n_gallery": r.get("test/n_gallery", math.nan)})
    t = pd.DataFrame(rows)
    order = {PHOTO: 0}
    return t.sort_values(["backbone", "gallery", "test_score"], key=lambda s: s.map(lambda v: (order.get(v, 1), v))
                         if s.name == "gallery" else s, ascending=[True, True, False], kind="stable").reset_index(drop=True)


def side_by_side(t: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per backbone / remedy, one column per gallery (photo first): score ± CI, seeds, cost
    (each gallery its own: rendering makes a styled run dearer), gap closed."""
    galleries = [PHOTO] + sorted(set(t["gallery"]) - {PHOTO})
    head = ["backbone", "remedy"] + [f"{g} score (cost per run)" for g in galleries]
    rows = []
    for (bb, rem), g in t.groupby(["backbone", "remedy"], sort=True):
        cells = [bb, rem]
        for gal in galleries:
            r = g[g["gallery"] == gal]
            if not len(r):
                cells.append("—")
                continue
            r = r.iloc[0]
            cost = "" if missing(r["cost_s"]) else f", {r['cost_s']:.0f} s"
            people = "" if missing(r["test_sample_ci"]) else f"; test people ±{r['test_sample_ci']:.0f}"
            cell = tables.cell(r["test_score"], r["test_score_ci"], 1) + f" (n={r['n']}{people}{cost})"
            if not missing(r["gap_closed"]) and r["remedy"] != "frozen":
                cell += f", closes {100 * r['gap_closed']:+.0f}% of the gap"
                if not missing(r.get("gain_people_ci", math.nan)):
                    cell += f" ({r['gain']:+.1f} ± {r['gain_people_ci']:.1f} vs frozen, paired over people)"
            cells.append(cell)
        rows.append(cells)
    return head, rows


def reading(t: pd.DataFrame) -> str:
    parts = []
    for bb, g in t.groupby("backbone"):
        photo = g[(g["gallery"] == PHOTO) & (g["remedy"] == "frozen")]
        for style, s in g[g["gallery"] != PHOTO].groupby("gallery"):
            frozen = s[s["remedy"] == "frozen"]
            if len(photo) and len(frozen):
                parts.append(f"{bb} frozen: {photo['test_score'].iloc[0]:.0f} with a photo gallery, "
                             f"{frozen['test_score'].iloc[0]:.0f} with a {style} gallery")
            best = s.loc[s["test_score"].idxmax()]
            if best["remedy"] != "frozen" and not missing(best["gap_closed"]):
                parts.append(f"on {style} the best remedy is {best['remedy']} ({best['test_score']:.0f}, "
                             f"{100 * best['gap_closed']:.0f}% of the gap closed)")
            remedies = s[s["remedy"] != "frozen"]
            if len(frozen) and len(remedies):
                widen = int((remedies["test_score"] < frozen["test_score"].iloc[0]).sum())
                parts.append(f"{widen} of its {len(remedies)} remedies on {style} have a lower mean score than frozen")
    return "; ".join(parts) + "." if parts else "No backbone has both a same-domain and a cross-domain frozen row."


def choices(runs: pd.DataFrame, t: pd.DataFrame) -> list[str]:
    """Per gallery style, what ``benchmark choose`` picks from validation alone, and its test score
    beside the frozen backbone's on the same gallery (``t``: ``gap_table``)."""
    from benchmark.choose import choose

    out = []
    for style, g in runs.groupby(runs["gallery_style"].astype(str)):
        try:
            picked = choose(g)
        except Exception as exc:  # one style without a usable validation score costs only its line
            out.append(f"- gallery {style}: no choice ({exc})")
            continue
        test = pd.to_numeric(g[g["run_id"].astype(str).isin(picked["run_ids"])]["test/score"], errors="coerce")
        cfg = pd.Series(picked["config"])
        val_style = _style({"gallery_style": cfg.get("val_gallery_style") or style})
        gallery = _style({"gallery_style": style})
        frozen = t[(t["gallery"] == gallery) & (t["backbone"] == backbone_label(cfg)) & (t["remedy"] == "frozen")]
        beside = f" (frozen {backbone_label(cfg)}: {frozen['test_score'].iloc[0]:.1f})" if len(frozen) else ""
        out.append(f"- gallery **{gallery}** (validated on a {val_style} gallery): "
                   f"`benchmark choose` picks **{picked['experiment']}** ({backbone_label(cfg)} / {recipe(cfg)}; "
                   f"val {picked['mean']:.1f}, n={picked['n_seeds']}); its test score, read only afterwards: "
                   f"{test.mean():.1f}{beside}")
    return out


def gap_figure(t: pd.DataFrame):
    """Rows: backbones; columns: rendered gallery styles. Each remedy's test score (± 95% CI, the same
    remedy order in a row) between the frozen backbone on that style (where the gap starts, dotted) and
    on photos (where it would be closed, dashed)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from benchmark.report.figures import _style as figure_style
    from benchmark.report.study import _short

    rendered = t[t["gallery"] != PHOTO]
    if rendered.empty:
        raise Unsupported("no cross-domain (rendered gallery) configurations")
    backbones, galleries = sorted(set(rendered["backbone"])), sorted(set(rendered["gallery"]))
    orders = {bb: sorted(set(rendered.loc[rendered["backbone"] == bb, "remedy"]), key=lambda r: (r != "frozen", r))
              for bb in backbones}
    heights = [len(orders[bb]) for bb in backbones]
    with figure_style():
        fig = Figure(figsize=(max(7.5, 3.6 + 3.4 * len(galleries)), 0.9 + 0.32 * sum(heights) + 0.5 * len(backbones)),
                     layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(backbones), len(galleries), squeeze=False,
                                          gridspec_kw={"height_ratios": heights}))
    for row, bb in zip(axes, backbones):
        photo = t[(t["backbone"] == bb) & (t["gallery"] == PHOTO) & (t["remedy"] == "frozen")]["test_score"]
        for col, (ax, st) in enumerate(zip(row, galleries)):
            g = rendered[(rendered["backbone"] == bb) & (rendered["gallery"] == st)].set_index("remedy")
            g = g.reindex(orders[bb])
            frozen = g["test_score"].get("frozen", np.nan)
            colours = ["#7f7f7f" if r == "frozen" else "#2a7ab9" if v >= frozen else "#c0504d"
                       for r, v in zip(g.index, g["test_score"])]
            ax.barh(range(len(g)), g["test_score"].fillna(0), xerr=np.nan_to_num(g["test_score_ci"].to_numpy(float)),
                    color=colours, capsize=2)
            ax.set_yticks(range(len(g)), [_short(r) for r in g.index] if col == 0 else [""] * len(g), fontsize=7)
            ax.invert_yaxis()
            if not missing(frozen):
                ax.axvline(frozen, color="black", linestyle=":", linewidth=1)
            if len(photo):
                ax.axvline(float(photo.iloc[0]), color="black", linestyle="--", linewidth=1)
            ax.set_xlim(0, 1025)  # a line at 1000 (SFace on photos) stays visible
            ax.set_title(f"{bb} · {st} gallery", fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
        row[0].set_ylabel("remedy", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("test score (0–1000)", fontsize=8)
    fig.legend(handles=[Line2D([], [], color="black", linestyle=":", label="frozen on that style"),
                        Line2D([], [], color="black", linestyle="--", label="frozen on photos (no gap)")],
               loc="outside lower center", ncols=2, fontsize=7)
    fig.suptitle("Photo queries against a rendered gallery: each remedy's test score\n"
                 "(blue: at or above frozen, red: below)", fontsize=10)
    return fig


def style_strip(image_path: str, style_args: dict | None = None):
    """One real image and its render in every style (what the gap looks like)."""
    from matplotlib.figure import Figure

    from benchmark.features import styles
    from benchmark.features.views import decode
    from benchmark.report.figures import _style as figure_style

    img = decode(image_path)
    names = ["none", *styles.STYLES]
    with figure_style():  # an object-oriented Figure like every other: no pyplot figure left open per report
        fig = Figure(figsize=(1.6 * len(names), 2.1), layout="constrained")
        axes = fig.subplots(1, len(names))
    for ax, name in zip(axes, names):
        ax.imshow(styles.render(img, name, (style_args or {}).get(name)).permute(1, 2, 0).numpy())
        ax.set_title("photo (query)" if name == "none" else name, fontsize=8)
        ax.axis("off")
    return fig


def section(w, df: pd.DataFrame, confidence: float = 0.95) -> None:
    """Write the section into the report writer ``w`` (``build._Writer``)."""
    c, runs = cross_domain_configs(df, confidence)
    t = paired_gains(c, gap_table(c))
    w.reading(reading(t))
    head, rows = side_by_side(t)
    w.table("cross_domain_gap", t, tables.markdown(head, rows), metrics=False)  # its own facts, below
    facts = t.groupby("gallery")[["n_queries", "n_gallery"]].first()
    w.lines += ["", "<sub>Measured on (test, query -> gallery): " + "; ".join(
        f"{g}: {r['n_queries']:.0f} queries x {r['n_gallery']:.0f} gallery items" for g, r in facts.iterrows()) + ".</sub>"]
    w.lines += ["", f"Query -> gallery retrieval ({runs['protocol'].iloc[0]}): queries are photographs, the gallery "
                    "the same people's other images, as photos (same-domain) or rendered in a style; mean ± 95% CI "
                    "over seeds (n); *test people ±x*: the 95% interval of the score when the test people are drawn "
                    "again (a bootstrap over identities, `score_sample_ci`), the uncertainty that seeds cannot show "
                    "(every row is measured on the same people, so a difference between two rows is more certain "
                    "than either interval: *± x vs frozen, paired over people* is the 95% interval of the gain "
                    "over the frozen backbone when the people are drawn again, from the runs' saved embeddings; "
                    "for a trained remedy it is the seed-mean's, seed noise aside). *Gap* = the backbone's frozen "
                    "same-domain score minus its frozen score on that style; *closes x%* = (remedy - frozen) / gap "
                    "on that style."]
    w.figure("cross_domain_gap", gap_figure(t), "Each remedy's test score per backbone and gallery style, between "
             "the frozen backbone on that style and on photos")
    first = next((d for d in c.get("best_run_dir", []) if isinstance(d, str)), None)
    if first:
        from pathlib import Path

        import yaml

        with np.load(Path(first) / "embeddings.npz") as z:
            path = str(z["paths"][0])
        cfg = yaml.safe_load((Path(first) / "config.yaml").read_text())
        if Path(path).exists():
            w.figure("cross_domain_styles", style_strip(path, cfg.get("style_args")),
                     "One real test image (the query domain) and its render in every style (gallery domains)")
    w.lines += ["", "**Choice, from validation alone:**", *choices(runs, t)]
