"""Moving feature-making into one package changed nothing but speed: with ``runtime=torch`` a fixed set
of runs (ORL and an LFW subset; both engines; a trainable block; SFace) records the metrics that the
code before the move recorded (``unchanged_before.json``, written by that code on this project's CPU
machine).

Real weights (EfficientNet-Lite0 ImageNet, SFace) so the features are far from ties; still, another
CPU's float kernels may flip a near-tie: ranking fractions may differ by one query, continuous values
by 1e-3 relative — a changed preprocessing moves them far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark import run
from benchmark.config import Config
from benchmark.models import backbones

BEFORE = json.loads((Path(__file__).parent / "unchanged_before.json").read_text())
BASE = dict(experiment="unchanged", tracking="none", device="cpu", num_workers=0, eval_batch_size=64, epochs=2,
            batch_size=16, lr=0.01, image_size=96, resize=110, min_faces_per_person=5, runtime="torch")
RUNS = {
    "orl-lite0-cached": dict(dataset="orl", max_identities=10, backbone="efficientnet_lite0", augment="report"),
    "orl-lite0-reference": dict(dataset="orl", max_identities=10, backbone="efficientnet_lite0", augment="none",
                                engine="reference"),
    "orl-lite0-unfreeze1": dict(dataset="orl", max_identities=10, backbone="efficientnet_lite0", augment="none",
                                trainable_blocks=1),
    "orl-sface-frozen": dict(dataset="orl", max_identities=10, backbone="sface", embedding="backbone"),
    "lfw-lite0-cached": dict(dataset="lfw", max_identities=10, min_faces_per_person=20,
                             backbone="efficientnet_lite0", augment="report", protocol="open-set",
                             split=(0.4, 0.3, 0.3)),
}
RANKING = ("top1", "top5", "top10", "r_precision")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_recorded_metrics_equal_the_values_before_the_move(name, cache_dir, request):
    over = RUNS[name]
    for family in ("efficientnet_lite0", "sface"):
        if over["backbone"] == family and backbones.availability(family):
            pytest.skip(backbones.availability(family))
    if over["dataset"] == "lfw":
        over = {**over, "data_home": request.getfixturevalue("lfw_home")}
    metrics, history, *_ = run.execute(Config(**{**BASE, **over}, cache_dir=str(cache_dir)))
    want = BEFORE[name]
    for split in ("val", "test"):
        n = want[f"{split}/n_queries"]
        assert metrics[f"{split}/n_queries"] == n
        one_query = 1 / n + 1e-9
        for key in RANKING:
            assert metrics[f"{split}/{key}"] == pytest.approx(want[f"{split}/{key}"], abs=one_query), (split, key)
        for key in ("map", "map_at_r"):
            assert metrics[f"{split}/{key}"] == pytest.approx(want[f"{split}/{key}"], abs=one_query), (split, key)
        assert metrics[f"{split}/score"] == pytest.approx(want[f"{split}/score"], abs=1000 * one_query)
    for key in ("test/nmi", "test/intra", "test/inter"):
        assert metrics[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
    assert metrics["best_epoch"] == want["best_epoch"]
    assert [row["train/loss"] for row in history] == pytest.approx(want["train/loss"], rel=1e-3)
