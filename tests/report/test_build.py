"""build_report end to end: the synthetic set gives every table and figure; thin sets never crash."""

import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from benchmark.report import build_report

SECTIONS = ["Table 1.", "Table 2.", "Figure 1.", "Figure 2.", "Figure 3.", "Figure 4.", "Figure 5.", "Figure 6.",
            "Protocol audit", "What should have been submitted?", "Reproduction of the published numbers",
            "Failed runs"]
FIGURES = ["figure1_lr", "figure2_epochs", "figure3_ablations", "figure4_efficiency", "figure5_tradeoff",
           "figure6_example", "study_score_vs_cost"]


class FakeTracker:
    def __init__(self):
        self.items = {}

    def log_files(self, **items):
        self.items.update(items)


@pytest.fixture(scope="module")
def built(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    tracker = FakeTracker()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no section may fail quietly
        path = build_report(synthetic, out, tracker=tracker)
    return path, path.read_text(), tracker


@pytest.mark.slow
def test_report_mentions_every_table_and_figure(built):
    path, text, _ = built
    assert path.name == "report.md"
    for s in SECTIONS:
        assert f"## {s}" in text
    for f in FIGURES:
        assert f"](figures/{f}.png)" in text
        assert (path.parent / "figures" / f"{f}.png").stat().st_size > 1000
    assert "Skipped" not in text and "Could not be produced" not in text
    # one reading per section
    assert text.count("**Reading:**") == len(SECTIONS)


def test_sections_are_registered_objects_written_in_registry_order(built):
    """Each ``## `` heading is one registered section; the synthetic set has neither searches nor
    query -> gallery runs, so exactly the unconditional sections are written, in registry order."""
    from benchmark.report.build import SECTIONS

    titles = [s.title for s in SECTIONS]
    assert all(titles) and all(callable(s.render) for s in SECTIONS)
    assert len(set(titles)) == len(titles)
    assert re.findall(r"^## (.+)$", built[1], flags=re.M) == [s.title for s in SECTIONS if s.applies is None]


def test_a_failing_section_is_reported_in_place_and_the_others_are_written(tmp_path, monkeypatch):
    import dataclasses

    from benchmark.report import build
    from benchmark.report.build import SECTIONS

    def boom(w, r):
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "SECTIONS", [dataclasses.replace(SECTIONS[0], render=boom), *SECTIONS[1:]])
    with pytest.warns(UserWarning, match=f"report section {SECTIONS[0].title!r} failed: RuntimeError: boom"):
        text = build_report(pd.DataFrame(), tmp_path).read_text()
    failed, rest = text.split(f"## {SECTIONS[0].title}")[1].split("\n## ", 1)
    assert failed.strip() == "*Could not be produced (RuntimeError: boom); the other sections are unaffected.*"
    assert rest.startswith(SECTIONS[1].title) and f"## {SECTIONS[-1].title}" in text


def test_report_tables_on_disk(built):
    path, _, _ = built
    for name in ("table1_architectures", "table2_top10", "protocol_audit", "reproduction", "failed_runs"):
        assert (path.parent / "tables" / f"{name}.csv").is_file()
        assert (path.parent / "tables" / f"{name}.md").read_text().startswith("|")
    t2 = pd.read_csv(path.parent / "tables" / "table2_top10.csv")
    assert len(t2) == 10 and list(t2["rank"]) == list(range(1, 11))


def test_report_readings_come_from_the_data(built):
    _, text, _ = built
    assert "ViT-B/16 has the highest score at the baseline settings" in text
    assert "peaks at 2 epochs" in text
    assert "NOT separable within seed noise" in text and "Separability rule" in text
    assert re.search(r"closed-set: Spearman ρ = [0-9.]+ over 24 configurations", text)
    assert "open-set" in text and ("would have picked the right model" in text or "instead of" in text)
    assert "resnet50-lr0.1-ep5-seed1" in text and "FloatingPointError" in text
    assert "±" in text


def test_tracker_gets_tables_and_figures(built):
    path, _, tracker = built
    assert isinstance(tracker.items["table1_architectures"], pd.DataFrame)
    assert isinstance(tracker.items["table2_top10"], pd.DataFrame)
    for f in FIGURES:
        assert str(tracker.items[f]).endswith(f"{f}.png") and Path(tracker.items[f]).is_file()  # where it now lies


