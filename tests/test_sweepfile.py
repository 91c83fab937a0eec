"""Sweep files: every shipped one passes W&B's own schema (so `wandb sweep` takes it), every parameter
form W&B accepts loads, and each bad file is refused with one line naming the key (exit 2)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from benchmark import cli, sweepfile
from benchmark.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "sweep.yaml", *sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_sweep_file_passes_wandbs_schema(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    doc = yaml.safe_load(path.read_text())
    body = {k: v for k, v in doc.items() if k not in sweepfile.SERVER_KEYS}  # run_cap: W&B's server key
    assert sweeps.schema_violations_from_proposed_config(body) == []
    sweeps.SweepConfig(body)  # raises on any violation, as `wandb sweep` does
    assert sweepfile.load(path)["name"] == doc["name"]


def _write(tmp_path, **doc) -> Path:
    path = tmp_path / "s.yaml"
    base = {"name": "s", "method": "random", "metric": {"name": "val/score", "goal": "maximize"},
            "parameters": {"experiment": {"value": "demo-lr0.01-ep3"}}, "run_cap": 3}
    params = {**base["parameters"], **doc.pop("parameters", {})}
    path.write_text(yaml.safe_dump({**base, **doc, "parameters": params}))
    return path


@pytest.mark.parametrize("doc,line", [
    ({"parameters": {"lr": {"values": "0.01"}}}, "parameters.lr.values: must be a list, got a str"),
    ({"parameters": {"lr": {"values": {"a": 0.01}}}}, "parameters.lr.values: must be a list, got a mapping"),
    ({"parameters": {"lr": {"values": []}}}, "parameters.lr.values: is empty"),
    ({"method": "anneal"}, "method: 'anneal' is not one of bayes, random, grid, custom"),
    ({"method": "custom"}, "method: 'custom' cannot run offline"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values"}}},
     "parameters.lr: distribution log_uniform_values needs max and min"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.1}}}, "parameters.lr: distribution uniform needs max"),
    ({"parameters": {"lr": {"distribution": "lognormal_values", "min": 1, "max": 2}}},
     "parameters.lr.distribution: 'lognormal_values' is not one of q_beta, beta, categorical,"),
    ({"run_cap": 0}, "run_cap: 0 must be a positive whole number"),
    ({"parameters": {"lr": {"min": 0.1, "max": 0.01}}}, "parameters.lr: min 0.1 is not less than max 0.01"),
    ({"parameters": {"lrr": {"values": [1]}}}, "parameters.lrr: 'lrr' is not a config key"),
    ({"parameters": {"lr": {"values": [0.01, -1.0]}}}, "parameters.lr: lr=-1.0 is not valid: must be a number in (0, inf)"),
    ({"parameters": {"epochs": {"min": 1.0, "max": 4.0}}}, "parameters.epochs: epochs is a whole number"),
    ({"parameters": {"lr": {"values": [0.1, 0.01], "probabilities": [0.3, 0.3]}}},
     "parameters.lr: Probabilities [0.3, 0.3] do not sum to 1"),
    ({"parameters": {"experiment": {"value": "nope"}}}, "parameters.experiment: unknown experiment(s) nope"),
    ({"parameters": {"epochs": {"parameters": {"a": {"value": 1}}}}},
     "parameters.epochs.parameters: only mapping keys"),
    ({"metric": {"name": "val/score", "goal": "up"}}, "metric.goal: 'up' is not one of minimize, maximize"),
    # issue 23 rule 6 (a): a failed anyOf/oneOf names its deepest failing field and what it needed
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 0.1}}},
     "parameters.lr.min: must be > 0.0, got 0"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0.1, "max": 0.1}}},
     "parameters.lr: min 0.1 is not less than max 0.1"),
    ({"early_terminate": {"max_iter": 27, "s": 2}}, "early_terminate: needs type (one of: hyperband)"),
    ({"early_terminate": {"type": "envelope", "max_iter": 27, "s": 2}},
     "early_terminate.type: 'envelope' is not one of hyperband"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": -1}},
     "early_terminate.eta: must be > 1, got -1"),
    ({"parameters": {"loss_args": {"parameters": {"margin": {"distribution": "uniform", "min": 0.1, "max": 0.5,
                                                             "mu": 0.2}}}}},
     "parameters.loss_args.parameters.margin: distribution uniform takes no mu (it takes: min, max, distribution)"),
    # siblings
    ({"early_terminate": {"type": "hyperband", "min_iter": 0}}, "early_terminate.min_iter: must be >= 1, got 0"),
    ({"early_terminate": {"type": "hyperband", "eta": 3}}, "early_terminate: needs max_iter and s, or min_iter"),
    ({"early_terminate": {"type": "hyperband", "min_iter": 2, "every": 1}},
     "early_terminate: type hyperband takes no every"),
    ({"early_terminate": "hyperband"}, "early_terminate: must be a mapping, got a str ('hyperband')"),
    ({"parameters": {"lr": {"distribution": "q_log_uniform_values", "min": 0, "max": 0.1, "q": 0.01}}},
     "parameters.lr.min: must be > 0.0, got 0"),
    ({"parameters": {"weight_decay": {"distribution": "q_uniform", "min": 0, "max": 1, "q": -1}}},
     "parameters.weight_decay.q: must be > 0, got -1"),
    ({"parameters": {"epochs": {"distribution": "int_uniform", "min": 1.5, "max": 4}}},
     "parameters.epochs.min: must be a whole number, got a float (1.5)"),
    ({"parameters": {"loss_args": {"parameters": {"margin": {"values": "0.2"}}}}},
     "parameters.loss_args.parameters.margin.values: must be a list, got a str ('0.2')"),
    ({"parameters": {"lr": {"min": 0.001}}}, "parameters.lr: needs max"),
    ({"metric": {"name": "val/score", "goal": "maximize", "target": "high"}},
     "metric.target: must be a number, got a str ('high')"),
    # (b): Hyperband settings W&B's engine refuses (no bands: every run failed), with the field and a fix
    ({"early_terminate": {"type": "hyperband", "max_iter": 0, "s": 2}},
     "early_terminate.max_iter: 0 gives Hyperband no bands"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 27, "s": 0}},
     "early_terminate.s: 0 gives Hyperband no bands"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 1}},
     "early_terminate.eta: must be > 1, got 1"),
    # siblings
    ({"early_terminate": {"type": "hyperband", "max_iter": 2, "s": 2}},
     "early_terminate.max_iter: 2 gives Hyperband no bands"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 30}},
     "early_terminate.eta: 30 gives Hyperband no bands"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 27, "s": 1.5}},
     "early_terminate.s: 1.5 is refused by W&B's Hyperband"),
    # (c): metric.name is a validation metric the runs record where the search reads it, in its direction
    ({"method": "bayes", "metric": {"name": "val/nosuch", "goal": "maximize"}},
     "metric.name: 'val/nosuch' is not a validation metric the runs record for bayes; use one of: val/top1, "),
    # siblings
    ({"method": "bayes", "metric": {"name": "val/loss", "goal": "minimize"}},
     "metric.name: 'val/loss' is not a validation metric the runs record for bayes"),
    ({"metric": {"name": "val/n_queries", "goal": "maximize"}},
     "metric.name: 'val/n_queries' is not a validation metric the runs record for the sweep"),
    ({"metric": {"name": "time/total_s", "goal": "minimize", "target": 60}},
     "metric.name: 'time/total_s' is not a validation metric the runs record for metric.target"),
    ({"method": "bayes", "metric": {"name": "test/score", "goal": "maximize"}},
     "metric.name: test/score is a test-split metric"),
    ({"method": "bayes", "metric": {"name": "val/score"}},
     "metric.goal: left out, so W&B minimizes: that searches for the worst val/score; write goal: maximize"),
    ({"metric": {"name": "val/loss", "goal": "maximize"}, "early_terminate": {"type": "hyperband", "min_iter": 1}},
     "metric.goal: maximize: that searches for the worst val/loss; write goal: minimize"),
])
def test_a_bad_sweep_file_is_refused_with_one_line_naming_the_key(tmp_path, doc, line, capsys):
    path = _write(tmp_path, **doc)
    with pytest.raises(ConfigError) as err:
        sweepfile.load(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {line}"), lines[0]
    assert cli.main(["sweep", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {lines[0]}"


@pytest.mark.parametrize("metric,early_terminate", [
    ({"name": "val/loss", "goal": "minimize"}, {"type": "hyperband", "min_iter": 1, "eta": 2}),
    ({"name": "lr", "goal": "maximize"}, {"type": "hyperband", "max_iter": 27, "s": 2}),
    ({"name": "val/map_at_r", "goal": "maximize"}, {"type": "hyperband", "max_iter": 4, "s": 1, "eta": 4}),
])
def test_per_epoch_metrics_and_settings_hyperband_reads_are_accepted(tmp_path, metric, early_terminate):
    """Hyperband reads each epoch's history, which holds val/loss and lr besides the validation metrics."""
    assert sweepfile.load(_write(tmp_path, metric=metric, early_terminate=early_terminate))["metric"] == metric


