"""Divergence read off the per-epoch history: hand-worked histories, then a real run whose loss
explodes without reaching inf/NaN (recorded as ok before, looking healthy)."""

from __future__ import annotations

import json

import pytest

from benchmark.divergence import divergence


def _h(*losses):
    return [{"epoch": i + 1, "train/loss": v} for i, v in enumerate(losses)]


@pytest.mark.parametrize("losses, n_classes, diverged", [
    ((4.1, 3.0, 2.2), 62, False),      # healthy
    ((1.54, 1.82, 2.2, 1.68), 4, False),  # noisy (lr 0.1 on 4 people, measured): below 2x the first epoch
    ((98.1, 170.1, 166.3, 196.5), 4, True),  # lr 10 (measured): rose 2x
    ((1.0, 2.01), 62, True),           # just over 2x
    ((1.0, 2.0), 62, False),           # exactly 2x is not over
    ((50.0, 45.0, 42.0), 62, True),    # came down a little, ends at 10x log(62) = 41.3 and above
    ((50.0, 45.0, 41.0), 62, False),
    ((7.0,), 2, True),                 # one epoch, 10 x log 2 = 6.93: over
    ((6.9,), 2, False),
])
def test_rules(losses, n_classes, diverged):
    assert (divergence(_h(*losses), n_classes) is not None) == diverged


def test_reason_names_the_numbers_and_the_fix():
    assert divergence(_h(98.1, 170.1, 196.5), 4) == (
        "training diverged: the training loss rose from 98.1 (epoch 1) to 196 (epoch 3); lower the learning rate")
    assert divergence([], 4) is None


def test_a_diverging_run_is_recorded_and_flagged(tiny_cfg, tmp_path):
    from benchmark.results import store
    from benchmark.run import run, run_id_for

    cfg = tiny_cfg(lr=10.0, epochs=4, patience=0)
    with pytest.warns(UserWarning, match="training diverged"):
        result = run(cfg, tmp_path)
    assert result["status"] == "ok" and result["diverged"] == 1.0
    rdir = tmp_path / run_id_for(cfg)
    assert json.loads((rdir / "metrics.json").read_text())["diverged"] == 1.0
    status = json.loads((rdir / "status.json").read_text())
    assert any(w.startswith("training diverged: the training loss rose from") for w in status["warnings"])
    row = store.load(tmp_path).iloc[0]
    assert row["diverged"] == 1.0 and "training diverged" in row["warnings"]
