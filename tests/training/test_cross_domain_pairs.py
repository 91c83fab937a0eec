"""Training on cross-domain pairs (issue 24, item 3): ``domain_balance`` batches draw each identity's m
images from both its photos and its renders, ``positives=cross_domain`` keeps only the positive pairs of
a photo and a render in what a pair-based loss sees. Checked against brute-force enumerations and losses
written out by hand; bad combinations are one line."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from benchmark.config import Config, ConfigError
from benchmark.training.fit import _warn_one_domain
from benchmark.training.losses import build_loss, build_miner, check, compute, cross_domain, every_tuple
from benchmark.training.registry import LOSSES, pair_based
from benchmark.training.sampling import batch_order, one_domain

#: what a config with a two-domain training split needs beside the keys under test
DOMAINS = dict(dataset="imagefolder", domains="domains.csv")


def _frame(photos: list[int], renders: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and render flags of identities with ``photos[i]`` photos and ``renders[i]`` renders, shuffled."""
    labels = np.concatenate([np.repeat(i, p + r) for i, (p, r) in enumerate(zip(photos, renders))])
    render = np.concatenate([np.arange(p + r) >= p for p, r in zip(photos, renders)])
    order = np.random.default_rng(5).permutation(len(labels))
    return labels[order], render[order]


