"""``benchmark list``: every experiment, key, backbone and sweep, read from their single sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from benchmark import catalog, config, sweepfile
from benchmark.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_listed_with_type_default_and_a_doc_line():
    df = catalog.keys().set_index("key")
    assert list(df.index) == list(config.FIELDS)
    base = Config().to_dict()
    for key, row in df.iterrows():
        assert yaml.safe_load(row["default"]) == base[key], key
        assert row["doc"], f"config key {key} has no comment above its field in benchmark/config.py"
    assert (df.loc["lr", "type"], df.loc["max_identities", "type"]) == ("float", "int | None")
    assert df.loc["protocol", "choices"] == "closed-set|open-set"
    assert df.loc["cache_dir", "doc"].startswith("feature cache folder; null = $BENCHMARK_CACHE_DIR")


def test_experiments_list_names_overrides_and_files(tmp_path, monkeypatch):
    df = catalog.experiments().set_index("experiment")
    assert sorted(df.index) == sorted(config.load_experiments(ROOT / "experiments"))
    assert df.loc["efficientnet_b0-bs8", "overrides"] == "backbone=efficientnet_b0 batch_size=8"
    assert Path(df.loc["efficientnet_b0-bs8", "file"]) == ROOT / "experiments" / "report.yaml"
    # a user folder adds experiments and replaces shipped ones of the same name
    (tmp_path / "u.yaml").write_text("defaults: {seed: 3}\nexperiments:\n  mine: {lr: 0.3}\n  efficientnet_b0-bs8: {}\n")
    monkeypatch.setenv(config.EXPERIMENTS_ENV, str(tmp_path))
    df = catalog.experiments().set_index("experiment")
    # what tells an experiment apart first, its file's shared defaults beside (issue 16)
    assert tuple(df.loc["mine", ["overrides", "defaults"]]) == ("lr=0.3", "seed=3")
    assert tuple(df.loc["efficientnet_b0-bs8", ["overrides", "defaults"]]) == ("(its file's defaults)", "seed=3")
    assert config.resolve("efficientnet_b0-bs8").batch_size == 32  # the user's definition wins
    monkeypatch.setenv(config.EXPERIMENTS_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="nope not found; fix --experiments or \\$BENCHMARK_EXPERIMENTS"):
        catalog.experiments()


@pytest.mark.slow
def test_sweeps_list_counts_grid_points():
    df = catalog.sweeps().set_index("sweep")
    # counted by hand from the files: 24 experiments; 2 protocols x 24; 8 demo experiments
    assert df.loc["report", ["name", "runs"]].tolist() == ["report-ablation", 24]
    assert df.loc["protocols", ["name", "runs"]].tolist() == ["protocol-audit", 48]
    assert df.loc["demo", "runs"] == 10
    assert df.loc["search", "runs"] == "bayes, cap 40"
    assert "lr (log_uniform_values 0.0001..0.1)" in df.loc["search", "parameters"]
    assert (ROOT / "experiments" / "sweeps" / "report.yaml").resolve() == (ROOT / "sweep.yaml").resolve()
    # a named sweep is found by file stem or by its name; a wrong one lists the known names
    assert sweepfile.find_sweep("protocol-audit") == sweepfile.find_sweep("protocols")
    named = ", ".join(sorted(p.stem for p in (ROOT / "experiments" / "sweeps").glob("*.yaml")))
    assert named.startswith("day, demo, protocols, recipes, report, search")
    with pytest.raises(ConfigError, match=f"named sweeps: {named} "):
        sweepfile.find_sweep("nope.yaml")


def test_backbones_list_dimensions_that_the_networks_produce(monkeypatch, tmp_path):
    from benchmark.models.backbones import build_backbone, names

    df = catalog.backbones().set_index("backbone")
    assert list(df.index) == names() and "sface" in names()
    for name in ("resnet18", "efficientnet_lite0"):
        net = build_backbone(Config(backbone=name, weights="random"))
        size = int(df.loc[name, "input_size"])
        assert net(torch.zeros(1, 3, size, size)).shape == (1, df.loc[name, "dim"]), name
    # weights availability is read from torchvision's cache folder
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert catalog.backbones().set_index("backbone").loc["resnet18", "weights"].startswith("ImageNet weights not cached")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"")
    assert catalog.backbones().set_index("backbone").loc["resnet18", "weights"] == \
        f"cached: {tmp_path / 'checkpoints' / 'resnet18-f37072fd.pth'}"


def test_styles_list_every_renderer_with_its_parameters():
    from benchmark.features import styles

    df = catalog.styles().set_index("style")
    assert list(df.index) == list(styles.STYLES)
    assert df.loc["lowres", "parameters"] == "size=24 (an integer in [1, 4096])" and df.loc["grey", "parameters"] == "none"
    assert df.loc["cartoon", "doc"].startswith("Cartoon rendering")


def test_remedies_list_every_registry_entry_with_its_declared_domains():
    from benchmark.evaluation.remedies import REMEDIES

    df = catalog.remedies().set_index("remedy")
    assert list(df.index) == list(REMEDIES)
    assert df.loc["centering", "config"] == "centering: true" and df.loc["kreciprocal", "config"] == "rerank: kreciprocal"
    assert "lambda_value=0.3 (a number in [0, 1])" in df.loc["kreciprocal", "parameters"]