def test_several_violations_are_one_line_each(tmp_path):
    path = _write(tmp_path, parameters={"lr": {"values": []}, "weight_decay": {"values": "0"}}, run_cap=-1)
    with pytest.raises(ConfigError) as err:
        sweepfile.load(path)
    assert [line.split(": ")[1] for line in str(err.value).splitlines()] == \
        ["parameters.lr.values", "parameters.weight_decay.values", "run_cap"]


def test_every_parameter_form_wandb_accepts_loads(tmp_path):
    path = _write(tmp_path, method="bayes", parameters={
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
        "weight_decay": {"distribution": "q_uniform", "min": 0.0, "max": 0.01, "q": 0.001},
        "dropout": {"distribution": "normal", "mu": 0.2, "sigma": 0.05},
        "epochs": {"distribution": "int_uniform", "min": 2, "max": 4},
        "batch_size": {"values": [16, 32], "probabilities": [0.25, 0.75]},
        "augment": {"value": "none"},
        "loss_args": {"parameters": {"margin": {"min": 0.1, "max": 0.5}}},
    }, early_terminate={"type": "hyperband", "max_iter": 4, "s": 2})
    assert sweepfile.load(path)["method"] == "bayes"


def test_grid_ranges_expand_as_wandbs_grid_does(tmp_path):
    from sweeps.grid_search import grid_search_next_runs
    from sweeps import RunState, SweepRun

    path = _write(tmp_path, method="grid", parameters={
        "epochs": {"distribution": "int_uniform", "min": 2, "max": 4},
        "weight_decay": {"distribution": "q_uniform", "min": 0.0, "max": 0.003, "q": 0.001}})
    doc = sweepfile.load(path)
    ours = sweepfile.expand(doc)
    runs = []
    while (nxt := grid_search_next_runs(runs, {k: v for k, v in doc.items() if k != "run_cap"})[0]) is not None:
        runs.append(SweepRun(name=str(len(runs)), state=RunState.finished, config=nxt.config))
    theirs = [{k: v["value"] for k, v in r.config.items()} for r in runs]
    key = lambda d: sorted(d.items())  # noqa: E731
    assert len(ours) == 9 and sorted(map(key, ours)) == sorted(map(key, theirs))
    with pytest.raises(ConfigError, match="parameters.lr: a grid needs values"):
        sweepfile.load(_write(tmp_path, method="grid", parameters={"lr": {"min": 0.001, "max": 0.1}}))


def test_catalog_and_sweep_do_not_import_each_other():
    """Issue 15's circle: both read sweep files through sweepfile; neither imports torch before a run starts."""
    import subprocess
    import sys

    for module, absent in (("benchmark.catalog", ("benchmark.sweep", "torch")),
                           ("benchmark.sweep", ("benchmark.catalog", "torch"))):
        probe = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
        assert out.strip() == "[]", (module, out)
