"""Label-free validators (issue 26 item 1): each held to its formula written out as plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.config import Config
from benchmark.evaluation import remedies, validators
from benchmark.evaluation.evaluate import split_validators
from benchmark.results import schema


def _unit(rng, n, d=6):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax_entropy(logits: list[float]) -> float:
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    p = [v / sum(e) for v in e]
    return -sum(pi * math.log(pi) for pi in p if pi > 0)


def _loop_snd(q, g, T):
    """Saito et al. 2021: mean over points of the entropy of softmax over the *other* points' s/T."""
    x = list(q) + list(g)
    return sum(_softmax_entropy([float(x[i] @ x[j]) / T for j in range(len(x)) if j != i])
               for i in range(len(x))) / len(x)


def _loop_entropy(q, g, T):
    return sum(_softmax_entropy([float(qi @ gj) / T for gj in g]) for qi in q) / len(q)


def _loop_cycle(q, g):
    mutual = 0
    for i, qi in enumerate(q):
        sims = [float(qi @ gj) for gj in g]
        j = sims.index(max(sims))  # first = lowest index on a tie
        back = [float(qk @ g[j]) for qk in q]
        mutual += back.index(max(back)) == i
    return mutual / len(q)


def _plane(*degrees):
    return np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


# a hand-made case in the plane: queries at 0, 90, 102 degrees, gallery at 5, 95, 200
_Q, _G = _plane(0, 90, 102), _plane(5, 95, 200)


def test_the_hand_made_case_against_the_loops():
    """Query 0 and gallery 0 are mutual; queries 1 and 2 both want gallery 1, which wants query 1 (5 vs 7
    degrees): cycle = 2/3. Two equal queries tie for their gallery item: the first one keeps it."""
    q, g = _Q.astype(np.float32), _G.astype(np.float32)
    assert validators.cycle(q, g) == pytest.approx(2 / 3) == pytest.approx(_loop_cycle(_Q, _G))
    twins = _plane(10, 10, 180).astype(np.float32)
    for chunk in (1, 100):
        assert validators.cycle(twins, _plane(0, 170).astype(np.float32), chunk=chunk) == pytest.approx(2 / 3)
    for T in (0.05, 0.5, 2.0):
        assert validators.snd(q, g, T) == pytest.approx(_loop_snd(_Q, _G, T), rel=1e-5)
        assert validators.entropy(q, g, T) == pytest.approx(_loop_entropy(_Q, _G, T), rel=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])
def test_any_block_size_gives_the_formula(chunk):
    rng = np.random.default_rng(chunk)
    q, g = _unit(rng, 9), _unit(rng, 13)
    q32, g32 = q.astype(np.float32), g.astype(np.float32)
    assert validators.snd(q32, g32, 0.1, chunk=chunk) == pytest.approx(_loop_snd(q, g, 0.1), rel=1e-5)
    assert validators.entropy(q32, g32, 0.1, chunk=chunk) == pytest.approx(_loop_entropy(q, g, 0.1), rel=1e-5)
    assert validators.cycle(q32, g32, chunk=chunk) == pytest.approx(_loop_cycle(q, g))


def test_measure_normalizes_and_reads_the_embeddings_after_the_remedies():
    """Validators see what ranking compares: L2-normalized, after centering/whiten/dba/aqe."""
    rng = np.random.default_rng(1)
    q, g = _unit(rng, 5) * 3 + 0.5, _unit(rng, 8) - 0.2
    plain, notes = validators.measure(q, g, Config(query_fraction=0.5))
    qn, gn = remedies._normalize(q), remedies._normalize(g)
    assert notes == [] and plain["snd"] == pytest.approx(_loop_snd(qn, gn, 0.05), rel=1e-5)
    centred, _ = validators.measure(q, g, Config(query_fraction=0.5, centering=True, rerank="dba+kreciprocal"))
    qc, gc = remedies.dba(*remedies.centre(q, g), k=2, alpha=3.0)  # k-reciprocal makes scores, no embedding
    assert centred["entropy"] == pytest.approx(_loop_entropy(qc, gc, 0.05), rel=1e-5)
    assert centred["cycle"] == pytest.approx(_loop_cycle(qc, gc))


@pytest.mark.parametrize("n_q,n_g,null", [(1, 5, {"cycle"}), (3, 1, {"entropy"}), (1, 1, {"snd", "entropy", "cycle"})])
def test_what_cannot_be_computed_is_null_with_its_reason_never_0(n_q, n_g, null):
    rng = np.random.default_rng(2)
    values, notes = validators.measure(_unit(rng, n_q), _unit(rng, n_g), Config(query_fraction=0.5))
    assert {k for k, v in values.items() if v is None} == null
    assert len(notes) == len(null) and all("not computed (null): it needs at least" in n for n in notes)
    assert all(v is None or v > 0 for v in values.values())