def test_demo_like_set_does_not_crash(demo_df, tmp_path):
    text = build_report(demo_df, tmp_path).read_text()
    assert "Could not be produced" not in text
    assert "Only EfficientNet-Lite0 ran at the baseline settings" in text
    assert "*Skipped: no two configurations differ only in the number of epochs.*" in text
    assert "are not on this machine" in text  # Figure 6: images missing
    assert "none of the report's experiments" in text
    assert "single seed" in text
    for f in ("figure1_lr", "figure3_ablations", "figure4_efficiency", "figure5_tradeoff"):
        assert (tmp_path / "figures" / f"{f}.png").is_file()


@pytest.mark.slow
def test_wandb_like_frame_without_run_folders(synthetic, tmp_path):
    df = synthetic.drop(columns=["run_dir"])
    df = df[df["protocol"] == "closed-set"]
    text = build_report(df, tmp_path).read_text()
    assert "Could not be produced" not in text
    assert "Per-epoch validation curves skipped" in text
    assert "no run folders" in text


@pytest.mark.parametrize("frame", [
    pd.DataFrame(),
    pd.DataFrame([{"run_id": "x", "status": "failed", "error": "RuntimeError: boom", "experiment": "x"}]),
    pd.DataFrame([{"run_id": "x", "status": "ok", "error": None, "experiment": "x", "backbone": "resnet18",
                   "test/score": 300.0}]),
])
def test_thin_frames_do_not_crash(frame, tmp_path):
    text = build_report(frame, tmp_path).read_text()
    assert text.startswith("# ") and "Could not be produced" not in text


