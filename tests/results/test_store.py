"""The results store: records -> DataFrame, W&B runs -> the same DataFrame, CSV/Parquet export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmark.results import record, store
from benchmark.config import Config, ConfigError, dump_yaml
from synthetic_results import ok_files


def _write(out, run_id, metrics=None, error=None, **cfg):
    files = {"config.yaml": dump_yaml(Config(experiment=run_id, **cfg))}
    if metrics is not None:
        files = ok_files(files | {"metrics.json": json.dumps(metrics)})
    record.write(out, run_id, files, {"status": "failed" if error else "ok", "error": error})


@pytest.fixture
def results(tmp_path):
    _write(tmp_path, "a", {"val/score": 500.0, "test/score": 480.0, "time/cost_s": 10.0}, lr=0.01)
    _write(tmp_path, "b", {"val/score": 600.0, "test/score": 590.0, "time/cost_s": 20.0}, seed=1, augment=False)
    _write(tmp_path, "c", error="FloatingPointError: loss became nan", lr=0.1)
    (tmp_path / ".tmp-d-123").mkdir()  # an unfinished writer's folder is not a run
    return tmp_path


def test_load_one_row_per_run_with_config_and_metrics(results):
    df = store.load(results).set_index("run_id")
    assert list(df.index) == ["a", "b", "c"]
    assert df.loc["a", "lr"] == 0.01 and df.loc["b", "seed"] == 1 and df.loc["b", "augment"] == "none"
    assert df.loc["b", "val/score"] == 600.0 and df.loc["a", "time/cost_s"] == 10.0
    assert df.loc["c", "status"] == "failed" and "nan" in df.loc["c", "error"]
    assert pd.isna(df.loc["c", "test/score"])
    assert df.loc["a", "split"] == (0.5, 0.2, 0.3)


def test_one_records_folder_is_named_as_such(results):
    """`choose <a record folder>` said "the results hold no finished run" of a finished run."""
    with pytest.raises(ConfigError, match=f"results folder {results / 'a'} is one run's record; give the folder "
                                          f"that holds the records, {results}"):
        store.load(results / "a")


def test_export_csv_and_parquet_round_trip(results, tmp_path):
    df = store.load(results)
    back_csv = pd.read_csv(store.export(df, tmp_path / "r.csv"))
    back_pq = pd.read_parquet(store.export(df, tmp_path / "r.parquet"))
    for back in (back_csv, back_pq):
        assert list(back["run_id"]) == ["a", "b", "c"]
        assert back["test/score"].tolist()[:2] == [480.0, 590.0]


@pytest.mark.parametrize("target, message", [
    ("r.xlsx", "--export {t}: write *.csv or *.parquet"),  # got CSV text silently
    ("folder.csv", "--export {t} is a folder; give a file"),  # IsADirectoryError
    ("file.csv/r.csv", "folder of --export"),  # a file where the folder should be: NotADirectoryError
])
def test_a_bad_export_path_is_one_line_before_the_results_are_read(results, tmp_path, capsys, target, message):
    from benchmark import cli

    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file.csv").write_text("x")
    t = tmp_path / target
    assert cli.main(["results", str(results), "--export", str(t)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message.format(t=t) in err and len(err.splitlines()) == 1


def test_wandb_runs_convert_to_the_same_shape(results):
    runs = [
        {"name": "efficientnet_b0-bs8", "state": "finished",
         "config": {"experiment": "efficientnet_b0-bs8", "batch_size": 8, "run_id": "r1", "_wandb": {}},
         "summary": {"test/score": 410.5, "val/score": 420.0, "score_per_minute": 3.2, "_runtime": 9,
                     "retrieval_examples": {"_type": "table-file"}}},
        {"name": "vit", "state": "crashed", "config": {"experiment": "vit", "lr": 0.1}, "summary": {}},
    ]
    df = store.from_wandb_runs(runs).set_index("run_id")
    assert list(df.index) == ["r1", "vit"]
    assert df.loc["r1", "status"] == "ok" and df.loc["r1", "batch_size"] == 8
    assert df.loc["r1", "test/score"] == 410.5 and df.loc["r1", "score_per_minute"] == 3.2
    assert "_runtime" not in df and "_wandb" not in df and "retrieval_examples" not in df
    assert df.loc["vit", "status"] == "failed" and "crashed" in df.loc["vit", "error"]
    local = store.load(results)
    assert {"run_id", "status", "error", "experiment", "val/score"} <= set(store.from_wandb_runs(runs)) & set(local)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; give the --out folder"):
        store.load(tmp_path / "nope")


@pytest.mark.slow
def test_results_choose_and_report_import_no_torch():
    """The results layer and the commands that only read results never import torch."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import benchmark.results, benchmark.choose, benchmark.report, benchmark.report.build"],
                         capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "benchmark" in imported and "pandas" in imported  # the measurement works
    assert "torch" not in imported


