"""Config: defaults, validation messages, YAML/CLI coercion, experiments, round trips."""

from __future__ import annotations

import dataclasses

import re

import pytest
import yaml

from benchmark import config
from benchmark.config import FIELDS, Config, ConfigError, from_dict, parse_overrides, resolve


def test_defaults_are_the_report_baseline():
    cfg = Config()
    assert (cfg.backbone, cfg.lr, cfg.epochs, cfg.batch_size) == ("efficientnet_b0", 0.001, 3, 32)
    assert cfg.augment == "report" and cfg.normalize
    assert (cfg.dataset, cfg.min_faces_per_person, cfg.protocol, cfg.split) == ("lfw", 20, "closed-set",
                                                                                (0.5, 0.2, 0.3))
    assert cfg.embedding_dim == 512 and cfg.dropout is None
    assert cfg.monitored == "val/loss"
    assert cfg.replace(protocol="open-set").monitored == "val/score"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        from_dict({"lr": 0.1, "learning_rate": 0.1, "epoch": 3})
    msg = str(err.value)
    assert "unknown config key(s): epoch, learning_rate" in msg
    for key in FIELDS:
        assert key in msg.split("valid keys:")[1]


@pytest.mark.parametrize("key, value, choices", [
    ("protocol", "half-set", ["closed-set", "open-set"]),
    ("engine", "fast", ["cached", "reference"]),
    ("embedding", "pixels", ["head", "backbone"]),
    ("dataset", "mnist", ["lfw", "imagefolder", "orl"]),
    ("device", "tpu", ["auto", "cpu", "cuda"]),
])
def test_bad_choice_lists_valid_choices(key, value, choices):
    with pytest.raises(ConfigError) as err:
        from_dict({key: value})
    msg = str(err.value)
    assert f"{key}={value!r} is not valid" in msg
    assert msg.endswith("choose one of: " + ", ".join(choices))


@pytest.mark.parametrize("key, value, kind", [
    ("lr", "fast", re.escape("a number in (0, inf)")),
    ("epochs", "three", re.escape("an integer in [1, inf)")),
    ("epochs", 2.5, re.escape("an integer in [1, inf)")),
    ("split", "[0.5, a, 0.5]", "a valid tuple"),
    ("max_identities", "some", re.escape("an integer in [2, inf), or null")),
])
def test_bad_type(key, value, kind):
    """A value of the wrong type names the key and the declared domain (benchmark.params)."""
    with pytest.raises(ConfigError, match=f"{key}=.* is not valid: must be {kind}"):
        from_dict({key: value})


def test_non_optional_null_rejected():
    with pytest.raises(ConfigError, match="lr may not be null"):
        from_dict({"lr": None})


@pytest.mark.parametrize("split", [(0.5, 0.2, 0.2), (0.6, 0.6, -0.2), (0.5, 0.5), (1.0, 0.0, 0.1)])
def test_split_must_be_three_fractions_summing_to_one(split):
    with pytest.raises(ConfigError, match="must be three non-negative fractions summing to 1"):
        from_dict({"split": list(split)})


@pytest.mark.parametrize("overrides, match", [
    ({"epochs": 0}, r"epochs=0 is not valid: must be an integer in \[1, inf\)"),
    ({"batch_size": -1}, r"batch_size=-1 is not valid: must be an integer in \[1, inf\)"),
    ({"lr": 0}, r"lr=0.0 is not valid: must be a number in \(0, inf\)"),
    ({"dropout": 1.0}, r"dropout=1.0 is not valid: must be a number in \[0, 1\), or null"),
    ({"protocol": "open-set", "monitor": "val/loss"}, "monitor=val/loss needs protocol=closed-set"),
    ({"max_identities": 0}, r"max_identities=0 is not valid: must be an integer in \[2, inf\), or null"),
    ({"max_identities": -1}, r"max_identities=-1 is not valid: must be an integer in \[2, inf\)"),
    # issue 16: values that passed validation and failed later (inside faiss, torchvision, the split)
    ({"max_identities": 1}, r"max_identities=1 is not valid: must be an integer in \[2, inf\), or null"),
    ({"seed": -1}, r"seed=-1 is not valid: must be an integer in \[0, 4294967295\]"),  # issue 23: a failed record
    ({"image_size": 1}, r"image_size=1 is not valid: must be an integer in \[16, inf\)"),  # issue 23: scored 75.8
    ({"lr": "inf"}, "lr=inf must be a finite number"),
    ({"lr": "nan"}, "lr=nan must be a finite number"),
    ({"weight_decay": "inf"}, "weight_decay=inf must be a finite number"),
    ({"backbone_lr": "inf"}, "backbone_lr=inf must be a finite number"),
    ({"split": "[.nan, 0.5, 0.5]"}, r"split=\[nan, 0.5, 0.5\] must be a finite number"),
    ({"input_std": "[1, 1, .inf]"}, r"input_std=\[1.0, 1.0, inf\] must be a finite number"),
    ({"image_size": 224, "resize": 200}, r"resize=200 < image_size=224: the eval view resizes the shorter side to "
                                         r"resize, then crops image_size; set resize >= 224 \(e.g. resize=256"),
    ({"image_size": 288}, r"resize=256 < image_size=288: .*set resize >= 288 \(e.g. resize=329"),
])
def test_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(overrides)


