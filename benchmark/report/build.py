"""``build_report``: every table and figure of the student report regenerated from a results set,
written as CSV + Markdown tables, PNG figures and one ``report.md`` with a one-line reading of each.

Whatever a results set cannot support is skipped with a line saying why; nothing here raises on
thin or odd results (an unexpected error in one section is reported in that section and the
others are still written). The folder is built beside the old report and swapped in whole
(``benchmark.files.replaced_folder``): an interrupted build leaves the old report as it was.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.files import replaced_folder, write_atomic
from benchmark.report import cross_domain, figures, label_free, published as pub, study, tables
from benchmark.report.results import ReportData, prepare
from benchmark.results.schema import Unsupported, matches
from benchmark.results.stats import SEPARABILITY_RULE, pooled_sd, protocol_audit


@dataclass(frozen=True)
class Inputs:
    """What a section reads: ``data``, the prepared results, and ``df``, the results as given (the
    study, cross-domain and search sections look beyond the chosen setting); ``published``: another
    published-numbers YAML (None: the package's)."""
    df: pd.DataFrame
    data: ReportData
    published: Path | str | None


@dataclass(frozen=True)
class Section:
    """One ``## title`` of the report: ``render`` writes it; ``applies`` (None: always) says whether
    these results have such a section at all (a skipped section says why, an absent one is not there)."""
    title: str
    applies: Callable[[Inputs], bool] | None
    render: Callable[[_Writer, Inputs], None]


#: the report's sections, in report order (registered by ``_section`` below ``build_report``)
SECTIONS: list[Section] = []


def _section(title: str, applies: Callable[[Inputs], bool] | None = None):
    """Register the decorated render as the report's next section."""
    def register(render):
        SECTIONS.append(Section(title, applies, render))
        return render
    return register


#: what a report folder holds: the report, rebuilt whole, and what ``benchmark report`` puts beside it
#: before the build, carried into the new folder (``--log-wandb``: W&B's run folder, live during the
#: build; ``--from-wandb``: the runs' fetched histories)
REPORT_ENTRIES, REPORT_KEEPS = ("report.md", "tables", "figures"), ("wandb", "wandb-history")


class _Writer:
    """Writes one report into ``out_dir`` (the new folder being built) and keeps its Markdown lines."""

    def __init__(self, out_dir: Path):
        self.out = out_dir
        self.lines: list[str] = []
        self.logged: dict = {}
        #: what the metrics are measured on (``tables.measured_on``), shown beside every metric table
        self.measured: str | None = None

    def table(self, name: str, df: pd.DataFrame, md: str, metrics: bool = True) -> None:
        """Write ``tables/<name>.csv`` and ``.md``, add the Markdown to the report, log it."""
        df = df.drop(columns=[c for c in df.columns if df[c].map(lambda v: isinstance(v, tuple)).any()])
        self.csv(name, df)
        write_atomic(self.out / "tables" / f"{name}.md", md + "\n")
        self.lines += ["", md, "", f"<sub>Data: [tables/{name}.csv](tables/{name}.csv)</sub>"]
        if metrics and self.measured:
            self.lines += ["", f"<sub>{self.measured}</sub>"]

    def csv(self, name: str, df: pd.DataFrame) -> None:
        """Write ``tables/<name>.csv`` only (the report links to it), log it."""
        write_atomic(_tables_dir(self.out) / f"{name}.csv", df.to_csv(index=False))
        self.logged[name] = df

    def figure(self, name: str, fig, caption: str) -> None:
        path = figures.save(fig, self.out / "figures" / f"{name}.png")
        self.lines += ["", f"![{caption}](figures/{name}.png)"]
        self.logged[name] = path

    def reading(self, text: str) -> None:
        self.lines += ["", f"**Reading:** {text}"]

    def section(self, s: Section, r: Inputs) -> None:
        self.lines += ["", f"## {s.title}"]
        try:
            s.render(self, r)
        except Unsupported as exc:
            self.lines += ["", f"*Skipped: {exc}.*"]
        except Exception as exc:  # one broken section must not cost the rest of the report
            warnings.warn(f"report section {s.title!r} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self.lines += ["", f"*Could not be produced ({type(exc).__name__}: {exc}); the other sections are "
                               "unaffected.*"]


def _overview(data: ReportData, n_total: int) -> list[str]:
    ca = data.configs_all
    n_ok, n_failed, n_stopped = len(data.runs), len(data.failed), len(data.stopped)
    lines = [f"Built from **{n_total} runs**: {n_ok} successful, "
             + (f"{n_stopped} stopped early by the sweep's early termination (metrics at the stop: counted in "
                "the [search section](#search-best-configuration-found-per-method), excluded from every "
                "statistic), " if n_stopped else "")
             + f"{n_failed} failed"
             + (" (listed under [Failed runs](#failed-runs) and excluded from every statistic)." if n_failed else ".")]
    if len(ca):
        rep = ca[ca["n"] > 1]
        protos = ca["protocol"].map(str).value_counts()
        lines.append(f"{len(ca)} configurations ({', '.join(f'{n} {p}' for p, n in protos.items())}); "
                     + (f"{len(rep)} of them have several seeds (up to {int(ca['n'].max())})." if len(rep) else
                        "each has a single seed, so no confidence intervals."))
        setting = ", ".join(f"{k}={v}" for k, v in data.setting.items() if v is not None)
        lines.append(f"Tables 1-2 and Figures 1-6 compare the **{len(data.configs)} configurations** of one test "
                     f"setting ({setting}); the protocol audit covers every protocol.")
    lines += [f"Note: {n}." for n in data.notes]
    lines += _run_warnings(data.runs)
    difference = tables.split_difference(data.configs)
    if difference:
        lines.append(f"**Read the metrics with this in mind.** {difference}")
    lines = [x for line in lines for x in ("", line)][1:]  # one paragraph each
    lines += ["",
              "Score = 600·Top-1 + 300·Top-5 + 100·Top-10 on the test split (points, 0–1000). Time = `time/cost_s`, "
              "the cost of a configuration on its own (feature extraction + head training + evaluation), in seconds "
              "unless stated. Where a configuration has several seeds, numbers are means and `±` is the half-width of "
              f"the {data.confidence:.0%} confidence interval (Student's t over seeds, `scipy.stats.t`); error bars "
              "in the figures are the same intervals. n = number of seeds.",
              "",
              f"*Separability rule:* {SEPARABILITY_RULE}"]
    return lines


def _run_warnings(runs: pd.DataFrame) -> list[str]:
    """Successful runs whose numbers need a caveat: training diverged, or a split had no scorable query
    (its metrics are missing, not 0)."""
    out = []
    if "diverged" in runs.columns:
        div = runs[pd.to_numeric(runs["diverged"], errors="coerce").fillna(0) > 0]
        if len(div):
            out.append(f"**{len(div)} run(s) diverged** (training loss blew up without reaching NaN; marked ⚠ in "
                       f"Table 2, their numbers come from a broken head): {', '.join(map(str, div['run_id']))}.")
    for split in ("val", "test"):
        col = f"{split}/n_queries"
        if col in runs.columns:
            none = runs[pd.to_numeric(runs[col], errors="coerce").eq(0)]
            if len(none):
                out.append(f"**{len(none)} run(s) have no scorable {split} query** (no {split} image has another "
                           f"of its identity): their {split} metrics are missing, not 0; raise the {split} share of "
                           f"`split` or min_faces_per_person. Runs: {', '.join(map(str, none['run_id']))}.")
    return out


def build_report(df: pd.DataFrame, out_dir: Path | str, tracker=None, *, protocol: str | None = None,
                 published: Path | str | None = None, confidence: float = 0.95,
                 title: str = "Ablation report") -> Path:
    """Write the report of the results ``df`` (``benchmark.results.store.load``) as the folder
    ``out_dir``: ``report.md``, ``tables/*.csv|md``, ``figures/*.png``, replacing a previous report
    whole (``replaced_folder``: a folder that is a file, cannot be replaced or holds other files is a
    one-line ConfigError before any work); returns the path of ``report.md``.

    ``tracker``: an object with ``log_files(**items)`` (``benchmark.tracking.Tracker``): every table
    (DataFrame) and figure (PNG path) is logged with it. ``protocol``: the protocol the comparisons
    use (default closed-set when present). ``published``: another published-numbers YAML
    (default the package's ``published.yaml``).
    """
    out_dir = Path(out_dir)
    with replaced_folder(out_dir, "report folder", owns=REPORT_ENTRIES, keep=REPORT_KEEPS) as new:
        w = _Writer(new)
        _write_report(w, df, protocol, published, confidence, title)
    if tracker is not None and w.logged:
        placed = {k: out_dir / v.relative_to(new) if isinstance(v, Path) else v for k, v in w.logged.items()}
        try:
            tracker.log_files(**{k.replace("/", "_"): v for k, v in placed.items()})
        except Exception as exc:  # tracking never costs the local report
            warnings.warn(f"report: logging to the tracker failed: {type(exc).__name__}: {exc}")
    return out_dir / "report.md"


def _write_report(w: _Writer, df: pd.DataFrame, protocol, published, confidence: float, title: str) -> None:
    """Every file of the report, into the new folder ``w.out``."""
    try:
        data = prepare(df, protocol, confidence)
    except Exception as exc:  # an unreadable frame still gets a report saying so
        warnings.warn(f"report: could not read the results: {type(exc).__name__}: {exc}")
        write_atomic(w.out / "report.md", f"# {title}\n\nThe results could not be read: {type(exc).__name__}: {exc}\n")
        return
    r = Inputs(df, data, published)
    w.measured = tables.measured_on(data.configs)
    w.lines += [f"# {title}", ""] + _overview(data, len(df))
    if len(data.configs_all):
        _write_configs(w, data)
    for s in SECTIONS:
        if s.applies is None or s.applies(r):
            w.section(s, r)
    write_atomic(w.out / "report.md", "\n".join(w.lines) + "\n")


def _tables_dir(out_dir: Path) -> Path:
    d = out_dir / "tables"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_configs(w: _Writer, data: ReportData) -> None:
    cols = [x for x in data.configs_all.columns if not x.endswith(("_values", "_sd"))]
    write_atomic(_tables_dir(w.out) / "configurations.csv", data.configs_all[cols].to_csv(index=False))
    w.lines += ["", "Every configuration (means, CI half-widths, seeds, run ids): "
                    "[tables/configurations.csv](tables/configurations.csv)."]


# -- the sections, in report order ---------------------------------------------------------------------
def _plotted(w: _Writer, name: str, caption: str, t: pd.DataFrame, read, fig, markdown) -> None:
    """The common section: reading, figure, then the table it is drawn from."""
    w.reading(read(t))
    w.figure(name, fig, caption)
    w.table(f"{name}_data", t, markdown(t))


@_section("Table 1. Architecture comparison at the baseline settings")
def _section_table1(w: _Writer, r: Inputs) -> None:
    c = r.data.configs
    t = tables.table1(c)
    w.reading(tables.read_table1(t, c))
    w.table("table1_architectures", t, tables.table1_markdown(t))
    w.lines += ["", "Baseline settings: LR 0.001, 3 epochs, batch size 32, augmentation and ImageNet normalization "
                    "on, trained head." + (" Relative performance: score as % of the best architecture; speed = "
                                           "cost of the slowest ÷ cost of this one (`time/cost_s`)." if len(t) > 1
                                           else "")]


@_section("Figure 1. Learning-rate impact on score")
def _section_lr(w: _Writer, r: Inputs) -> None:
    t = tables.lr_sweep(r.data.configs)
    _plotted(w, "figure1_lr", "Figure 1: score vs learning rate", t, tables.read_lr, figures.figure1_lr(t),
             tables.lr_markdown)


@_section("Figure 2. Training duration and per-epoch validation curves")
def _section_epochs(w: _Writer, r: Inputs) -> None:
    t = tables.epoch_sweep(r.data.configs)
    w.reading(tables.read_epochs(t))
    hist = tables.histories(t)
    w.figure("figure2_epochs", figures.figure2_epochs(t, hist), "Figure 2: score vs epochs and validation curves")
    if hist.empty:
        w.lines += ["", "*Per-epoch validation curves skipped: no run folder of these configurations has a "
                        "history.csv (e.g. results pulled from W&B).*"]
    else:
        w.csv("figure2_history_data", hist)
        w.lines += ["", "Panels (b)-(c): per-epoch history of each run (`history.csv`, mean over seeds): "
                        "[tables/figure2_history_data.csv](tables/figure2_history_data.csv)."]
    w.table("figure2_epochs_data", t, tables.epochs_markdown(t))


@_section("Figure 3. Ablations: impact of design choices")
def _section_ablations(w: _Writer, r: Inputs) -> None:
    t = tables.ablations(r.data.configs, r.data.confidence)
    _plotted(w, "figure3_ablations", "Figure 3: ablation deltas", t, tables.read_ablations,
             figures.figure3_ablations(t), tables.ablations_markdown)


@_section("Table 2. Top-10 configurations by test score")
def _section_table2(w: _Writer, r: Inputs) -> None:
    c = r.data.configs
    t = tables.table2(c)
    w.reading(tables.read_table2(t))
    w.table("table2_top10", t, tables.table2_markdown(t))
    sd, k = pooled_sd(c)
    if k:
        w.lines += ["", f"Seed-to-seed standard deviation of the test score, pooled over the {k} configuration(s) "
                        f"with several seeds: {sd:.1f} points."]


@_section("Figure 4. Cost efficiency: test score per minute of cost")
def _section_efficiency(w: _Writer, r: Inputs) -> None:
    t = tables.efficiency(r.data.configs)
    _plotted(w, "figure4_efficiency", "Figure 4: score per minute per architecture", t, tables.read_efficiency,
             figures.figure4_efficiency(t, r.data.configs), tables.efficiency_markdown)


@_section("Figure 5. Test score vs cost trade-off")
def _section_tradeoff(w: _Writer, r: Inputs) -> None:
    t = tables.pareto(r.data.configs)
    w.reading(tables.read_pareto(t))
    w.figure("figure5_tradeoff", figures.figure5_tradeoff(t), "Figure 5: test score vs cost")
    w.lines += ["", f"<sub>Data: {len(t)} configurations, Pareto front marked in "
                    "[tables/figure5_tradeoff_data.csv](tables/figure5_tradeoff_data.csv)</sub>"]
    w.lines += ["", f"<sub>{w.measured}</sub>"] if w.measured else []
    w.csv("figure5_tradeoff_data", t)


@_section("Figure 6. A query and its top-10 retrieved images")
def _section_example(w: _Writer, r: Inputs) -> None:
    c = r.data.configs
    ex = figures.retrieval_example(c)
    which = "the best configuration" if ex["best"] else "the best configuration with saved embeddings"
    n_best = int((c["test/score"] == c["test/score"].max()).sum())
    if ex["best"] and n_best > 1:  # a tie: any of them is "the best"
        which = f"one of the {n_best} configurations tied for the best test score"
    how = "leave-one-out over its test split" if ex["gallery_style"] is None else (
        "a query against its test gallery" + ("" if ex["gallery_style"] == "none" else
                                              f", rendered {ex['gallery_style']} as the backbone saw it"))
    w.reading(f"Query {ex['query'][1]} from {which}, {ex['config']} (best seed's run, {how}): "
              f"{ex['hits']} of its top {len(ex['results'])} share its identity, of "
              f"{ex['possible']} possible (the test {'split' if ex['gallery_style'] is None else 'gallery'} "
              f"holds {ex['possible_total']} other image(s) of "
              f"{ex['query'][1]})" + (" — none, as in the report's example." if ex["hits"] == 0 else "."))
    w.figure("figure6_example", figures.figure6_example(ex), "Figure 6: a query and its top-10")


@_section("Protocol audit: does validation pick the right model?")
def _section_audit(w: _Writer, r: Inputs) -> None:
    ac = r.data.configs_all
    other = {k: v for k, v in r.data.setting.items() if k != "protocol"}
    ac = ac[matches(ac, other)] if len(ac) else ac
    if ac.empty:
        raise Unsupported("no successful runs")
    t = protocol_audit(ac)
    w.reading(" ".join(filter(None, [tables.read_audit(t), tables.split_difference(r.data.configs)])))
    w.table("protocol_audit", t, tables.audit_markdown(t))
    w.lines += ["", "Spearman ρ: rank correlation between the configurations' mean `val/score` and mean "
                    "`test/score` (`scipy.stats.spearmanr`); gap = mean of val − test over configurations "
                    "(± 95% CI over configurations); right pick = the configuration with the highest validation "
                    "score also has the highest test score."]


@_section("What should have been submitted?")
def _section_study(w: _Writer, r: Inputs) -> None:
    study.section(w, r.df, r.data.confidence)


@_section("What should have been submitted? Under the domain gap", applies=lambda r: cross_domain.present(r.df))
def _section_cross_domain(w: _Writer, r: Inputs) -> None:
    cross_domain.section(w, r.df, r.data.confidence)


@_section("Label-free validators: would they have picked well?", applies=lambda r: cross_domain.present(r.df))
def _section_label_free(w: _Writer, r: Inputs) -> None:
    label_free.section(w, r.df, r.data.confidence)


@_section("Reproduction of the published numbers")
def _section_reproduction(w: _Writer, r: Inputs) -> None:
    t = pub.reproduction(r.data.configs, pub.load(r.published) if r.published else None)
    w.reading(pub.read_reproduction(t))
    w.table("reproduction", t, pub.reproduction_markdown(t))


# only runs started by `benchmark sweep` record a search (not hand-made or older records)
@_section("Search: best configuration found, per method",
          applies=lambda r: "sweep_method" in r.df and r.df["sweep_method"].notna().any())
def _section_search(w: _Writer, r: Inputs) -> None:
    same = matches(r.df, r.data.setting)  # one validation set: a best-so-far across several means nothing
    progress = tables.search_progress(r.df[same])
    t = tables.search_summary(progress)
    w.reading(tables.read_search(t))
    w.figure("figure_search", figures.figure_search(progress), "Search: best validation score per method")
    w.table("search_data", t, tables.search_markdown(t))
    w.csv("search_progress_data", progress)
    w.lines += ["", "Per run, in start order, with the best so far: "
                    "[tables/search_progress_data.csv](tables/search_progress_data.csv). Runs stopped early "
                    "(Hyperband) cost runs and minutes but are never the best."]
    if not same.all():
        w.lines += ["", f"The {int((~same).sum())} run(s) of other test settings are left out: their validation "
                        "scores come from other validation sets."]


@_section("Failed runs")
def _section_failed(w: _Writer, r: Inputs) -> None:
    if r.data.failed.empty:
        w.lines += ["", "None: every run succeeded."]
        return
    t = tables.failed_runs(r.data.failed)
    w.reading(f"{len(t)} run(s) failed and are excluded from every table and figure.")
    w.table("failed_runs", t, tables.failed_markdown(t), metrics=False)