@pytest.mark.slow
def test_reading_and_choosing_never_load_torch(results, tmp_path):
    """Using them (records read and validated, configs built, a choice written) stays torch-free too."""
    code = f"""
import sys
from benchmark.results import store
from benchmark.choose import choose, write_best
df = store.load({str(results)!r})
write_best(choose(df), {str(tmp_path / 'best.yaml')!r})
print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, content, reason", [
    ("metrics.json", '{"val/score": 50', "unreadable (JSONDecodeError"),
    ("metrics.json", '{"val/score": "high"}', "metric 'val/score' = 'high' is not a number"),
    ("metrics.json", None, "is missing"),
    ("status.json", '{"state": "ok"}', "no 'status' of ok, stopped, failed"),
    ("config.yaml", "lr: [fast\n", "unreadable"),
    ("config.yaml", "learning_rate: 0.1\n", "unknown config key(s): learning_rate"),
    # every file of a successful record, not only the ones the table reads (issue 16)
    ("history.csv", None, "is missing"),
    ("embeddings.npz", None, "is missing"),
    ("split.json", None, "is missing"),
    ("split.json", "{}", "no 'items' list"),
    ("environment.json", "[1]", "expected a mapping, got a list"),
])
def test_an_unreadable_record_file_is_a_damaged_run_naming_the_file(results, name, content, reason):
    path = results / "a" / name
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    df = store.load(results).set_index("run_id")
    assert list(df.index) == ["a", "b", "c"]  # the others are read as before
    assert df.loc["a", "status"] == "damaged"
    assert df.loc["a", "error"].startswith(f"damaged record: {path} ") and reason in df.loc["a", "error"]
    assert df.loc["b", "status"] == "ok" and df.loc["b", "val/score"] == 600.0


@pytest.mark.parametrize("metrics, reason", [
    ({"test/score": 480.0}, "required metric(s) val/score missing"),
    ({"val/score": 500.0}, "required metric(s) test/score missing"),
    ({"val/score": 1200.0, "test/score": 480.0}, "metric 'val/score' = 1200.0 is impossible (outside [0, 1000])"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 1.5}, "metric 'test/top1' = 1.5 is impossible"),
    ({"val/score": 500.0, "test/score": 480.0, "time/cost_s": -3.0}, "metric 'time/cost_s' = -3.0 is impossible"),
    ({"val/score": 500.0, "test/score": float("inf")}, "metric 'test/score' = inf is impossible"),
    ({"val/score": 500.0, "test/score": None, "test/n_queries": 40}, "test/score is null although test is scorable"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 0.5, "test/top5": 0.4, "test/top10": 0.6},
     "Top-1/5/10 = [0.5, 0.4, 0.6] are not increasing"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 0.5, "test/top5": 0.6, "test/top10": 0.7},
     "test/score = 480.0 is not 600 Top-1 + 300 Top-5 + 100 Top-10"),
])
def test_a_record_with_missing_or_impossible_metrics_is_damaged_never_ranked(results, metrics, reason):
    """A record read as ok with its content missing (a default filled in) or impossible used to be ranked."""
    from benchmark.choose import choose

    (results / "b" / "metrics.json").write_text(json.dumps(metrics))
    df = store.load(results).set_index("run_id")
    assert df.loc["b", "status"] == "damaged" and reason in df.loc["b", "error"], df.loc["b", "error"]
    assert choose(store.load(results))["run_ids"] == ["a"]  # b (val/score 600) is not ranked


def test_embeddings_without_an_array_are_damage(results):
    (results / "b" / "embeddings.npz").write_bytes(record.npz_bytes(embeddings=np.zeros((2, 3)), labels=np.arange(2)))
    row = store.load(results).set_index("run_id").loc["b"]
    assert row["status"] == "damaged" and "embeddings.npz is unreadable (ValueError: array(s) identities, paths missing" \
        in row["error"]


def test_unscorable_nulls_and_a_failed_run_without_error(results):
    (results / "b" / "metrics.json").write_text(json.dumps(
        {"val/score": None, "val/n_queries": 0, "test/score": 480.0, "test/n_queries": 2}))
    assert store.load(results).set_index("run_id").loc["b", "status"] == "ok"  # null where it may be
    (results / "c" / "status.json").write_text('{"status": "failed"}')
    row = store.load(results).set_index("run_id").loc["c"]
    assert row["status"] == "damaged" and "a failed run without its 'error'" in row["error"]


def test_record_reader_validates_every_file(tmp_path):
    from benchmark.results.record import RecordError, RunRecord

    cfg = Config(experiment="r")
    emb = np.eye(3, 4, dtype=np.float32)
    rec = RunRecord.write(tmp_path, "r", {
        "config.yaml": dump_yaml(cfg), "metrics.json": json.dumps({"val/score": float("nan"), "val/n_queries": 0, "test/score": 400.0,
                                                         "best_epoch": 2}),
        "history.csv": "epoch,train/loss\n1,2.5\n2,1.5\n", "split.json": "{}", "environment.json": '{"device": "cpu"}',
        "embeddings.npz": record.npz_bytes(embeddings=emb, labels=np.arange(3), identities=np.array(list("abc")),
                                           paths=np.array(["x", "y", "z"]))}, {"status": "ok"})
    assert rec.config() == cfg.to_dict() and rec.metrics() == {"val/score": None, "val/n_queries": 0, "test/score": 400.0,
                                                       "best_epoch": 2}
    assert rec.history()["train/loss"].tolist() == [2.5, 1.5] and rec.environment() == {"device": "cpu"}
    np.testing.assert_array_equal(rec.embeddings()["embeddings"], emb)
    (tmp_path / "r" / "embeddings.npz").write_bytes(record.npz_bytes(
        embeddings=emb, labels=np.arange(2), identities=np.array(list("abc")), paths=np.array(["x", "y", "z"])))
    with pytest.raises(RecordError, match="embeddings.npz is unreadable .*arrays of different lengths"):
        rec.embeddings()
    (tmp_path / "r" / "split.json").write_bytes(b"\x00\xff")
    with pytest.raises(RecordError, match=f"{tmp_path / 'r' / 'split.json'} is unreadable"):
        rec.split()


def test_wandb_runs_in_progress_are_skipped_and_losses_do_not_leak(tmp_path):
    history = [{"_step": 1, "train/loss": 2.5, "val/loss": 2.7, "val/score": 300.0, "epoch_s": 3.0, "_runtime": 4},
               {"_step": 2, "train/loss": 2.0, "val/loss": 2.4, "val/score": 350.0, "epoch_s": 3.5},
               {"_step": 3, "retrieval_examples": {"_type": "table-file"}}]
    runs = [
        {"name": "a", "state": "finished", "config": {"run_id": "a", "epochs": 2},
         "summary": {"test/score": 400.0, "val/score": 350.0, "train/loss": 2.0, "val/loss": 2.4, "epoch_s": 3.5,
                     "status": "ok"}, "history": history},
        {"name": "b", "state": "running", "config": {"run_id": "b"}, "summary": {"train/loss": 3.0}},
        {"name": "c", "state": "pending", "config": {}, "summary": {}},
    ]
    df = store.from_wandb_runs(runs, tmp_path / "h")
    assert list(df["run_id"]) == ["a"] and df.attrs["in_progress"] == ["b (running)", "c (pending)"]
    assert not {"train/loss", "val/loss", "epoch_s", "status_summary"} & set(df.columns)
    assert df.loc[0, "status"] == "ok" and df.loc[0, "test/score"] == 400.0
    written = pd.read_csv(tmp_path / "h" / "a" / "history.csv")
    assert df.loc[0, "run_dir"] == str(tmp_path / "h" / "a")
    assert written["epoch"].tolist() == [1, 2] and written["val/score"].tolist() == [300.0, 350.0]
    assert written["train/loss"].tolist() == [2.5, 2.0] and "_runtime" not in written


def test_without_wandb_the_wandb_paths_are_one_line_errors(monkeypatch, capsys):

    from benchmark import cli

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ModuleNotFoundError
    assert cli.main(["report", "--from-wandb", "e/p/s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --from-wandb needs wandb, which is not installed in this environment: pip install wandb"]
    monkeypatch.setenv("WANDB_SWEEP_ID", "s")
    assert cli.main(["run", "--experiment", "efficientnet_b0-bs8"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: started by `wandb agent` (WANDB_SWEEP_ID is set) but wandb is not installed")


# --- a record is whole and consistent, or it is damaged (issue 23 rule 1) ---------------------------------
def _record(out, run_id, n=120, sides=None, emb=None, metrics=None, status=None):
    """A record as `benchmark run` writes it: ``n`` test items (4 a person; ``sides``: query -> gallery),
    their embeddings and the facts of them in metrics.json and split.json."""
    labels = np.arange(n) // 4
    ids, paths = np.array([f"p{i}" for i in labels]), np.array([f"/x/{i}.jpg" for i in range(n)])
    arrays = {"embeddings": np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32) if emb is None else emb,
              "labels": labels, "identities": ids, "paths": paths}
    gallery = n - 1
    if sides is not None:
        arrays |= {"sides": sides, "query_scores": np.where(sides == "query", 500.0, np.nan)}
        gallery = int((sides == "gallery").sum())
    items = [[str(p), str(i), "test"] for p, i in zip(paths, ids)] + [["/x/train.jpg", "t", "train"]]
    m = {"val/score": 900.0, "test/score": 480.0, "test/n_queries": n - gallery if sides is not None else n,
         "test/n_gallery": gallery, "test/positives": 3.0, "test/identities": n // 4, **(metrics or {})}
    record.write(out, run_id, {
        "config.yaml": dump_yaml(Config(experiment=run_id)), "metrics.json": json.dumps(m),
        "history.csv": "epoch,train/loss,val/score\n1,2.5,400.0\n", "environment.json": "{}",
        "split.json": json.dumps({"counts": {"train": 1, "val": 0, "test": n}, "items": items}),
        "embeddings.npz": record.npz_bytes(**arrays)}, status or {"status": "ok"})
    return out / run_id


def _arrays(run_dir) -> dict:
    with np.load(run_dir / "embeddings.npz") as z:
        return {k: z[k] for k in z.files}


def _damaged(results, run_id="w") -> str:
    """``run_id``'s error; asserts it is damaged and not what `benchmark choose` ranks (its val/score, 900,
    is the best)."""
    from benchmark.choose import choose

    df = store.load(results).set_index("run_id")
    assert df.loc[run_id, "status"] == "damaged", df.loc[run_id, "error"]
    assert run_id not in choose(store.load(results))["run_ids"]
    return df.loc[run_id, "error"]


def test_a_whole_record_as_run_writes_it_is_ok_same_domain_and_query_gallery(results):
    _record(results, "w")
    _record(results, "qg", n=40, sides=np.tile(np.array(["query", "gallery"]), 20))
    df = store.load(results).set_index("run_id")
    assert df.loc["w", "status"] == df.loc["qg", "status"] == "ok"
    assert df.loc["w", "test/n_gallery"] == 119 and df.loc["qg", "test/n_gallery"] == 20


def test_embeddings_cut_to_fewer_rows_than_were_evaluated_are_damage(results):
    """Cut to 3 rows (metrics: 120 queries) it stayed ok, and the report quoted it."""
    w = _record(results, "w")
    (w / "embeddings.npz").write_bytes(record.npz_bytes(**{k: v[:3] for k, v in _arrays(w).items()}))
    assert _damaged(results) == (f"damaged record: {w / 'embeddings.npz'} contradicts the record: 3 rows, but "
                                 "split.json counts 120 test items")


def test_non_finite_embeddings_with_metrics_computed_from_them_are_damage(results):
    w = _record(results, "w")
    (w / "embeddings.npz").write_bytes(record.npz_bytes(**_arrays(w) | {"embeddings": np.full((120, 8), np.nan,
                                                                                             dtype=np.float32)}))
    assert "non-finite values (NaN or inf), yet metrics.json holds test numbers computed from them" in _damaged(results)


def test_a_run_whose_embeddings_really_were_non_finite_stays_ok(results):
    """`benchmark run` records non-finite embeddings with every test number null (nothing computed): a
    result, not damage (rerunning would give the same); finite embeddings under that claim contradict it."""
    nulls = {"test/score": None, "test/n_queries": None}
    _record(results, "w", emb=np.full((120, 8), np.inf, dtype=np.float32), metrics=nulls)
    _record(results, "claims", metrics=nulls)
    df = store.load(results).set_index("run_id")
    assert df.loc["w", "status"] == "ok" and pd.isna(df.loc["w", "test/score"])
    assert df.loc["claims", "status"] == "damaged" and "finite values, yet metrics.json says nothing could be " \
        "computed from them (test/n_queries null)" in df.loc["claims", "error"]


def test_a_config_key_its_writer_had_missing_from_config_yaml_is_damage(results):
    """A key deleted from config.yaml was read as its default, a value the run never used."""
    import yaml

    w = _record(results, "w")
    cfg = yaml.safe_load((w / "config.yaml").read_text())
    (w / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "rerank"}))
    assert "config.yaml contradicts the record: key(s) rerank missing although its writer had them (status.json " \
           "lists them)" in _damaged(results)


def test_a_record_from_before_config_keys_is_held_to_the_keys_every_version_wrote(results):
    """Without the list, a key added later (rerank) may be absent: its default is what the old code did;
    one every version wrote (lr) may not."""
    import yaml

    w = _record(results, "w")
    status = json.loads((w / "status.json").read_text())
    (w / "status.json").write_text(json.dumps({k: v for k, v in status.items() if k != "config_keys"}))
    cfg = yaml.safe_load((w / "config.yaml").read_text())
    (w / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "rerank"}))
    assert store.load(results).set_index("run_id").loc["w", "status"] == "ok"
    (w / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k not in ("rerank", "lr")}))
    assert "key(s) lr missing although its writer had them (every version wrote them)" in _damaged(results)


@pytest.mark.parametrize("damage, reason", [
    ("cut", "embeddings.npz is unreadable (BadZipFile"),
    ("flipped", "embeddings.npz is unreadable (BadZipFile: Bad CRC-32"),
    ("labels", "embeddings.npz is unreadable (ValueError: 120 embeddings but 119 labels)"),
    ("sides", "embeddings.npz contradicts the record: 40 rows, 10 on the gallery side, but metrics.json says "
              "test/n_gallery = 20"),
    ("history", "history.csv is unreadable (ValueError: column 'train/loss' holds text ('2.5x' ...), not numbers)"),
    ("split", "split.json is unreadable (ValueError: 'counts' {'train': 1, 'val': 0, 'test': 120} disagree with its "
              "items ({'test': 119, 'train': 1})"),
])
def test_every_record_file_and_their_agreement_is_checked(results, damage, reason):
    """Siblings of the cases the issue named: each was read as ok before."""
    if damage == "sides":
        w = _record(results, "w", n=40, sides=np.tile(np.array(["query", "gallery"]), 20))
        sides = _arrays(w)["sides"]
        sides[:20] = "query"  # 10 gallery items left, the metrics measured 20
        (w / "embeddings.npz").write_bytes(record.npz_bytes(**_arrays(w) | {"sides": sides}))
    else:
        w = _record(results, "w")
    npz = (w / "embeddings.npz").read_bytes()
    if damage == "cut":
        (w / "embeddings.npz").write_bytes(npz[:len(npz) // 2])
    elif damage == "flipped":  # the zip's directory intact, the embedding bytes not
        at = npz.index(b"\x93NUMPY") + 200
        (w / "embeddings.npz").write_bytes(npz[:at] + bytes(b ^ 0xFF for b in npz[at:at + 64]) + npz[at + 64:])
    elif damage == "labels":
        (w / "embeddings.npz").write_bytes(record.npz_bytes(**_arrays(w) | {"labels": np.arange(119)}))
    elif damage == "history":
        (w / "history.csv").write_text("epoch,train/loss,val/score\n1,2.5x,400.0\n")
    elif damage == "split":
        doc = json.loads((w / "split.json").read_text())
        (w / "split.json").write_text(json.dumps(doc | {"items": doc["items"][1:]}))
    assert reason in _damaged(results)


def test_a_stopped_record_is_checked_like_a_successful_one(results):
    w = _record(results, "w", status={"status": "stopped", "stopped_epoch": 1})
    (w / "embeddings.npz").write_bytes(record.npz_bytes(**{k: v[:3] for k, v in _arrays(w).items()}))
    assert store.load(results).set_index("run_id").loc["w", "status"] == "damaged"


def test_embeddings_are_stored_uncompressed_and_the_rest_compressed(tmp_path):
    """Every load reads the embeddings (are they finite?); they barely compress, so they are stored as
    they are: read back as a copy, not inflated. The image paths compress well and are."""
    import zipfile

    blob = record.npz_bytes(embeddings=np.ones((4, 2), dtype=np.float32), paths=np.array(["/x/a.jpg"] * 4))
    (tmp_path / "e.npz").write_bytes(blob)
    with zipfile.ZipFile(tmp_path / "e.npz") as zf:
        assert {i.filename: i.compress_type for i in zf.infolist()} == {"embeddings.npy": zipfile.ZIP_STORED,
                                                                        "paths.npy": zipfile.ZIP_DEFLATED}
    with np.load(tmp_path / "e.npz") as z:
        assert z["embeddings"].tolist() == [[1.0, 1.0]] * 4 and z["paths"][0] == "/x/a.jpg"
