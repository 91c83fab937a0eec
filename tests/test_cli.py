"""The command line: user errors are one line naming the input and the fix (exit 2), anything else
one line too (exit 1); ``--debug`` or BENCHMARK_DEBUG=1 shows the traceback."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.config import Config, dump_yaml
from benchmark.results import record


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["results", "report", "choose"])
def test_missing_results_folder_is_one_line(command, tmp_path, capsys):
    assert main([command, str(tmp_path / "nope")]) == 2
    assert _one_line_error(capsys) == (f"error: results folder {tmp_path / 'nope'} does not exist; give the --out "
                                       "folder of a `benchmark run` or `benchmark sweep`")


def test_all_failed_results_say_every_run_failed(tmp_path, capsys):
    for i in range(2):
        record.write(tmp_path, f"r{i}", {"config.yaml": dump_yaml(Config(experiment=f"r{i}"))},
                     {"status": "failed", "error": "FloatingPointError: loss became nan"})
    assert main(["choose", str(tmp_path), "--out", str(tmp_path / "best.yaml")]) == 2
    assert "error: every run failed (2 runs in the results): nothing to choose from" in _one_line_error(capsys)
    assert not (tmp_path / "best.yaml").exists()


def test_damaged_record_is_listed_by_results_and_report(tmp_path, capsys):
    cfg = Config(experiment="ok")
    record.write(tmp_path / "runs", "ok", {"config.yaml": dump_yaml(cfg), "metrics.json": json.dumps(
        {"val/score": 500.0, "test/score": 480.0, "time/cost_s": 10.0})}, {"status": "ok"})
    record.write(tmp_path / "runs", "broken", {"config.yaml": dump_yaml(cfg.replace(experiment="broken")),
                                               "metrics.json": '{"val/sc'}, {"status": "ok"})
    assert main(["results", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"damaged: broken: damaged record: {tmp_path / 'runs' / 'broken' / 'metrics.json'} is unreadable" in out
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "1 successful, 1 failed" in report and "broken/metrics.json is unreadable" in report


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "results", str(tmp_path / "nope")])
    monkeypatch.setenv("BENCHMARK_DEBUG", "1")
    with pytest.raises(Exception, match="does not exist"):
        main(["results", str(tmp_path / "nope")])


def test_an_unexpected_error_is_one_line_with_exit_1(tmp_path, capsys, monkeypatch):
    import benchmark.results.store

    def boom(directory):
        raise KeyError("surprise")

    monkeypatch.setattr(benchmark.results.store, "load", boom)
    assert main(["results", str(tmp_path)]) == 1
    assert _one_line_error(capsys) == "error: KeyError: 'surprise' (rerun with --debug for the traceback)"


def test_malformed_sweep_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "sweep.yaml"
    bad.write_text("method: grid\nparameters: {experiment: {values: [a}\n")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert _one_line_error(capsys).startswith(f"error: {bad}:2: invalid YAML")


def test_weights_file_that_is_not_a_state_dict_is_one_line(tmp_path, capsys):
    import torch

    weights = tmp_path / "model.pt"
    torch.save([1, 2, 3], weights)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(dump_yaml(Config(backbone="resnet18", weights=str(weights), embedding="backbone",
                                    device="cpu", tracking="none")))
    (tmp_path / "q").mkdir()
    (tmp_path / "g").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "q" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "g" / "b.png")
    assert main(["submit", "--config", str(cfg), "--query", str(tmp_path / "q"), "--gallery", str(tmp_path / "g"),
                 "--out", str(tmp_path / "s.json")]) == 2
    assert _one_line_error(capsys) == (f"error: weights file {weights} holds a list, not a state_dict of tensors; "
                                       "save one with torch.save(model.state_dict(), path)")
