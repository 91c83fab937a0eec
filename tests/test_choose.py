"""choose: validation-only selection, seed aggregation with t confidence intervals, best.yaml."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from benchmark.choose import choose, format_choice, load_best, read_selection, write_best
from benchmark.config import Config, ConfigError, dump_yaml, from_dict, load_yaml
from benchmark.results import record, schema, store
from synthetic_results import ok_files


def _row(experiment, seed, val, test, status="ok", **cfg):
    c = Config(experiment=experiment, seed=seed, **cfg).to_dict()
    c["split"] = tuple(c["split"])  # as store.load flattens lists
    row = {"run_id": f"{experiment}-seed{seed}", "status": status, "error": None, "run_dir": None, **c}
    if status == "ok":
        row |= {"val/score": val, "val/loss": 10 - val / 100, "test/score": test, "test/top1": test / 1000,
                "score_per_minute": test * 10}
    return row


def _table():
    """a: high val, low test; b: low val, high test; c: one seed; a failed run with no metrics."""
    rows = [_row("a", s, v, t, lr=0.001) for s, v, t in [(0, 500, 300), (1, 520, 310), (2, 510, 305)]]
    rows += [_row("b", s, v, t, lr=0.01) for s, v, t in [(0, 450, 600), (1, 470, 620), (2, 460, 610)]]
    rows += [_row("c", 0, 400, 900, backbone="resnet18")]
    rows += [_row("d", 0, None, None, status="failed")]
    return pd.DataFrame(rows)


def test_picks_by_validation_not_test():
    choice = choose(_table())
    assert choice["experiment"] == "a"  # b and c are better on test/score: never looked at
    assert choice["runner_up"]["experiment"] == "b"
    assert choice["n_failed"] == 1 and choice["n_runs"] == 8 and choice["n_configurations"] == 3
    assert choice["n_seeds"] == 3 and choice["seeds"] == [1, 2, 0]  # best seed first
    assert choice["config"]["seed"] == 1 and choice["config"]["lr"] == 0.001


def test_works_without_any_test_column_and_gives_the_same_answer():
    df = _table()
    no_test = df.drop(columns=[c for c in df.columns if c.startswith("test/") or c == "score_per_minute"])
    a, b = choose(df), choose(no_test)
    assert a["experiment"] == b["experiment"] and a["mean"] == b["mean"] and a["config"] == b["config"]


def test_test_columns_are_never_read():
    df = _table()
    df["test/score"] = "not a number"  # reading it would break the numeric code
    df["test/top1"] = np.nan
    assert choose(df)["experiment"] == "a"


@pytest.mark.parametrize("metric", ["test/score", "test/top1", "score_per_minute"])
def test_refuses_test_metrics(metric):
    with pytest.raises(ConfigError, match="test"):
        choose(_table(), metric=metric)


def test_unknown_metric_and_no_usable_run():
    with pytest.raises(ConfigError, match="not in the results"):
        choose(_table(), metric="val/map")  # a quality measure these results did not record
    with pytest.raises(ConfigError, match=r"every run failed \(1 runs in the results\): nothing to choose from"):
        choose(pd.DataFrame([_row("d", 0, None, None, status="failed")]).assign(**{"val/score": np.nan}))


def test_mean_ci_and_margin_against_scipy():
    choice = choose(_table())
    a, b = np.array([500.0, 520.0, 510.0]), np.array([450.0, 470.0, 460.0])
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert choice["mean"] == pytest.approx(510.0)
    assert choice["ci95"] == pytest.approx((hi - lo) / 2)
    assert choice["std"] == pytest.approx(a.std(ddof=1))
    assert choice["runner_up"]["mean"] == pytest.approx(460.0)
    assert choice["margin"] == pytest.approx(50.0)
    # 50 > 24.8 + 24.8: the intervals do not overlap
    assert choice["separated"] is True
    single = choice["table"][2]
    assert single["experiment"] == "c" and single["n_seeds"] == 1 and single["ci95"] is None


def test_overlapping_intervals_are_flagged_and_single_seeds_have_no_ci():
    rows = [_row("a", s, v, 0) for s, v in [(0, 500), (1, 300)]] + [_row("b", s, v, 0, lr=0.01)
                                                                   for s, v in [(0, 390), (1, 400)]]
    choice = choose(pd.DataFrame(rows))
    assert choice["experiment"] == "a" and choice["separated"] is False
    assert "within noise" in format_choice(choice)
    one = choose(pd.DataFrame([_row("a", 0, 500, 0), _row("b", 0, 400, 0, lr=0.01)]))
    assert one["ci95"] is None and one["separated"] is None and one["margin"] == pytest.approx(100)


@pytest.mark.parametrize("by", ["val/degenerate", "val/n_queries", "val/identities", "val/positives", "time/total_s",
                                "val/loss", "test/degenerate", "val/validator/nope", "val/score+time/total_s",
                                "val/score+", ""])
def test_only_quality_measures_may_choose(by):
    """``--by val/degenerate`` chose by the collapse flag ("higher is better") and wrote best.yaml; a
    split fact, a time or a loss ranked the same way. Each is one line naming the valid ones."""
    df = _table().assign(**{"val/degenerate": 0.0, "val/n_queries": 5, "val/identities": 3, "val/positives": 2.0,
                            "time/total_s": 9.0, "test/degenerate": 0.0})
    with pytest.raises(ConfigError) as info:
        choose(df, by)
    message = str(info.value)
    assert "\n" not in message and ("is not a quality measure to choose by" in message or "names nothing" in message)
    for valid in ("val/score", "val/top1", "val/map", "snd (higher is better)", "entropy (lower is better)",
                  "test/validator/NAME", "joined by '+'"):
        assert valid in message, (valid, message)


def test_a_measure_named_twice_is_refused():
    """``val/score+val/score`` was a rank average of val/score with itself, in any spelling."""
    for by in ("val/score+val/score", "score+val/score", "validator/snd+snd"):
        with pytest.raises(ConfigError, match=r"names val/(validator/snd|score) twice.*give each measure once"):
            choose(_validated(), by)


def test_bare_names_are_the_validation_splits_as_the_help_says(capsys):
    """``--help`` said "snd: higher is better" but ``--by snd`` was refused: every validator and ranking
    metric named there is taken by its bare name, on the validation split, in its direction."""
    from benchmark import cli
    from benchmark.choose import rule_columns
    from benchmark.evaluation.measures import RANKING
    from benchmark.evaluation.validators import VALIDATORS

    with pytest.raises(SystemExit):
        cli.main(["choose", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, v in VALIDATORS.items():
        assert f"{name}: {'higher' if v.higher else 'lower'} is better" in text
        assert rule_columns(name) == [f"val/validator/{name}"]
    assert all(rule_columns(m) == [f"val/{m}"] and f"val/{m}" in text for m in RANKING)
    choice = choose(_validated(), "snd")
    assert choice["experiment"] == "b" and choice["metric"] == "val/validator/snd" and choice["higher_is_better"]
    assert choose(_validated(), "entropy")["higher_is_better"] is False
    assert choose(_validated(), "score+cycle")["metric"] == "val/score+val/validator/cycle"


def test_groups_ignore_run_specific_keys():
    rows = [_row("a", 0, 500, 0, num_workers=0, device="cpu"), _row("a", 1, 520, 0, num_workers=4)]
    choice = choose(pd.DataFrame(rows))
    assert choice["n_configurations"] == 1 and choice["n_seeds"] == 2


def test_best_yaml_loads_as_a_config_and_keeps_the_selection(tmp_path):
    choice = choose(_table())
    path = write_best(choice, tmp_path / "best.yaml")
    cfg = load_yaml(path)  # the plain config loader: selection lines are comments
    assert cfg == from_dict(choice["config"]) == load_best(path)
    sel = read_selection(path)
    assert sel["experiment"] == "a" and sel["metric"] == "val/score"
    assert sel["margin"] == pytest.approx(50.0) and sel["runner_up"]["experiment"] == "b"
    assert sel["runner_up_differs"]["lr"] == [0.001, 0.01]
    assert not any(k.startswith("test/") for k in json.dumps(sel).split('"'))
    assert set(yaml.safe_load(path.read_text())) <= set(Config().to_dict())


def test_config_comes_from_the_best_seeds_run_folder(tmp_path):
    """Through the real store: each run's config.yaml is the source of the chosen config."""
    for seed, val in [(0, 400.0), (1, 420.0)]:
        cfg = Config(experiment="x", seed=seed, lr=0.005, max_identities=3)
        record.write(tmp_path, f"x-seed{seed}", ok_files({"config.yaml": dump_yaml(cfg), schema.METRICS:
                                                           json.dumps({"val/score": val, "test/score": val})}),
                     {"status": "ok"})
    record.write(tmp_path, "broken", {"config.yaml": dump_yaml(Config(experiment="y"))},
                 {"status": "failed", "error": "boom"})
    df = store.load(tmp_path)
    choice = choose(df)
    assert choice["config"] == Config(experiment="x", seed=1, lr=0.005, max_identities=3).to_dict()
    assert choice["run_dir"].endswith("x-seed1") and choice["runner_up"] is None
    assert choice["n_failed"] == 1
    assert choice["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([400, 420], ddof=1) / math.sqrt(2))


def test_warns_when_candidates_were_validated_on_different_data():
    rows = [_row("a", 0, 500, 0), _row("b", 0, 400, 0, protocol="open-set")]
    with pytest.warns(UserWarning, match="protocol"):
        choice = choose(pd.DataFrame(rows))
    assert choice["experiment"] == "a" and "not strictly comparable" in choice["warnings"][0]
    assert choose(_table())["warnings"] == []


def test_runs_whose_metric_could_not_be_computed_are_left_out_with_a_warning():
    df = _table()
    df.loc[df["run_id"].astype(str).str.startswith("a"), ["val/score", "val/n_queries"]] = [np.nan, 0]
    with pytest.warns(UserWarning, match="left out, val/score could not be computed \\(validation has no scorable"):
        choice = choose(df)
    assert choice["experiment"] != "a" and any("left out" in w for w in choice["warnings"])
    df["val/score"] = np.nan
    with pytest.raises(ConfigError, match="cannot rank on 'val/score': no successful run has it .*validation has "
                                          "no scorable queries: raise the validation fraction"):
        choose(df)


def test_runs_with_degenerate_validation_embeddings_are_not_ranked():
    """Collapsed embeddings give a val/score that is only the tie-break order: flagged, never chosen."""
    df = _table().assign(**{"val/degenerate": 0.0})
    df.loc[df["run_id"].astype(str).str.startswith("a"), "val/degenerate"] = 1.0  # a has the best val/score
    with pytest.warns(UserWarning, match=r"3 successful run\(s\) left out, their embeddings are degenerate "
                                         r"\(val/degenerate = 1: val/score is only the tie-break order\): a-seed0"):
        choice = choose(df)
    assert choice["experiment"] == "b"
    df["val/degenerate"] = 1.0
    with pytest.raises(ConfigError, match=r"cannot rank on 'val/score'.*7 run\(s\) have degenerate embeddings"):
        choose(df)


def test_stopped_runs_are_not_ranked_as_finished_ones_unless_asked():
    """A run Hyperband stopped has metrics at the stop: here it has the highest val score of all."""
    stopped = {**_row("e", 0, 900, 100, lr=0.1), "status": "stopped", "stopped_epoch": 1}
    df = pd.concat([_table(), pd.DataFrame([stopped])], ignore_index=True)
    choice = choose(df)
    assert choice["experiment"] == "a" and choice["n_stopped"] == 1 and choice["n_failed"] == 1
    assert "1 stopped early not ranked (--include-stopped ranks them)" in format_choice(choice)
    asked = choose(df, include_stopped=True)
    assert asked["experiment"] == "e" and asked["n_failed"] == 1 and asked["n_configurations"] == 4
    with pytest.raises(ConfigError, match="every finished run was stopped early .* --include-stopped"):
        choose(pd.DataFrame([stopped]))


def test_the_command_says_each_warning_once_in_one_line(tmp_path, capsys):
    """``benchmark choose`` printed its warning twice: once as a raw ``UserWarning`` with a source line,
    once in its summary. Now the summary says it, and nothing else does."""
    from benchmark import cli

    for name, val, protocol in (("a", 500.0, "closed-set"), ("b", 400.0, "open-set")):
        record.write(tmp_path / "r", name, ok_files({"config.yaml": dump_yaml(Config(experiment=name, protocol=protocol)),
                                                     schema.METRICS: json.dumps({"val/score": val, "test/score": 1.0})}),
                     {"status": "ok"})
    import warnings

    with warnings.catch_warnings(record=True) as escaped:  # what Python would print with its source line
        warnings.simplefilter("always")
        assert cli.main(["choose", str(tmp_path / "r"), "--out", str(tmp_path / "best.yaml")]) == 0
    assert escaped == []
    out, err = capsys.readouterr()
    assert out.count("not strictly comparable") == 1 and "not strictly comparable" not in err
    assert "UserWarning" not in out + err


def test_runs_of_one_search_are_named_by_what_differs():
    """A search's runs share one experiment name: "best: study-x, runner-up: study-x" said nothing."""
    rows = [_row("study-x", 0, 500, 0, loss="triplet", augment="strong"), _row("study-x", 0, 450, 0)]
    text = format_choice(choose(pd.DataFrame(rows)))
    assert "best:      study-x (augment=strong, loss=triplet)" in text
    assert "runner-up: study-x (augment=report, loss=ce)" in text
    text = format_choice(choose(_table()))  # different names: the names alone
    assert "best:      a: " in text and "runner-up: b: " in text


# --- issue 26: choose --by a rule (a metric, a label-free validator, a rank average) -------------------
def _validated():
    """a: best val/score, poor validators; b: best snd and cycle; c: the lowest entropy."""
    rows = [_row("a", 0, 500, 0), _row("b", 0, 400, 0, lr=0.01), _row("c", 0, 300, 0, lr=0.1)]
    for row, snd, entropy, cycle in zip(rows, (1.0, 3.0, 2.0), (0.9, 0.5, 0.1), (0.2, 0.9, 0.6)):
        row |= {"val/validator/snd": snd, "val/validator/entropy": entropy, "val/validator/cycle": cycle,
                "test/validator/snd": 4 - snd, "test/validator/cycle": cycle}
    return pd.DataFrame(rows)


def test_by_a_validator_reads_the_validation_splits_in_its_direction():
    choice = choose(_validated(), "validator/snd")
    assert choice["experiment"] == "b" and choice["metric"] == "val/validator/snd" and choice["higher_is_better"]
    assert choice["mean"] == pytest.approx(3.0) and choice["rule"] == "val/validator/snd (higher is better)"
    low = choose(_validated(), "val/validator/entropy")  # lower entropy: more confident matches
    assert low["experiment"] == "c" and low["higher_is_better"] is False


def test_the_test_splits_validators_may_choose_its_labelled_metrics_still_cannot():
    """Validators read no label: choosing by the test split's is what a competitor can do on an
    unlabeled test set. Every column a test label went into is still dropped unread."""
    df = _validated().assign(**{"test/score": "not a number", "test/degenerate": 0.0})
    choice = choose(df, "test/validator/snd")
    assert choice["experiment"] == "a" and choice["mean"] == pytest.approx(3.0)
    for rule in ("test/score", "val/score+test/top1", "score_per_minute"):
        with pytest.raises(ConfigError, match="refusing to choose on .*test.*label-free test/validator/NAME"):
            choose(df, rule)
    df.loc[0, "test/degenerate"] = 1.0  # the collapse flag is label-free too: a collapsed run is not ranked
    with pytest.warns(UserWarning, match=r"left out, their embeddings are degenerate \(test/degenerate = 1"):
        assert choose(df, "test/validator/snd")["experiment"] == "c"


def test_a_rank_average_is_the_mean_of_each_components_percentile():
    """val/score: a 1, b 2/3, c 1/3; cycle: a 1/3, b 1, c 2/3; entropy (lower better): a 1/3, b 2/3, c 1."""
    choice = choose(_validated(), "val/score+validator/cycle")
    assert choice["experiment"] == "b" and choice["mean"] == pytest.approx(5 / 6) and choice["higher_is_better"]
    assert choice["metric"] == "val/score+val/validator/cycle"
    assert [g["mean"] for g in choice["table"]] == pytest.approx([5 / 6, 2 / 3, 1 / 2])
    three = choose(_validated(), "val/score+validator/cycle+validator/entropy")
    assert [g["experiment"] for g in three["table"]] == ["b", "c", "a"]
    assert three["mean"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert "rank average of val/score (higher is better), val/validator/cycle (higher is better), " \
           "val/validator/entropy (lower is better)" in format_choice(three)


def test_runs_without_a_validator_say_why():
    df = _validated()
    df["val/validator/snd"] = np.nan  # same-domain runs: null, with a warning in their records
    with pytest.raises(ConfigError, match="val/validator/snd is recorded for query -> gallery splits only"):
        choose(df, "validator/snd")


def test_the_command_chooses_by_a_rule_writes_it_and_names_the_valid_ones(tmp_path, capsys):
    from benchmark import cli

    for name, val, snd in (("a", 500.0, 1.0), ("b", 400.0, 3.0)):
        metrics = {"val/score": val, "test/score": 1.0, "val/validator/snd": snd, "test/validator/snd": snd}
        record.write(tmp_path / "r", name, ok_files({"config.yaml": dump_yaml(Config(experiment=name)),
                                                     schema.METRICS: json.dumps(metrics)}), {"status": "ok"})
    best = tmp_path / "best.yaml"
    assert cli.main(["choose", str(tmp_path / "r"), "--by", "val/score+validator/snd", "--out", str(best)]) == 0
    sel = read_selection(best)
    assert sel["metric"] == "val/score+val/validator/snd" and sel["rule"].startswith("rank average of val/score")
    assert cli.main(["choose", str(tmp_path / "r"), "--metric", "validator/snd", "--out", str(best)]) == 0  # old name
    assert read_selection(best)["experiment"] == "b"
    capsys.readouterr()
    assert cli.main(["choose", str(tmp_path / "r"), "--by", "validator/entropy", "--out", str(best)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'val/validator/entropy' is not in the results; choose by one of: " in err
    for name in ("val/score", "test/validator/snd", "val/validator/snd", ", validator/snd", ", snd", "joined by '+'"):
        assert name in err
    assert "test/score" not in err


def test_the_command_refuses_a_criterion_that_is_no_quality_measure_before_reading_anything(tmp_path, capsys):
    """``choose RESULTS --by val/degenerate`` exited 0 and wrote best.yaml chosen by the collapse flag."""
    from benchmark import cli

    record.write(tmp_path / "r", "a", ok_files({"config.yaml": dump_yaml(Config(experiment="a")), schema.METRICS:
                                                json.dumps({"val/score": 500.0, "test/score": 1.0,
                                                            "val/degenerate": 0.0})}), {"status": "ok"})
    best = tmp_path / "best.yaml"
    for by in ("val/degenerate", "val/n_queries", "time/total_s", "val/score+val/score"):
        for results in (tmp_path / "r", tmp_path / "absent"):  # said before the results are read
            assert cli.main(["choose", str(results), "--by", by, "--out", str(best)]) == 2
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1 and err.startswith(f"error: --by {by}"), err
    assert not best.exists()