@pytest.mark.slow
def test_report_from_wandb_draws_figure2_from_fetched_history(synthetic, tmp_path, monkeypatch, capsys):
    """W&B public-API Run objects (built offline from the synthetic records; their history as W&B
    logged it, step = epoch) through ``benchmark report --from-wandb``: Figure 2's curves equal the
    ones the local records give; a running run is left out and named."""
    import types
    from pathlib import Path

    import wandb
    import yaml
    from wandb.apis.public.runs import Run

    from benchmark import cli
    from benchmark.report import tables
    from benchmark.report.results import prepare

    ok = synthetic[(synthetic["status"] == "ok") & (synthetic["protocol"] == "closed-set")]
    runs, histories = [], {}
    for _, r in ok.iterrows():
        cfg = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text()) | {"run_id": r["run_id"]}
        h = pd.read_csv(Path(r["run_dir"]) / "history.csv")
        histories[r["run_id"]] = [{"_step": int(row.pop("epoch")), **row} for row in h.to_dict("records")]
        summary = {k: v for k, v in r.items() if "/" in k and pd.notna(v)} | dict(h.iloc[-1].drop("epoch"))
        runs.append(Run(None, "ent", "proj", r["run_id"], attrs={
            "displayName": r["run_id"], "state": "finished", "config": cfg, "summaryMetrics": summary}))
    runs.append(Run(None, "ent", "proj", "busy", attrs={"displayName": "busy", "state": "running",
                                                        "config": {"experiment": "x"}, "summaryMetrics": {}}))
    monkeypatch.setattr(Run, "scan_history", lambda self, **kw: iter(histories[self.id]))
    monkeypatch.setattr(wandb, "Api", lambda: types.SimpleNamespace(sweep=lambda path: types.SimpleNamespace(runs=runs)))
    assert cli.main(["report", "--from-wandb", "ent/proj/sw1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) still running or pending, left out: busy (running)" in out
    text = (tmp_path / "report.md").read_text()
    assert "Per-epoch validation curves skipped" not in text and "figure2_history_data.csv" in text
    fetched = pd.read_csv(tmp_path / "tables" / "figure2_history_data.csv")
    local_cfg = tables.epoch_sweep(prepare(ok).configs)
    local = tables.histories(local_cfg)
    pd.testing.assert_frame_equal(fetched.sort_values(["config", "epoch"]).reset_index(drop=True),
                                  local.sort_values(["config", "epoch"]).reset_index(drop=True)[fetched.columns],
                                  check_dtype=False)


def _searched(synthetic):
    """The synthetic runs as if two searches had started them, one run per minute; two stopped early."""
    df = synthetic[synthetic["status"] == "ok"].head(12).reset_index(drop=True).copy()
    df["sweep"] = "s"
    df["sweep_method"] = ["random", "bayes"] * 6
    df["search_seed"] = 0
    df["started"] = 60.0 * df.index
    df["ended"] = df["started"] + 30
    df.loc[[4, 5], "status"] = "stopped"
    df.loc[[4, 5], "stopped_epoch"] = 1
    return df


@pytest.mark.slow
def test_search_section_counts_stopped_runs_and_draws_best_so_far(synthetic, tmp_path):
    from benchmark.report import tables

    df = _searched(synthetic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = build_report(df, tmp_path).read_text()
    assert "10 successful, 2 stopped early by the sweep's early termination" in text
    assert "## Search: best configuration found, per method" in text
    assert (tmp_path / "figures" / "figure_search.png").stat().st_size > 1000
    progress = tables.search_progress(df)
    for method, g in df.groupby("sweep_method"):
        ok = g["val/score"].where(g["status"] == "ok")
        mine = progress[progress["method"] == method]
        assert mine["run"].tolist() == list(range(1, 7))
        assert mine["best_val"].tolist() == pytest.approx(ok.cummax().ffill().tolist(), nan_ok=True)
        best = g.loc[ok.idxmax()]
        assert mine["best_test"].iloc[-1] == best["test/score"] and mine["best_run"].iloc[-1] == best["run_id"]
        assert mine["minutes"].tolist() == pytest.approx(((g["ended"] - g["started"].min()) / 60).tolist())
    summary = tables.search_summary(progress).set_index("method")
    assert summary.loc["random", "stopped"] == 1 and summary.loc["bayes", "stopped"] == 1
    assert summary.loc["random", "runs"] == 6


def test_an_interrupted_figure_write_leaves_the_previous_png(tmp_path, monkeypatch):
    """Figures (like report.md and the tables) are written atomically: a Ctrl-C mid-write keeps the old file."""
    from pathlib import Path

    from matplotlib.figure import Figure

    from benchmark.report import figures

    path = tmp_path / "figure.png"
    path.write_bytes(b"previous report")
    fig = Figure()

    def interrupted(target, **kw):
        Path(target).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        figures.save(fig, path)
    assert path.read_bytes() == b"previous report" and list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    figures.save(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- a report folder is replaced whole (issue 23 rule 3) and quotes no damaged record (rule 1) ---------
def _contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_work(monkeypatch):
    from benchmark.report import build

    monkeypatch.setattr(build, "prepare", lambda *a: pytest.fail("the results were read before the folder was checked"))


#: one successful run: a report of Tables 1-2 and every other section skipped (quick to build)
ONE_RUN = pd.DataFrame([{"run_id": "x", "status": "ok", "error": None, "experiment": "x", "backbone": "resnet18",
                         "test/score": 300.0}])


def test_an_interrupted_report_leaves_the_old_folder_byte_identical(demo_df, tmp_path, monkeypatch):
    """A Ctrl-C mid-build left tables and figures of the new results beside the old report.md."""
    from benchmark.report import figures

    out = tmp_path / "report"
    build_report(ONE_RUN, out)
    before = _contents(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "figure1_lr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_report(demo_df, out)  # Table 1 of these results is written before Figure 1
    assert _contents(out) == before
    assert os.listdir(tmp_path) == ["report"]  # no temporary folder behind


def test_a_new_report_replaces_the_old_folder_whole(tmp_path):
    """Tables the new results no longer make stayed from the old report. What `benchmark report` puts
    beside the report before building it (W&B's live run folder, the fetched W&B histories) lives on."""
    out = tmp_path / "report"
    build_report(ONE_RUN, out)
    assert (out / "tables" / "table2_top10.csv").is_file()
    for kept in ("wandb/run-1/files/output.log", "wandb-history/x/history.csv"):
        (out / kept).parent.mkdir(parents=True)
        (out / kept).write_text("kept")
    text = build_report(pd.DataFrame(), out).read_text()
    assert "table2_top10" not in text
    assert _contents(out) == {"report.md": text.encode(), "wandb-history/x/history.csv": b"kept",
                              "wandb/run-1/files/output.log": b"kept"}
    assert os.listdir(tmp_path) == ["report"]


def test_a_report_into_a_folder_that_does_not_exist_yet(tmp_path):
    path = build_report(ONE_RUN, tmp_path / "new" / "report")
    assert path == tmp_path / "new" / "report" / "report.md" and path.read_text().startswith("# ")
    assert os.listdir(tmp_path / "new") == ["report"]


def test_a_report_folder_that_is_a_file_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    from benchmark.config import ConfigError

    (tmp_path / "report").write_text("notes")
    _no_work(monkeypatch)
    with pytest.raises(ConfigError) as err:
        build_report(ONE_RUN, tmp_path / "report")
    assert str(err.value) == f"report folder {tmp_path / 'report'} is a file; give a folder"
    assert (tmp_path / "report").read_text() == "notes" and os.listdir(tmp_path) == ["report"]


def test_a_report_folder_in_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    """The swap renames in the parent: where that cannot be written, the old report stays and nothing is built."""
    import tempfile

    from benchmark.config import ConfigError

    parent = tmp_path / "shared"
    build_report(ONE_RUN, parent / "report")
    before = _contents(parent / "report")
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: the refusal others get is simulated
        real = tempfile.NamedTemporaryFile

        def refused(*args, dir=None, **kwargs):
            if Path(dir) == parent:
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", refused)
    _no_work(monkeypatch)
    try:
        with pytest.raises(ConfigError) as err:
            build_report(ONE_RUN, parent / "report")
    finally:
        parent.chmod(0o755)
    assert str(err.value) == (f"folder holding the report folder {parent} is not writable (Permission denied); "
                              "choose another folder or fix its permissions")
    assert _contents(parent / "report") == before and os.listdir(parent) == ["report"]


def test_a_folder_holding_other_files_is_not_replaced_by_a_report(tmp_path, monkeypatch):
    """--out mistyped as the results folder (or any folder of other files) would be replaced whole."""
    from benchmark.config import ConfigError

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    _no_work(monkeypatch)
    with pytest.raises(ConfigError, match="report folder .*runs holds notes.txt, which it does not write; the folder "
                                          "is replaced whole: give a new folder or one of its own"):
        build_report(ONE_RUN, tmp_path / "runs")
    assert os.listdir(tmp_path / "runs") == ["notes.txt"]


@pytest.mark.slow
def test_a_record_with_cut_embeddings_is_failed_not_quoted_by_figure6(tmp_path):
    """Its embeddings.npz cut to 3 rows (the metrics: 32 test items), the best run was quoted: "2 of its
    top 2 share its identity, of 2 possible"."""
    import numpy as np

    from benchmark.config import resolve
    from benchmark.results import store
    from synthetic_results import make_images, metrics_for, npz_bytes, write_run

    emb, labels, ids, paths = make_images(tmp_path / "images")
    facts = {"test/n_queries": 32, "test/n_gallery": 31, "test/positives": 3.0}
    rng = np.random.default_rng(0)
    for name, score, blob in (("demo-lr0.01-ep3", 760.0, npz_bytes(emb[:3], labels[:3], ids[:3], paths[:3])),
                              ("demo-lr0.001-ep3", 700.0, npz_bytes(emb, labels, ids, paths))):
        cfg = resolve(name)
        write_run(tmp_path / "runs", name, cfg, metrics_for(score, score, cfg.backbone, cfg.epochs, rng) | facts, blob)
    text = build_report(store.load(tmp_path / "runs"), tmp_path / "report").read_text()
    example = text.split("## Figure 6.")[1].split("\n## ")[0]
    assert "of its top 2" not in example and "demo-lr0.001-ep3" in example
    failed = text.split("## Failed runs")[1]
    assert "demo-lr0.01-ep3" in failed and "3 rows, but metrics.json says test/n_gallery = 31" in failed
