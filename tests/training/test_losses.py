"""Losses and miners: the registry builds PML's own losses with the config's hyperparameters,
``ce`` is cross-entropy over a linear classifier, bad ``loss_args`` and miners are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from scipy.special import log_softmax

from benchmark.config import PARAMS, Config, ConfigError, from_dict
from benchmark.training.losses import build_loss, build_miner, check, compute
from benchmark.training.registry import LOSSES, MINERS, parameters


def _batch(n=24, dim=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return emb, torch.arange(n) % classes


def test_ce_is_cross_entropy_of_a_linear_classifier():
    emb, y = _batch()
    loss = build_loss(Config(loss="ce", embedding_dim=16), n_classes=4)
    w, b = loss.classifier.weight.detach().numpy(), loss.classifier.bias.detach().numpy()
    logits = emb.numpy().astype(np.float64) @ w.T.astype(np.float64) + b
    expected = -log_softmax(logits, axis=1)[np.arange(len(y)), y.numpy()].mean()
    assert compute(loss, None, emb, y).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name, cls, args", [
    ("arcface", pml_losses.ArcFaceLoss, {"margin": 10.0, "scale": 30.0}),
    ("cosface", pml_losses.CosFaceLoss, {"margin": 0.2}),
    ("subcenter_arcface", pml_losses.SubCenterArcFaceLoss, {"sub_centers": 2}),
    ("supcon", pml_losses.SupConLoss, {"temperature": 0.2}),
    ("triplet", pml_losses.TripletMarginLoss, {"margin": 0.3}),
    ("multi_similarity", pml_losses.MultiSimilarityLoss, {"alpha": 1.0, "beta": 40.0}),
    ("contrastive", pml_losses.ContrastiveLoss, {"neg_margin": 0.8}),
])
def test_losses_are_pml_with_the_configured_hyperparameters(name, cls, args):
    emb, y = _batch()
    cfg = Config(loss=name, loss_args=args, embedding_dim=16)
    torch.manual_seed(3)
    ours = build_loss(cfg, n_classes=4)
    torch.manual_seed(3)  # the same class weights for the classification losses
    theirs = cls(**({"num_classes": 4, "embedding_size": 16} if "num_classes" in parameters(cls) else {}), **args)
    assert isinstance(ours, cls)
    torch.testing.assert_close(compute(ours, None, emb, y), theirs(emb, y))
    default = build_loss(cfg.replace(loss_args={}), n_classes=4)
    torch.manual_seed(3)
    if name not in ("subcenter_arcface",):  # the hyperparameter changes the value
        assert not torch.allclose(compute(default, None, emb, y), theirs(emb, y))


def test_a_miner_restricts_the_loss_to_its_pairs():
    emb, y = _batch(seed=1)
    cfg = Config(loss="multi_similarity", miner="multi_similarity", embedding_dim=16)
    loss, miner = build_loss(cfg, 4), build_miner(cfg)
    pairs = pml_miners.MultiSimilarityMiner()(emb, y)
    expected = pml_losses.MultiSimilarityLoss()(emb, y, pairs)
    torch.testing.assert_close(compute(loss, miner, emb, y), expected)
    assert not torch.allclose(compute(loss, None, emb, y), expected)  # mining changed the loss
    assert isinstance(build_miner(cfg.replace(miner="batch_hard")), pml_miners.BatchHardMiner)
    assert build_miner(cfg.replace(miner="none")) is None


def test_bad_loss_args_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"loss_args: loss=arcface \(ArcFaceLoss\) has no parameter\(s\) marg; "
                                          r"its parameters: margin=28.6 \(a number in \[0, inf\)\), scale=64 "
                                          r"\(a number in \(0, inf\)\)$"):
        Config(loss="arcface", loss_args={"marg": 0.3})  # refused when the config is made, before any work
    with pytest.raises(ConfigError, match=r"its parameters: temperature=0.1 \(a number in \(0, inf\)\)$"):
        Config(loss="supcon", loss_args={"margin": 0.3})
    with pytest.raises(ConfigError, match="its parameters: none"):
        Config(loss="ce", loss_args={"margin": 0.3})
    with pytest.raises(ConfigError, match=r"loss_args.margin=-1 is not valid: must be a number in \[0, inf\)"):
        Config(loss="triplet", loss_args={"margin": -1})  # a value outside its declared domain
    with pytest.raises(ConfigError, match=r"loss_args.sub_centers=2.5 is not valid: must be an integer in \[1, inf\)"):
        Config(loss="subcenter_arcface", loss_args={"sub_centers": 2.5})
    with pytest.raises(ConfigError, match="miner=batch_hard has no effect with loss=ce"):
        check(Config(miner="batch_hard"))
    check(Config(loss="cosface", loss_args={"margin": 0.3, "scale": 30}))  # CosFace takes *args: parents count


def test_miner_args_reach_the_miner_and_bad_names_list_the_valid_ones():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(24, 8), dim=1)
    y = torch.arange(24) % 4
    cfg = Config(loss="triplet", miner="triplet_margin", miner_args={"margin": 0.05, "type_of_triplets": "semihard"})
    miner = build_miner(cfg)
    assert (miner.margin, miner.type_of_triplets) == (0.05, "semihard")
    expected = pml_miners.TripletMarginMiner(margin=0.05, type_of_triplets="semihard")(emb, y)
    assert all(torch.equal(a, b) for a, b in zip(miner(emb, y), expected))
    default = pml_miners.TripletMarginMiner()(emb, y)
    assert len(default[0]) != len(expected[0])  # the arguments changed what is mined
    with pytest.raises(ConfigError, match=r"miner_args: miner=triplet_margin \(TripletMarginMiner\) has no "
                                          r"parameter\(s\) marg; its parameters: margin=0.2 .*, type_of_triplets"):
        cfg.replace(miner_args={"marg": 0.1})
    with pytest.raises(ConfigError, match="miner_args.type_of_triplets='semi' is not valid; choose one of: all, hard"):
        cfg.replace(miner_args={"type_of_triplets": "semi"})
    with pytest.raises(ConfigError, match="miner_args has no effect with miner=none"):
        check(Config(loss="triplet", miner_args={"margin": 0.1}))
    assert from_dict({"miner": "pair_margin", "loss": "contrastive",
                      "miner_args": "{pos_margin: 0.1}"}).miner_args == {"pos_margin": 0.1}


def test_loss_args_from_yaml_and_cli():
    assert from_dict({"loss": "arcface", "loss_args": "{margin: 0.3, scale: 30}"}).loss_args == \
        {"margin": 0.3, "scale": 30}
    with pytest.raises(ConfigError, match="loss_args=.* is not valid: must be a valid dict"):
        from_dict({"loss_args": "[1, 2]"})
    with pytest.raises(ConfigError, match="loss_args may not be null"):
        from_dict({"loss_args": None})


def test_config_choices_are_the_registries():
    assert PARAMS["loss"].choices == tuple(LOSSES)
    assert PARAMS["miner"].choices == tuple(MINERS)
