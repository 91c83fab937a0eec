"""The report's Figures 1-6 as matplotlib Figures (object-oriented API, Agg canvas: no display, no
pyplot state). Each function draws what its report section built (a ``tables`` table; Figure 6: a
``retrieval_example``), so a figure shows the numbers written beside it, and returns the Figure, or
raises ``Unsupported``; ``save`` writes a PNG. One colour per architecture everywhere
(``common.palette``); error bars are 95% confidence intervals over seeds where a configuration has
2+ seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from benchmark.report.common import arch_name, fmt_num, palette
from benchmark.results.schema import Unsupported, missing

SCORE_LABEL = "Test score (points, 0–1000)"
TIME_LABEL = "Cost of the configuration (s): features + training + evaluation"


def _style():
    import seaborn as sns

    return sns.axes_style("whitegrid", {"grid.linestyle": ":"})


def _figure(w: float, h: float, ncols: int = 1, **kw) -> tuple[Figure, list]:
    with _style():
        fig = Figure(figsize=(w, h), layout="constrained")
        axes = fig.subplots(1, ncols, **kw)
    return fig, list(np.atleast_1d(axes))


def _err(v):
    return None if v is None or all(missing(x) for x in np.atleast_1d(v)) else \
        np.nan_to_num(np.asarray(v, dtype=float), nan=0.0)


def save(fig: Figure, path: Path | str, dpi: int = 150) -> Path:
    from benchmark.files import atomic_path

    with atomic_path(path) as tmp:  # an interrupted report leaves no half-written PNG
        fig.savefig(tmp, dpi=dpi, facecolor="white", format="png")
    return Path(path)


# -- Figure 1 -----------------------------------------------------------------------------------------
def figure1_lr(t: pd.DataFrame) -> Figure:
    """Test score vs learning rate (log x) of ``tables.lr_sweep``, one line per architecture at the
    baseline epochs (solid); other sweeps (e.g. 5 epochs) dashed in the same colour."""
    pal = palette(t["backbone"])
    fig, (ax,) = _figure(7.5, 4.8)
    for line, g in t.groupby("line", sort=False):
        main = bool(g["main"].iloc[0])
        ax.errorbar(g["lr"], g["test/score"], yerr=_err(g["test/score_ci"]), label=line,
                    color=pal[g["backbone"].iloc[0]], linestyle="-" if main else "--", marker="o" if main else "s",
                    markersize=6 if main else 5, linewidth=2 if main else 1.3, alpha=1 if main else 0.75, capsize=3)
    lrs = sorted(t["lr"].unique())
    ax.set_xscale("log")
    ax.set_xticks(lrs, [fmt_num(v) for v in lrs])
    ax.set_xticks([], minor=True)
    ax.set_xlim(min(lrs) / 1.6, max(lrs) * 1.6)
    ax.set_xlabel("Learning rate (Adam, log scale)")
    ax.set_ylabel(SCORE_LABEL)
    ax.set_title("Figure 1. Learning-rate impact on competition score")
    ax.legend(title="Architecture (solid: baseline epochs)", fontsize=9, title_fontsize=9, loc="best")
    return fig


# -- Figure 2 -----------------------------------------------------------------------------------------
def figure2_epochs(t: pd.DataFrame, hist: pd.DataFrame) -> Figure:
    """(a) test score vs training epochs for the epoch sweep ``t`` (``tables.epoch_sweep``); (b)
    validation score per epoch from its ``hist`` (``tables.histories``: seed means); (c) train and
    validation loss of the longest one. Panels (b)-(c) are left out when no run folder has a history."""
    has_hist = not hist.empty and "val/score" in hist.columns
    fig, axes = _figure(15 if has_hist else 6.5, 4.6, 3 if has_hist else 1)
    color = palette([t["backbone"].iloc[0]])[t["backbone"].iloc[0]]
    ax = axes[0]
    ax.errorbar(t["epochs"], t["test/score"], yerr=_err(t["test/score_ci"]), color=color, marker="o",
                linewidth=2, capsize=3, label=t["family"].iloc[0])
    for i, (x, y) in enumerate(zip(t["epochs"], t["test/score"])):
        last = i == len(t) - 1
        ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(-7 if last else 7, 3),
                    ha="right" if last else "left", va="bottom",
                    fontsize=9, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    peak = t.loc[t["test/score"].idxmax()]
    ax.axvline(peak["epochs"], color="grey", linestyle=":", linewidth=1, label=f"peak: {peak['epochs']:g} epochs")
    ax.set_xticks(sorted(t["epochs"].unique()))
    ax.margins(x=0.12)
    ax.set_xlabel("Training epochs (budget)")
    ax.set_ylabel(SCORE_LABEL)
    ax.set_title("(a) Test score vs epochs", fontsize=11)
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="lower right")
    if has_hist:
        import seaborn as sns

        budgets = dict(zip(t["config"], t["epochs"]))
        configs_h = [c for c in t["config"] if c in set(hist["config"])]
        # one hue (the architecture's), darker for longer budgets; markers tell the lines apart too
        shades = sns.light_palette(color, n_colors=2 * len(configs_h) + 1)[-len(configs_h):] \
            if len(configs_h) > 1 else [color]
        markers = "ovs^DP*X"
        ax = axes[1]
        # runs of one recipe share their first epochs exactly: dodge them sideways so none hides another
        dodge = np.linspace(-0.12, 0.12, len(configs_h)) if len(configs_h) > 1 else [0.0]
        for i, (shade, c) in enumerate(zip(shades, configs_h)):
            h = hist[hist["config"] == c]
            ax.plot(h["epoch"] + dodge[i], h["val/score"], marker=markers[i % len(markers)], color=shade,
                    linewidth=1.8, markeredgecolor="black", markeredgewidth=0.4, label=f"{budgets[c]:g}-epoch run ({c})")
        ax.set_xticks(sorted(hist["epoch"].unique()))
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Validation score (points, 0–1000)")
        ax.set_title("(b) Validation score per epoch" + (" (runs offset sideways)" if len(configs_h) > 1 else ""),
                     fontsize=11)
        ax.legend(fontsize=8, loc="best")
        ax = axes[2]
        longest = max(configs_h, key=lambda c: budgets[c])
        h = hist[hist["config"] == longest]
        for col, style, name in (("train/loss", "-", "train loss"), ("val/loss", "--", "validation loss")):
            if col in h.columns:
                ax.plot(h["epoch"], h[col], linestyle=style, marker="o", color=color, label=name)
        ax.set_xticks(sorted(h["epoch"].unique()))
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Cross-entropy loss")
        ax.set_title(f"(c) Losses of the {budgets[longest]:g}-epoch run", fontsize=11)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Figure 2. {t['family'].iloc[0]}: training duration", fontsize=12)
    return fig


# -- Figure 3 -----------------------------------------------------------------------------------------
def figure3_ablations(t: pd.DataFrame) -> Figure:
    """Horizontal bars of ``tables.ablations``: change of test score when one design choice is flipped
    (batch size, normalization, augmentation, ...), relative to the reference configuration; 95% CI
    of the difference as error bars where both have seeds."""
    pal = palette(t["backbone"])
    several_refs = t["reference"].nunique() > 1
    labels = [f"{r['ablation']}\n(vs {r['reference']})" if several_refs else r["ablation"] for _, r in t.iterrows()]
    fig, (ax,) = _figure(9, max(2.8, 1.2 + 0.75 * len(t) + (0.3 * len(t) if several_refs else 0)))
    y = np.arange(len(t))
    ax.barh(y, t["delta"], xerr=_err(t["delta_ci"]), color=[pal[b] for b in t["backbone"]], capsize=4,
            height=0.6, edgecolor="black", linewidth=0.5)
    ax.set_yticks(y, labels)
    ax.set_ylim(len(t) - 0.3, -0.7)  # first row on top; thin bars even when there is only one
    ax.axvline(0, color="black", linewidth=1)
    ci = np.nan_to_num(t["delta_ci"].to_numpy(dtype=float))
    lo, hi = min(0.0, float((t["delta"] - ci).min())), max(0.0, float((t["delta"] + ci).max()))
    span = max(hi - lo, 1.0)  # at least one point wide: all-zero deltas must not zoom to rounding noise
    for yi, (_, r) in zip(y, t.iterrows()):
        half = float(np.nan_to_num(r["delta_ci"]))
        x = r["delta"] + (half if r["delta"] >= 0 else -half)
        ax.annotate(f"{r['delta']:+.1f} ({r['delta_pct']:+.1f}%)", (x, yi), xytext=(5 if r["delta"] >= 0 else -5, 0),
                    textcoords="offset points", va="center", ha="left" if r["delta"] >= 0 else "right", fontsize=9)
    # room for the value labels beyond the bars (and their error bars) on each side
    ax.set_xlim(lo - (0.35 * span if (t["delta"] < 0).any() else 0.05 * span),
                hi + (0.35 * span if (t["delta"] > 0).any() else 0.05 * span))
    ax.set_xlabel("Δ test score vs reference configuration (points)" +
                  ("\nerror bars: 95% CI of the difference (Welch t)" if t["delta_ci"].notna().any() else ""))
    ax.set_ylabel("Design choice changed")
    ref = t["reference"].iloc[0]
    ax.set_title("Figure 3. Ablations: impact of design choices" +
                 ("" if several_refs else f"\n(reference: {ref}, score {t['reference_score'].iloc[0]:.1f})"),
                 fontsize=11)
    ax.legend(handles=[Patch(color=pal[b], label=arch_name(b)) for b in dict.fromkeys(t["backbone"])],
              title="Architecture", fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# -- Figure 4 -----------------------------------------------------------------------------------------
def figure4_efficiency(t: pd.DataFrame, configs: pd.DataFrame) -> Figure:
    """Bars: mean score per minute per architecture over its configurations (``tables.efficiency``);
    dots: each of the ``configs`` (with 95% CI over seeds where it has them)."""
    pal = palette(t["backbone"])
    fig, (ax,) = _figure(1.6 * len(t) + 6.0, 4.8)
    x = np.arange(len(t))
    ax.bar(x, t["score_per_minute"], color=[pal[b] for b in t["backbone"]], width=0.6, alpha=0.85,
           edgecolor="black", linewidth=0.5)
    rng = np.random.default_rng(0)
    for xi, b in zip(x, t["backbone"]):
        g = configs[(configs["backbone"].map(str) == b)].dropna(subset=["score_per_minute"])
        jitter = rng.uniform(-0.18, 0.18, len(g))
        ax.errorbar(xi + jitter, g["score_per_minute"], yerr=_err(g.get("score_per_minute_ci")), fmt="o",
                    color="black", markersize=4, alpha=0.7, capsize=2, linewidth=0.8)
    ax.set_xlim(-0.7, len(t) - 0.3)
    ax.set_xticks(x, [f"{a}\nmean {v:.1f} / min" for a, v in zip(t["architecture"], t["score_per_minute"])])
    ax.set_xlabel("Architecture")
    ax.set_ylabel("Test score per minute of cost (points / min)")
    ax.set_title("Figure 4. Cost efficiency: test score per minute of cost", fontsize=11)
    ax.margins(y=0.12)
    handles = [Patch(color=pal[b], label=f"{a} (mean of {n} config{'s' if n != 1 else ''})")
               for b, a, n in zip(t["backbone"], t["architecture"], t["n_configs"])]
    handles.append(Line2D([], [], marker="o", color="black", linestyle="", markersize=4, label="one configuration"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# -- Figure 5 -----------------------------------------------------------------------------------------
def figure5_tradeoff(t: pd.DataFrame) -> Figure:
    """Test score vs time/cost_s of ``tables.pareto``, one colour per architecture; the Pareto front
    (dashed) links the configurations no other one beats at equal or lower cost."""
    pal = palette(t["backbone"])
    fig, (ax,) = _figure(9.5, 5.2)
    from benchmark.report.common import arch_order

    for b in arch_order(t["backbone"]):
        g = t[t["backbone"] == b]
        ax.errorbar(g["time/cost_s"], g["test/score"], xerr=_err(g["time/cost_s_ci"]), yerr=_err(g["test/score_ci"]),
                    fmt="o", color=pal[b], markersize=7, capsize=2, alpha=0.9, label=arch_name(b),
                    markeredgecolor="black", markeredgewidth=0.5)
    front = t[t["pareto"]]
    # a ring around each Pareto-optimal point, linked by a dashed step only when there are two or more
    ax.plot(front["time/cost_s"], front["test/score"], drawstyle="steps-post", color="grey",
            linestyle="--" if len(front) > 1 else "none", linewidth=1.2, marker="o", markersize=13,
            markerfacecolor="none", markeredgecolor="grey",
            label="Pareto front" if len(front) > 1 else "Pareto-optimal (no other is cheaper and better)")
    lo, hi = t["time/cost_s"].min(), t["time/cost_s"].max()
    log = hi / max(lo, 1e-9) > 10
    if not log:
        ax.set_xlim(0, hi * 1.12)
    else:
        ax.set_xscale("log")
        ticks = [m * 10 ** e for e in range(-1, 7) for m in (1, 2, 5) if lo / 1.5 <= m * 10 ** e <= hi * 1.5]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.set_xticks([], minor=True)
    for _, r in front.iterrows():
        x = r["time/cost_s"]
        frac = (np.log(x / lo) / np.log(hi / lo)) if log else x / (hi * 1.12)
        right = frac > 0.7  # labels near the right edge go to the left of their point
        ax.annotate(r["config"], (x, r["test/score"]), xytext=(-6 if right else 5, 6), textcoords="offset points",
                    fontsize=7.5, color="dimgrey", ha="right" if right else "left")
    ax.set_xlabel(TIME_LABEL + (" — log scale" if log else ""))
    ax.set_ylabel(SCORE_LABEL)
    ax.set_title("Figure 5. Test score vs cost trade-off", fontsize=11)
    ax.margins(x=0.08, y=0.08)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # architectures and the front
    return fig


# -- Figure 6 -----------------------------------------------------------------------------------------
def retrieval_example(configs: pd.DataFrame, k: int = 10, seed: int = 0) -> dict:
    """One query of the best configuration's best run and its top-``k`` (leave-one-out over the test
    split, from ``embeddings.npz``): ``config``, ``run_dir``, ``best`` (is it the best configuration),
    ``query`` (path, identity), ``results`` [(path, identity, correct)], ``hits``, ``possible`` (the most
    hits there can be: same-identity images, at most k) and ``possible_total`` (all of them)."""
    from benchmark.examples import pick_queries, top_k
    from benchmark.features.styles import name_of

    if "best_run_dir" not in configs.columns or configs["best_run_dir"].map(missing).all():
        raise Unsupported("no run folders in these results (e.g. pulled from W&B), so no embeddings or images")
    c = configs.dropna(subset=["test/score"]).sort_values("test/score", ascending=False)
    unreadable = None
    for rank, (_, r) in enumerate(c.iterrows()):
        d = r["best_run_dir"]
        if missing(d) or not (Path(d) / "embeddings.npz").is_file():
            continue
        try:
            with np.load(Path(d) / "embeddings.npz", allow_pickle=False) as z:
                emb, labels = z["embeddings"], z["labels"]
                identities, paths = z["identities"].astype(str), z["paths"].astype(str)
                sides = z["sides"].astype(str) if "sides" in z.files else None
        except Exception as exc:  # a truncated or foreign file: try the next configuration
            unreadable = unreadable or f"{d}/embeddings.npz is unreadable ({type(exc).__name__}: {exc})"
            continue
        if len(emb) < 2:
            raise Unsupported(f"{d}/embeddings.npz holds fewer than 2 test images")
        q = pick_queries(labels, 1, seed, sides)[0]
        ranked = top_k(emb, labels, [q], k, sides)[0]
        findable = labels == labels[q] if sides is None else (labels == labels[q]) & (sides == "gallery")
        others = int(findable.sum()) - int(sides is None)  # same-identity images the query can find
        need = [paths[q]] + [paths[i] for i, _ in ranked]
        absent = [p for p in need if not Path(p).is_file()]
        if absent:
            raise Unsupported(f"the test images of {r['label']} are not on this machine (e.g. {absent[0]})")
        seen = _item_styles(d, sides, len(emb))
        return {"config": r["label"], "run_dir": d, "best": rank == 0, "query": (paths[q], identities[q], seen[q]),
                "results": [(paths[i], identities[i], ok, seen[i]) for i, ok in ranked],
                "hits": sum(ok for _, ok in ranked), "possible": min(others, len(ranked)), "possible_total": others,
                "gallery_style": next((name_of(seen[i]) for i, _ in ranked), "none") if sides is not None else None}
    raise Unsupported(unreadable or "no run folder of these results has embeddings.npz")


def _item_styles(run_dir, sides, n: int) -> list[str | None]:
    """The style (``styles.tag``) each of the ``n`` saved test items was evaluated in, by its run's
    config (photos for same-domain runs and records without a config)."""
    path = Path(run_dir) / "config.yaml"
    if sides is None or not path.is_file():
        return [None] * n
    from benchmark.config import load_yaml
    from benchmark.pipeline import row_styles

    return row_styles(pd.DataFrame({"side": sides, "split": "test"}), load_yaml(path))


def figure6_example(example: dict) -> Figure:
    """The query (left) and its top-k retrieved test images, correct identity in green, wrong in red."""
    from benchmark.examples import thumbnail

    res = example["results"]
    fig, axes = _figure(1.45 * (len(res) + 1) + 0.4, 2.6, len(res) + 1)
    qpath, qid, qstyle = example["query"]
    axes[0].imshow(thumbnail(qpath, size=160, style=qstyle))
    axes[0].set_title(f"QUERY\n{_short(qid)}", fontsize=8, fontweight="bold")
    for r, (ax, (path, ident, ok, style)) in enumerate(zip(axes[1:], res), 1):
        ax.imshow(thumbnail(path, ok, size=160, style=style))
        ax.set_title(f"#{r} {'✓' if ok else '✗'}\n{_short(ident)}", fontsize=8,
                     color="#28a03c" if ok else "#c82828")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for s in ax.spines.values():
            s.set_visible(False)
    fig.suptitle(f"Figure 6. Query and its top-{len(res)} retrieved images: {example['hits']} of {example['possible']} "
                 f"possible correct (green border) — {example['config']}", fontsize=10)
    return fig


def _short(s: str, n: int = 16) -> str:
    s = str(s).replace("_", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


# -- Search figure (issue 18) ---------------------------------------------------------------------------
def figure_search(progress: pd.DataFrame, metric: str = "val/score") -> Figure:
    """Best-so-far validation score of each search against runs (left) and minutes (right): one colour
    per method, one line style per search seed; the legend gives each search's final pick and the test
    score of that run. Stopped runs (Hyperband) are marked with x on the runs axis."""
    if progress.empty or progress["best_val"].isna().all():
        raise Unsupported("no search has a finished run yet")
    import seaborn as sns

    methods = sorted(progress["method"].unique())
    palette_ = sns.color_palette("colorblind", 10).as_hex()
    colors = dict(zip(methods, [palette_[i] for i in (0, 4, 2, 3, 1, 5, 6, 8, 9)] * 3))  # far-apart hues first
    seeds = sorted(progress["search_seed"].map(str).unique())
    styles = dict(zip(seeds, ["-", "--", ":", "-."] * 4))
    fig, (ax_runs, ax_min) = _figure(11, 4.6, ncols=2, sharey=True)
    for label, g in progress.groupby("search", sort=True):
        last = g.iloc[-1]
        color, style = colors[last["method"]], styles[str(last["search_seed"])]
        legend = f"{label}: val {last['best_val']:.1f}, test {last['best_test']:.1f}"
        ax_runs.step(g["run"], g["best_val"], where="post", color=color, linestyle=style, label=legend)
        ax_min.step(g["minutes"], g["best_val"], where="post", color=color, linestyle=style)
        stopped = g[g["status"] == "stopped"]
        ax_runs.plot(stopped["run"], stopped["best_val"], "x", color=color, markersize=5)
    from matplotlib.ticker import MaxNLocator

    ax_runs.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_runs.set(xlabel="Runs started by the search", ylabel=f"Best {metric} so far (finished runs)")
    ax_min.set(xlabel="Minutes since the search started (at each run's end)")
    fig.legend(*ax_runs.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8,
               title="search: its best validation score, and that run's test score", title_fontsize=8)
    fig.suptitle("Search: best validation score found, per method (x = a run stopped early)", fontsize=10)
    return fig