def test_coercion_from_strings():
    cfg = from_dict({"lr": "0.01", "epochs": "5", "augment": "no", "normalize": "true",
                     "split": "[0.6, 0.2, 0.2]", "data_home": "null", "max_identities": "7",
                     "dropout": "none", "weights": "random"})
    assert (cfg.lr, cfg.epochs, cfg.augment, cfg.normalize) == (0.01, 5, "none", True)
    assert cfg.split == (0.6, 0.2, 0.2) and isinstance(cfg.split, tuple)
    assert cfg.data_home is None and cfg.dropout is None and cfg.max_identities == 7
    assert from_dict({"epochs": 4.0}).epochs == 4


def test_parse_overrides():
    got = parse_overrides(["lr=0.01", "augment=false", "split=[0.6, 0.2, 0.2]", "data_home=",
                           "max_identities=null", "weights=random", "epochs=5", " seed =3"])
    assert got == {"lr": 0.01, "augment": False, "split": [0.6, 0.2, 0.2], "data_home": None,
                   "max_identities": None, "weights": "random", "epochs": 5, "seed": 3}
    assert parse_overrides(None) == {} == parse_overrides([])
    cfg = from_dict(got)
    assert (cfg.lr, cfg.augment, cfg.split, cfg.epochs, cfg.seed) == (0.01, "none", (0.6, 0.2, 0.2), 5, 3)


@pytest.mark.parametrize("item", ["lr", "=0.1", ""])
def test_parse_overrides_needs_key_value(item):
    with pytest.raises(ConfigError, match="must look like key=value; valid keys: experiment, dataset"):
        parse_overrides([item])


def test_resolve_named_experiment():
    cfg = resolve("efficientnet_b0-lr0.01-ep5", {"weights": "random", "max_identities": 5})
    assert (cfg.experiment, cfg.backbone, cfg.lr, cfg.epochs) == ("efficientnet_b0-lr0.01-ep5",
                                                                 "efficientnet_b0", 0.01, 5)
    assert (cfg.weights, cfg.max_identities) == ("random", 5)
    # overrides beat the experiment
    assert resolve("efficientnet_b0-lr0.01-ep5", {"lr": 0.5}).lr == 0.5
    # a file's defaults apply to each of its experiments
    demo = resolve("demo-lr0.01-ep3")
    assert (demo.dataset, demo.backbone, demo.min_faces_per_person) == ("orl", "efficientnet_lite0", 5)


def test_unknown_experiment_lists_known_ones():
    known = sorted(config.load_experiments())
    assert "efficientnet_b0-lr0.001-ep3" in known and len(known) >= 24
    with pytest.raises(ConfigError) as err:
        resolve("nope")
    assert str(err.value) == f"unknown experiment 'nope'; known: {', '.join(known)}"


def test_unknown_key_in_experiment_override():
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve("efficientnet_b0-lr0.001-ep3", {"lrr": 1})


def test_experiments_dir_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_experiments(tmp_path / "missing")
    (tmp_path / "a.yaml").write_text("experiments: {x: {lr: 0.1}}")
    (tmp_path / "b.yaml").write_text("experiments: {x: {lr: 0.2}}")
    with pytest.raises(ConfigError, match="'x' is defined twice"):
        config.load_experiments(tmp_path)


@pytest.mark.slow
def test_every_named_experiment_is_valid():
    from benchmark.training.losses import check

    for name in config.load_experiments():
        assert resolve(name).experiment == name
        check(resolve(name))  # loss_args and miner fit the loss


def test_yaml_round_trip(tmp_path):
    cfg = Config(lr=0.01, split=(0.6, 0.2, 0.2), max_identities=3, data_home="/x", dropout=0.1)
    path = tmp_path / "config.yaml"
    path.write_text(config.dump_yaml(cfg))
    assert yaml.safe_load(path.read_text())["split"] == [0.6, 0.2, 0.2]
    back = config.load_yaml(path)
    assert back == cfg
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(Config)}


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().lr = 0.1  # type: ignore[misc]