def test_a_split_records_them_under_validator_and_same_domain_records_none():
    rng = np.random.default_rng(3)
    emb = _unit(rng, 8)
    sides = np.array(["query"] * 3 + ["gallery"] * 5)
    found, notes = split_validators(emb, sides, Config(query_fraction=0.5))
    assert set(found) == {f"validator/{n}" for n in validators.VALIDATORS} and notes == []
    assert found["validator/cycle"] == pytest.approx(_loop_cycle(emb[:3], emb[3:]))
    assert split_validators(emb, None, Config()) == ({}, [])  # two domains meet only in a query -> gallery split
    nan = emb.copy()
    nan[0, 0] = np.nan
    assert split_validators(nan, sides, Config(query_fraction=0.5))[0]["validator/snd"] is None


def test_recorded_validators_pass_the_records_schema():
    """A record with validator keys is not damaged: they have no range the schema would refuse."""
    metrics = {"val/score": 500.0, "test/score": 400.0, "val/validator/snd": 2.1, "test/validator/entropy": 0.3,
               "test/validator/cycle": 0.5, "val/validator/cycle": None}
    assert schema.check_record_metrics(metrics) == metrics


def test_every_entry_declares_its_parameters_and_a_direction():
    from benchmark.params import Param

    for name, v in validators.VALIDATORS.items():
        assert all(isinstance(p, Param) for p in v.params.values()), name
        assert isinstance(v.higher, bool) and v.doc, name
    assert validators.VALIDATORS["snd"].params["T"].default == 0.05


@pytest.mark.slow  # imports benchmark.submit (torch): ~2 s on its own
def test_the_submit_summary_prints_them():
    from benchmark.submit import format_summary

    summary = {"out": "s.json", "n_queries": 2, "k": 3, "n_gallery": 9, "search": "faiss IndexFlatIP",
               "device": "cpu", "time_s": 1.0, "warnings": [], "files": {"submission": "s.json"},
               "query": {"skipped": []}, "gallery": {"skipped": []}, "train": {"trained": False},
               "validators": {"snd": 2.345678, "entropy": 0.5, "cycle": None}}
    assert "validators of these queries and gallery (label-free): snd=2.346, entropy=0.5, cycle=n/a" \
        in format_summary(summary)


def _members(rng, n, dims):
    blocks = [rng.normal(size=(n, d)) for d in dims]
    return [b / np.linalg.norm(b, axis=1, keepdims=True) for b in blocks]


def test_member_agreement_of_an_ensemble_is_the_pairwise_top1_agreement_of_its_members():
    """Issue 26: agreement between ensemble members, from each member's own embeddings."""
    rng = np.random.default_rng(5)
    dims = (128, 128, 1280)  # sface, dlib, efficientnet_lite0
    qs, gs = _members(rng, 7, dims), _members(rng, 9, dims)
    qs[1], gs[1] = qs[0].copy(), gs[0].copy()  # two members that agree on every query, one that does not
    tops = [[max(range(9), key=lambda j: float(q[i] @ g[j])) for i in range(7)] for q, g in zip(qs, gs)]
    by_hand = np.mean([np.mean([a == b for a, b in zip(tops[x], tops[y])]) for x, y in ((0, 1), (0, 2), (1, 2))])
    for fusion in ("minmax", "concat"):
        cfg = Config(backbone="ensemble", members=("sface", "dlib", "efficientnet_lite0"), embedding="backbone",
                     fusion=fusion, query_fraction=0.5)
        w = np.sqrt([1 / 3] * 3)  # the engine's layout: each block times sqrt(w), side by side
        q = np.concatenate([b * s for b, s in zip(qs, w)], axis=1)
        g = np.concatenate([b * s for b, s in zip(gs, w)], axis=1)
        found, notes = validators.measure(q, g, cfg)
        assert found["agreement"] == pytest.approx(by_hand), fusion
        if fusion == "minmax":  # the embedding validators cannot read a fused similarity; agreement can
            assert found["snd"] is None and len(notes) == 1
    assert 1 / 3 < by_hand < 1
    with pytest.warns(UserWarning, match="weight 0"):
        one = Config(backbone="ensemble", members=("sface", "dlib"), member_weights=(1.0, 0.0), embedding="backbone")
    found, notes = validators.measure(np.concatenate(qs[:2], 1), np.concatenate(gs[:2], 1), one)
    assert found["agreement"] is None and "it needs two members of positive weight" in notes[-1]
    assert "agreement" not in validators.measure(qs[0], gs[0], Config(query_fraction=0.5))[0]  # one backbone
