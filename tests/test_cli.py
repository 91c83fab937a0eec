"""The command line: user errors are one line naming the input and the fix (exit 2), anything else
one line too (exit 1); ``--debug`` or BENCHMARK_DEBUG=1 shows the traceback. Every option of every
sub-command says what it does and its default."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from benchmark import catalog, cli
from benchmark.cli import main
from benchmark.config import Config, dump_yaml
from benchmark.results import record
from synthetic_results import ok_files


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


@pytest.mark.parametrize("command", ["report", "choose"])
def test_an_unwritable_out_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    """`report` / `choose --out` into a folder that cannot be written did all the work, then raised a
    raw OSError. (As root chmod is ignored: the folder lies under a file, which no one can write.)"""
    from benchmark.results import store

    record.write(tmp_path / "runs", "ok", ok_files({"config.yaml": dump_yaml(Config(experiment="ok")), "metrics.json":
                                                    json.dumps({"val/score": 500.0, "test/score": 480.0})}),
                 {"status": "ok"})
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(store, "load", lambda *a: pytest.fail("results read before --out was checked"))
    out = tmp_path / "file" / ("report" if command == "report" else "best.yaml")
    assert main([command, str(tmp_path / "runs"), "--out", str(out)]) == 2
    what = "report folder (--out)" if command == "report" else "folder of --out"
    where = out if command == "report" else out.parent
    assert _one_line_error(capsys) == (f"error: {what} {where} is not writable ({tmp_path / 'file'} is a file); "
                                       "choose another folder or fix its permissions")


def test_damaged_record_is_listed_by_results_and_report(tmp_path, capsys):
    cfg = Config(experiment="ok")
    record.write(tmp_path / "runs", "ok", ok_files({"config.yaml": dump_yaml(cfg), "metrics.json": json.dumps(
        {"val/score": 500.0, "test/score": 480.0, "time/cost_s": 10.0})}), {"status": "ok"})
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


@pytest.mark.parametrize("command", [["run", "--experiment", "demo-frozen-features"], ["sweep", "demo"],
                                     ["submit", "--config", "x.yaml", "--query", "q", "--gallery", "g"]])
def test_a_virtual_memory_limit_too_small_for_torch_is_one_line_before_any_work(command, tmp_path, capsys,
                                                                               monkeypatch):
    """`ulimit -v 1G` ended `benchmark run` in a segfault with no message (torch's import maps ~4 GiB)."""
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 30, resource.RLIM_INFINITY))
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("error: the virtual-memory limit (ulimit -v) is 1.00 GiB: torch maps about 4 GiB")
    assert line.endswith("Fix: ulimit -v unlimited (address space is not memory used; limit memory with ulimit -m "
                         "or a cgroup instead)")
    assert not (tmp_path / "out").exists()
    # a limit that torch loads under but a run's threads exhaust: the error says which limit ran out
    monkeypatch.setattr(resource, "getrlimit", lambda which: (6 << 30, resource.RLIM_INFINITY))
    assert cli._address_space_hint(RuntimeError("can't start new thread")).startswith(
        "; the virtual-memory limit (ulimit -v 6.00 GiB) ran out, not memory")
    assert cli._address_space_hint(KeyError("x")) == ""
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert cli._address_space_hint(MemoryError()) == ""  # no limit: a real shortage, said as it is


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
    Image.new("RGB", (8, 8), "white").save(tmp_path / "g" / "b.png")  # not the query's image
    assert main(["submit", "--config", str(cfg), "--query", str(tmp_path / "q"), "--gallery", str(tmp_path / "g"),
                 "--out", str(tmp_path / "s.json")]) == 2
    assert _one_line_error(capsys) == (f"error: weights file {weights} holds a list, not a state_dict of tensors; "
                                       "save one with torch.save(model.state_dict(), path)")


def _subparsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    seen = {}
    real = argparse.ArgumentParser.parse_known_args

    def capture(self, *a, **k):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen.update(action.choices)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(SystemExit):
        cli.main(["run"])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", real)
    return seen


def test_every_option_has_a_sentence_and_its_default(monkeypatch):
    subs = _subparsers(monkeypatch)
    assert {"run", "sweep", "results", "report", "choose", "submit", "score-submission", "make-competition",
            "cache", "list"} <= set(subs)
    for name, parser in subs.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {action.option_strings or action.dest}"
            assert action.help and len(action.help.split()) >= 3, f"{label} has no sentence"
            shown = parser._get_formatter()._get_help_string(action) % {"default": action.default}
            if action.option_strings and action.default not in (None, False, []):
                assert f"default: {action.default}" in shown or "default" in action.help, label
            assert shown.split("(")[0].split()[0] in text, label