@pytest.mark.parametrize("m, batch_size", [(4, 8), (2, 6), (3, 9)])
def test_domain_balanced_batches_hold_both_domains_of_each_identity_in_the_declared_proportion(m, batch_size):
    labels, render = _frame([4, 5, 6, 4, 7, 5], [4, 6, 4, 5, 4, 6])
    batches = batch_order(len(labels), batch_size, seed=0, epoch=0, labels=labels, samples_per_class=m, render=render)
    assert len(batches) == len(labels) // batch_size and all(len(b) == batch_size for b in batches)
    for b in map(torch.Tensor.numpy, batches):
        assert len(set(b)) == batch_size  # every identity has >= m images per domain share: no repeats
        per_identity = Counter(labels[b].tolist())
        assert len(per_identity) == batch_size // m and set(per_identity.values()) == {m}
        for lab in per_identity:
            mine = b[labels[b] == lab]
            assert (int((~render[mine]).sum()), int(render[mine].sum())) == ((m + 1) // 2, m // 2)
    again = batch_order(len(labels), batch_size, 0, 0, labels=labels, samples_per_class=m, render=render)
    assert all(torch.equal(x, y) for x, y in zip(batches, again))  # a pure function of (seed, epoch)
    other = batch_order(len(labels), batch_size, 0, 1, labels=labels, samples_per_class=m, render=render)
    assert not all(torch.equal(x, y) for x, y in zip(batches, other))


def test_an_identity_short_of_a_domain_fills_from_the_other_and_one_of_a_single_domain_keeps_to_it():
    labels, render = _frame([8, 6, 0, 5], [0, 1, 7, 5])  # photos only, one render, renders only, both
    assert one_domain(labels, render) == [0, 2]
    batches = batch_order(len(labels), 16, seed=3, epoch=0, labels=labels, samples_per_class=4, render=render)
    want = {0: (4, 0), 1: (3, 1), 2: (0, 4), 3: (2, 2)}  # (photos, renders) of each identity's 4
    for b in map(torch.Tensor.numpy, batches):
        assert len(set(b)) == 16
        for lab, (n_photos, n_renders) in want.items():
            mine = b[labels[b] == lab]
            assert (int((~render[mine]).sum()), int(render[mine].sum())) == (n_photos, n_renders)


def test_one_domain_identities_are_counted_in_one_warning():
    names = np.array(["ann", "ann", "bob", "bob", "cy", "cy"])
    engine = SimpleNamespace(df=pd.DataFrame({"identity": names}), train_idx=np.arange(6),
                             renders=lambda idx: np.array([0, 1, 0, 0, 1, 1], dtype=bool)[idx])
    with pytest.warns(UserWarning, match=r"^domain_balance: 2 of 3 training identities have images of one domain "
                                         r"only \(e.g. bob\); their batches draw from that domain alone$") as caught:
        _warn_one_domain(engine)
    assert len(caught) == 1


# --- cross-domain positives -----------------------------------------------------------------------

def _batch(n=14, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    labels = torch.arange(n) % classes
    render = torch.rand(n, generator=g) < 0.5
    return emb, labels, render


def _cross_pairs(labels, render) -> set[tuple[int, int]]:
    """Every ordered pair of distinct items of one identity and two domains, by enumeration."""
    n = len(labels)
    return {(i, j) for i in range(n) for j in range(n)
            if i != j and labels[i] == labels[j] and render[i] != render[j]}


def _triplets(t) -> set[tuple[int, int, int]]:
    return set(zip(*(x.tolist() for x in t)))


def test_the_filter_keeps_exactly_the_cross_domain_positives_of_a_pair_miner():
    emb, labels, render = _batch()
    mined = pml_miners.PairMarginMiner(pos_margin=1.0, neg_margin=1.2)(emb, labels)
    a1, p, a2, n = cross_domain(mined, render)
    mined_pos = set(zip(mined[0].tolist(), mined[1].tolist()))
    assert set(zip(a1.tolist(), p.tolist())) == mined_pos & _cross_pairs(labels, render)
    assert 0 < len(a1) < len(mined_pos) < len(every_tuple(pml_losses.ContrastiveLoss(), labels)[0])  # both dropped some
    assert torch.equal(a2, mined[2]) and torch.equal(n, mined[3])  # negatives as mined
    # without a miner: every cross-domain pair, and every negative pair
    a1, p, a2, n = cross_domain(every_tuple(pml_losses.ContrastiveLoss(), labels), render)
    assert set(zip(a1.tolist(), p.tolist())) == _cross_pairs(labels, render)
    assert set(zip(a2.tolist(), n.tolist())) == {(i, j) for i in range(14) for j in range(14) if labels[i] != labels[j]}


def test_the_filter_keeps_exactly_the_triplets_whose_positive_pair_crosses_domains():
    emb, labels, render = _batch(seed=1)
    everything = pml_miners.TripletMarginMiner(margin=10.0, type_of_triplets="all")(emb, labels)
    brute = {(a, p, n) for a, p in _cross_pairs(labels, render) for n in range(14) if labels[n] != labels[a]}
    assert _triplets(cross_domain(everything, render)) == brute
    assert _triplets(cross_domain(every_tuple(pml_losses.TripletMarginLoss(), labels), render)) == brute
    semihard = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(emb, labels)
    kept = _triplets(cross_domain(semihard, render))
    assert kept == _triplets(semihard) & brute and 0 < len(kept) < len(_triplets(semihard))


def _cfg(loss, **kw):
    return Config(loss=loss, positives="cross_domain", embedding_dim=8, **DOMAINS, **kw)


def test_the_contrastive_loss_on_cross_domain_positives_is_the_loss_written_out():
    emb, labels, render = _batch(seed=2)
    d = torch.cdist(emb.double(), emb.double()).numpy()
    pos = [d[i, j] for i, j in _cross_pairs(labels, render)]  # pos_margin 0: every positive distance counts
    neg = [max(0.0, 1.0 - d[i, j]) for i, j in itertools.permutations(range(14), 2) if labels[i] != labels[j]]
    expected = np.mean(pos) + np.mean([v for v in neg if v > 0])  # PML averages the non-zero terms
    cfg = _cfg("contrastive")
    got = compute(build_loss(cfg, 3), build_miner(cfg), emb, labels, render)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert compute(build_loss(cfg, 3), None, emb, labels).item() != pytest.approx(expected, rel=1e-3)


def test_the_triplet_loss_on_cross_domain_positives_is_the_loss_written_out():
    emb, labels, render = _batch(seed=3)
    d = torch.cdist(emb.double(), emb.double()).numpy()
    terms = [d[a, p] - d[a, n] + 0.3 for a, p in _cross_pairs(labels, render) for n in range(14)
             if labels[n] != labels[a]]
    expected = np.mean([t for t in terms if t > 0])
    cfg = _cfg("triplet", loss_args={"margin": 0.3})
    assert compute(build_loss(cfg, 3), None, emb, labels, render).item() == pytest.approx(expected, rel=1e-5)


def test_a_mined_multi_similarity_loss_on_cross_domain_positives_is_pml_on_the_filtered_pairs():
    emb, labels, render = _batch(seed=4)
    cfg = _cfg("multi_similarity", miner="multi_similarity", miner_args={"epsilon": 0.5})
    mined = pml_miners.MultiSimilarityMiner(epsilon=0.5)(emb, labels)
    keep = [k for k, (i, j) in enumerate(zip(mined[0].tolist(), mined[1].tolist())) if render[i] != render[j]]
    assert 0 < len(keep) < len(mined[0])
    filtered = (mined[0][keep], mined[1][keep], mined[2], mined[3])
    expected = pml_losses.MultiSimilarityLoss()(emb, labels, filtered)
    got = compute(build_loss(cfg, 3), build_miner(cfg), emb, labels, render)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)  # not assert_close: its first call imports 2 s


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(positives="cross_domain"), "positives=cross_domain needs the training images' domains: set domains "
                                     "(a path,domain CSV, e.g. make-competition's train/domains.csv)"),
    (dict(domain_balance=True, samples_per_class=2), "domain_balance=true needs the training images' domains"),
    (dict(domain_balance=True, **DOMAINS), "domain_balance=true splits each identity's samples_per_class images of "
                                           "a batch between photos and renders; set samples_per_class (e.g. 2)"),
    (dict(positives="some"), "positives='some' is not valid; choose one of: all, cross_domain"),
])
def test_bad_domain_keys_are_one_line_when_the_config_is_made(overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        Config(**overrides)


@pytest.mark.parametrize("loss", [name for name in LOSSES if not pair_based(name)])
def test_cross_domain_positives_with_a_classifier_loss_name_the_fix(loss):
    with pytest.raises(ConfigError, match=fr"^positives=cross_domain has no effect with loss={loss} \(a classifier "
                                          r"over identities sees no pairs\); use a pair-based loss \(e.g. "
                                          r"loss=multi_similarity\) or positives=all$"):
        check(Config(loss=loss, positives="cross_domain", **DOMAINS))


def test_the_pair_based_losses():
    assert [n for n in LOSSES if pair_based(n)] == ["supcon", "triplet", "multi_similarity", "contrastive"]
    check(_cfg("supcon", miner="batch_hard"))


# --- end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_domain_balanced_cross_domain_run_on_a_two_domain_imagefolder_finishes_and_records(lfw_home, tmp_path):
    pytest.importorskip("cv2")
    from benchmark.competition import make_competition
    from benchmark.pipeline import prepare
    from benchmark.run import run, run_id_for

    make_competition(tmp_path / "day", data_home=lfw_home, seed=1, max_train_identities=9, max_test_identities=2,
                     max_train_images_per_identity=6, train_styles="lowres,grey", train_render_fraction=0.5)
    cfg = Config(experiment="pairs", dataset="imagefolder", data_home=str(tmp_path / "day" / "train"),
                 domains="domains.csv", min_faces_per_person=2, protocol="open-set", split=(0.34, 0.33, 0.33),
                 backbone="resnet18", weights="random", image_size=32, resize=36, augment="none", epochs=1,
                 batch_size=4, loss="multi_similarity", samples_per_class=2, domain_balance=True,
                 positives="cross_domain", tracking="none", device="cpu", num_workers=0, runtime="torch",
                 cache_dir=str(tmp_path / "cache"))
    engine = prepare(cfg).engine
    render = engine.renders(engine.train_idx)
    labels = engine.train_labels().numpy()
    for b in map(torch.Tensor.numpy, engine.batches(0)):  # each identity: one photo and one render
        assert all(sorted(render[b][labels[b] == lab].tolist()) == [False, True] for lab in set(labels[b]))
    result = run(cfg, tmp_path / "runs")
    assert result["status"] == "ok"
    rdir = tmp_path / "runs" / run_id_for(cfg)
    history = pd.read_csv(rdir / "history.csv")
    assert len(history) == 1 and np.isfinite(history["train/loss"]).all()
    recorded = (rdir / "config.yaml").read_text()
    assert "domain_balance: true" in recorded and "positives: cross_domain" in recorded
    assert json.loads((rdir / "metrics.json").read_text())
    assert (rdir / "embeddings.npz").is_file()
