"""Fixtures of the report tests: the synthetic results set (see synthetic_results.py) and a tiny
demo-like set; matplotlib on the Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from benchmark import store  # noqa: E402
from benchmark.config import load_experiments, resolve  # noqa: E402
from synthetic_results import SCORES, SEEDED, make_images, metrics_for, npz_bytes, write_run  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    emb, labels, ids, paths = make_images(root / "images")
    blob = npz_bytes(emb, labels, ids, paths)
    out = root / "runs"
    rng = np.random.default_rng(42)
    exps = load_experiments()
    for name, score in SCORES.items():
        assert name in exps, name
        for seed in range(SEEDED.get(name, 1)):
            cfg = resolve(name, {"seed": seed})
            s = score + (0 if seed == 0 else float(rng.normal(0, 6)))
            m = metrics_for(s, s + 15 + float(rng.normal(0, 3)), cfg.backbone, cfg.epochs, rng)
            write_run(out, name if seed == 0 else f"{name}-seed{seed}", cfg, m, blob)
        # open-set: unseen test identities, lower and noisier; validation less predictive
        cfg = resolve(name, {"protocol": "open-set"})
        t = 0.45 * score + float(rng.normal(0, 15))
        m = metrics_for(t, 0.5 * score + float(rng.normal(0, 25)), cfg.backbone, cfg.epochs, rng)
        write_run(out, f"{name}-openset", cfg, m, blob)
    write_run(out, "resnet50-lr0.1-ep5-seed1", resolve("resnet50-lr0.1-ep5", {"seed": 1}), None, None,
              status="failed", error="FloatingPointError: training loss became nan in epoch 2 (lr=0.1)")
    return out


@pytest.fixture(scope="session")
def synthetic(synthetic_dir) -> pd.DataFrame:
    return store.load(synthetic_dir)


@pytest.fixture(scope="session")
def demo_df(tmp_path_factory) -> pd.DataFrame:
    """Three demo-like runs (one backbone, ORL), image paths that do not exist on this machine."""
    out = tmp_path_factory.mktemp("demo") / "runs"
    rng = np.random.default_rng(1)
    emb, labels = rng.normal(size=(12, 8)).astype(np.float32), np.repeat(np.arange(4), 3)
    blob = npz_bytes(emb / np.linalg.norm(emb, axis=1, keepdims=True), labels, [f"s{i}" for i in labels],
                     [f"/nonexistent/orl/s{i}/{j}.pgm" for j, i in enumerate(labels)])
    for name, score in (("demo-lr0.001-ep3", 410.0), ("demo-lr0.01-ep3", 455.0), ("demo-no-normalize", 390.0)):
        cfg = resolve(name)
        write_run(out, name, cfg, metrics_for(score, score + 10, cfg.backbone, cfg.epochs, rng), blob)
    return store.load(out)