def test_list_prints_one_row_per_item(capsys):
    from benchmark.config import FIELDS

    assert cli.main(["list", "keys", "--width", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:] if not line.startswith(" ")] == list(FIELDS)
    assert max(map(len, lines)) <= 5 * 40 + 4 * 2  # five columns of at most 40 characters
    assert _column(lines, "doc") == [re.sub(r"\s", "", d) for d in catalog.key_docs().values()]  # wrapped, whole


def _column(lines: list[str], name: str) -> list[str]:
    """The cells of column ``name`` of a wrapped table, each row's lines joined (whitespace dropped)."""
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", lines[0])]
    start = lines[0].index(name)
    end = next((s for s in starts if s > start), None)
    rows = []
    for line in lines[1:]:
        if not line.startswith(" "):
            rows.append("")
        rows[-1] += re.sub(r"\s", "", line[start:end])
    return rows


def test_list_backbones_shows_the_whole_fix(capsys):
    """The weights column cut the fix off ("...; ..."): long cells wrap instead."""
    from benchmark.models.backbones import describe, names

    assert cli.main(["list", "backbones", "--width", "60"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _column(lines, "weights") == [re.sub(r"\s", "", describe(n)["weights"]) for n in names()]
    assert "..." not in "".join(lines) and max(len(line) for line in lines) <= 6 * 60


def test_list_experiments_shows_what_tells_them_apart(capsys):
    """demo-no-normalize and demo-no-augment looked the same: their file's shared defaults filled the cut cell."""
    assert cli.main(["list", "experiments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = dict(zip([line.split()[0] for line in lines[1:] if not line.startswith(" ")], _column(lines, "overrides")))
    assert rows["demo-no-normalize"] == "lr=0.01epochs=3normalize=False"
    assert rows["demo-no-augment"] == "lr=0.01epochs=3augment=none"
    assert rows["demo-face-model-sface"] == "backbone=sfaceembedding=backbone"  # overrides a default of its file
    defaults = _column(lines, "defaults")[list(rows).index("demo-no-augment")]
    assert defaults == "dataset=orlmin_faces_per_person=5backbone=efficientnet_lite0weights=imagenet"


def test_a_closed_pipe_ends_quietly(tmp_path, capfd):
    """`benchmark cache ls | head -3` (or `list experiments | head`) ended in BrokenPipeError."""
    import os
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader (head) has gone
    saved = sys.stdout
    sys.stdout = open(write, "w", buffering=1)
    try:
        code = main(["list", "experiments"])
    finally:
        sys.stdout.close()
        sys.stdout = saved
    assert code == 141  # as a process stopped by SIGPIPE
    assert capfd.readouterr().err == ""


def _light(tmp_path) -> dict[str, list[str]]:
    (tmp_path / "truth.json").write_text(json.dumps({"queries": {"q": "A"}, "gallery": {"g": "A"}}))
    (tmp_path / "sub.json").write_text(json.dumps({"q": ["g"]}))
    return {"list sweeps": ["list", "sweeps"], "score-submission": ["score-submission", str(tmp_path / "sub.json"),
                                                                    "--truth", str(tmp_path / "truth.json")]}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["list sweeps", "score-submission"])
def test_light_commands_never_import_torch(command, tmp_path):
    """They imported torch: `list sweeps` took 8 s and 1.3 GB, `score-submission` 5.5 s and 1.2 GB
    (`cache ls`: tests/features/test_cache.py)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, json; from benchmark.cli import main; rc = main(json.loads(sys.argv[1])); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(_light(tmp_path)[command])], capture_output=True,
                         text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "torch imported: False"
    if command == "score-submission":
        assert json.loads(out.stdout.rsplit("torch", 1)[0])["score"] == 1000.0
    else:
        assert "report-ablation" in out.stdout


def test_results_and_choose_show_no_head_for_frozen_features(tmp_path, capsys):
    """They showed lr/epochs/augment for configurations without a head (frozen features), unlike Table 2."""
    import numpy as np

    from benchmark.config import resolve
    from synthetic_results import make_images, metrics_for, npz_bytes, write_run

    blob = npz_bytes(*make_images(tmp_path / "images"))
    rng = np.random.default_rng(0)
    for name, score in (("demo-lr0.01-ep3", 700.0), ("demo-frozen-features", 750.0)):
        cfg = resolve(name)
        write_run(tmp_path / "runs", name, cfg, metrics_for(score, score + 100, cfg.backbone, cfg.epochs, rng), blob)
    assert main(["results", str(tmp_path / "runs"), "--columns", "run_id", "lr", "epochs", "test/score"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["demo-frozen-features"][:4] == ["no", "head", "no", "head"]
    assert rows["demo-lr0.01-ep3"][:2] == ["0.010", "3"]
    assert main(["choose", str(tmp_path / "runs"), "--out", str(tmp_path / "best.yaml")]) == 0
    out = capsys.readouterr().out
    assert "best:      demo-frozen-features" in out and "runner-up: demo-lr0.01-ep3" in out
    differs = next(line for line in out.splitlines() if "differs:" in line)
    assert "lr: no head vs 0.01" in differs and "embedding: backbone vs head" in differs
    assert "epochs" not in differs and "augment" not in differs  # the same values on both sides
    # two frozen-feature configs do not differ in a learning rate they never use
    from benchmark.choose import _config_diff

    frozen = resolve("demo-frozen-features").to_dict()
    assert _config_diff(frozen, {**frozen, "lr": 0.5, "experiment": "x"}) == {
        "experiment": ["demo-frozen-features", "x"]}


# --- the domain gap's flags (issue 17) ------------------------------------------------------------------
def test_make_competition_gallery_style_flags_render_what_the_library_renders(tmp_path, capsys):
    """--gallery-style and --style-arg reach make_competition: the same rendered gallery, byte for byte."""
    pytest.importorskip("cv2")
    from test_competition import _lfw_home

    from benchmark.competition import make_competition

    home = _lfw_home()
    flags = ["--data-home", home, "--max-train-identities", "2", "--max-test-identities", "3", "--seed", "3"]
    assert main(["make-competition", "--out", str(tmp_path / "cli"), *flags, "--gallery-style", "lowres",
                 "--style-arg", "size=16"]) == 0
    make_competition(tmp_path / "lib", data_home=home, seed=3, max_train_identities=2, max_test_identities=3,
                     gallery_style="lowres", style_args={"size": 16})
    cli_gallery, lib_gallery = (sorted((tmp_path / d / "test" / "gallery").iterdir()) for d in ("cli", "lib"))
    assert [p.name for p in cli_gallery] == [p.name for p in lib_gallery] and cli_gallery
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(cli_gallery, lib_gallery))
    manifest = json.loads((tmp_path / "cli" / "competition.json").read_text())
    assert manifest["gallery_style"] == {"style": "lowres", "v": 1, "size": 16}
    capsys.readouterr()
    assert main(["make-competition", "--out", str(tmp_path / "bad"), *flags, "--gallery-style", "anime"]) == 2
    assert _one_line_error(capsys).startswith("error: --gallery-style 'anime': unknown style 'anime'; valid styles: none, ")


def test_submit_train_flag_reaches_submit(tmp_path, monkeypatch):
    from benchmark import submit

    seen = {}

    def fake(cfg, query, gallery, *, k, out, index_dir, train_dir, groupname):
        seen.update(train_dir=train_dir, k=k, lr=cfg.lr, groupname=groupname)
        return {}

    monkeypatch.setattr(submit, "submit", fake)
    monkeypatch.setattr(submit, "format_summary", lambda summary: "")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(dump_yaml(Config(backbone="resnet18", tracking="none")))
    assert main(["submit", "--config", str(cfg), "--query", "q", "--gallery", "g", "--train", str(tmp_path / "train"),
                 "--k", "3", "--set", "lr=0.5", "--groupname", "team7"]) == 0
    assert seen == {"train_dir": str(tmp_path / "train"), "k": 3, "lr": 0.5, "groupname": "team7"}


def test_choose_select_keeps_only_the_matching_experiments(tmp_path, capsys):
    """One test condition of a study holding several: the best of the rest wins, whatever others score."""
    import numpy as np

    from benchmark.config import resolve
    from synthetic_results import make_images, metrics_for, npz_bytes, write_run

    blob = npz_bytes(*make_images(tmp_path / "images"))
    rng = np.random.default_rng(0)
    for name, score in (("demo-lr0.01-ep3", 700.0), ("demo-frozen-features", 750.0), ("demo-lr0.1-ep3", 650.0)):
        cfg = resolve(name)
        write_run(tmp_path / "runs", name, cfg, metrics_for(score, score + 100, cfg.backbone, cfg.epochs, rng), blob)
    best = tmp_path / "best.yaml"
    assert main(["choose", str(tmp_path / "runs"), "--select", "demo-lr*", "--out", str(best)]) == 0
    out = capsys.readouterr().out
    assert "best:      demo-lr0.01-ep3" in out and "runner-up: demo-lr0.1-ep3" in out and "frozen" not in out
    assert "experiment: demo-lr0.01-ep3" in best.read_text()
    assert main(["choose", str(tmp_path / "runs"), "--select", "xd-*", "--out", str(best)]) == 2
    assert _one_line_error(capsys) == ("error: --select xd-* matches no experiment of the results; they are: "
                                       "demo-frozen-features, demo-lr0.01-ep3, demo-lr0.1-ep3")


def test_run_without_an_experiment_points_to_the_list(capsys):
    assert main(["run"]) == 2
    assert _one_line_error(capsys) == ("error: --experiment NAME is required: the named experiment to start from "
                                       "(benchmark list experiments)")