def test_a_broken_experiments_file_names_its_line_and_costs_only_its_own_experiments(tmp_path):
    (tmp_path / "good.yaml").write_text("experiments:\n  fine: {lr: 0.01}\n")
    (tmp_path / "zbroken.yaml").write_text("experiments:\n  other: {lr: 0.1\n  more: {}\n")
    assert resolve("fine", directory=tmp_path).lr == 0.01  # unrelated to the broken file: unaffected
    with pytest.raises(ConfigError) as err:
        resolve("other", directory=tmp_path)
    assert str(err.value) == (f"unknown experiment 'other'; known: fine; it may be in a file that could not be "
                              f"read: {tmp_path / 'zbroken.yaml'}:3: invalid YAML (expected ',' or '}}', but got "
                              "':'); fix that line of the file")
    with pytest.warns(UserWarning, match="zbroken.yaml:3: invalid YAML"):
        assert list(config.load_experiments(tmp_path)) == ["fine"]


def test_duplicate_yaml_keys_are_refused_with_file_and_line(tmp_path):
    """YAML keeps the last of two equal keys silently; a name in two files is refused, so is this."""
    (tmp_path / "dup.yaml").write_text("experiments:\n  a: {lr: 0.01}\n  b: {lr: 0.1}\n  a: {lr: 0.5}\n")
    with pytest.raises(config.DuplicateKeyError) as err:
        resolve("b", directory=tmp_path)  # not skipped as a broken file: the whole folder is refused
    assert str(err.value) == (f"{tmp_path / 'dup.yaml'}:4: key 'a' appears twice (line 2 and again line 4); YAML "
                              "would keep only the last value: delete or rename one of them")
    (tmp_path / "dup.yaml").write_text("experiments:\n  a: {lr: 0.01, epochs: 2, lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:2: key 'lr' appears twice \(line 2 and again line 2\)"):
        config.load_experiments(tmp_path)
    (tmp_path / "best.yaml").write_text("lr: 0.01\nepochs: 3\nlr: 0.1\n")
    with pytest.raises(ConfigError, match="best.yaml:3: key 'lr' appears twice"):
        config.load_yaml(tmp_path / "best.yaml")
    (tmp_path / "ok.yaml").write_text("base: &b {lr: 0.01}\nother: {<<: *b, epochs: 2}\n")  # merge keys still work
    assert config.read_yaml(tmp_path / "ok.yaml")["other"] == {"lr": 0.01, "epochs": 2}


def test_config_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file .* not found"):
        config.load_yaml(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- lr\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys to values, got a list"):
        config.load_yaml(tmp_path / "list.yaml")


# --- cross-domain keys (issue 17) ------------------------------------------------------------------------
def test_style_names_match_the_registry_and_bad_style_input_lists_the_valid_ones():
    from benchmark.config import STYLE_NAMES, ConfigError, from_dict
    from benchmark.features import styles

    assert STYLE_NAMES == ("none", *styles.STYLES)
    with pytest.raises(ConfigError, match="gallery_style='toon' is not valid; choose one of: none, stylization, "
                                          "cartoon, sketch, lowres, grey, dark, cast"):
        from_dict({"gallery_style": "toon"})
    with pytest.raises(ConfigError, match="train_styles=.*'toon' is not a style; choose from: none, stylization"):
        from_dict({"train_styles": "cartoon,toon"})
    assert from_dict({"train_styles": "none, cartoon"}).train_styles == ("none", "cartoon")
    assert from_dict({"train_styles": ["sketch"]}).to_dict()["train_styles"] == ["sketch"]
    with pytest.raises(ConfigError, match="query_style=cartoon needs query -> gallery retrieval"):
        from_dict({"query_style": "cartoon"})
    with pytest.raises(ConfigError, match=r"query_fraction=1.0 is not valid: must be a number in \(0, 1\), or null"):
        from_dict({"query_fraction": 1})
    with pytest.raises(ConfigError, match="style_args: 'lowress' is not a style; choose from: stylization"):
        from_dict({"style_args": {"lowress": {"size": 3}}})
    with pytest.raises(ConfigError, match=r"style_args.lowres.size=-3 is not valid: must be an integer in \[1, 4096\]"):
        from_dict({"style_args": {"lowres": {"size": -3}}})  # declared domain, checked when the config is made
    cfg = from_dict({"gallery_style": "cartoon", "val_gallery_style": "sketch"})
    assert cfg.query_gallery and cfg.gallery_styles == {"val": "sketch", "test": "cartoon"}
    assert not from_dict({}).query_gallery  # same-domain stays the default
