"""Shared fixtures: an isolated feature cache, W&B off, the real LFW data (skipped when absent),
tiny CPU configs, and an independent retrieval-metrics oracle (numpy + scikit-learn only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _lfw_data_home() -> Path | None:
    """The folder holding ``lfw_home/lfw_funneled``: $SCIKIT_LEARN_DATA, else ../shared/data."""
    candidates = [Path(os.environ["SCIKIT_LEARN_DATA"])] if os.environ.get("SCIKIT_LEARN_DATA") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for home in candidates:
        if (home / "lfw_home" / "lfw_funneled").is_dir():
            return home
    return None


LFW_HOME = _lfw_data_home()
LFW_SKIP_REASON = ("LFW not found: needs <data home>/lfw_home/lfw_funneled under $SCIKIT_LEARN_DATA "
                   "or ../shared/data relative to the repository")


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Never touch the user's feature cache or W&B; restored after the session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHMARK_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("WANDB_SWEEP_ID", raising=False)
        yield


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty feature cache for one test (also exported as BENCHMARK_CACHE_DIR)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def lfw_home() -> str:
    if LFW_HOME is None:
        pytest.skip(LFW_SKIP_REASON)
    return str(LFW_HOME)


@pytest.fixture
def tiny_cfg(lfw_home):
    """A small, fast CPU config on the first ``max_identities`` LFW people (resnet18, random weights;
    torch runtime: the ONNX Runtime path has its own tests, tests/features/test_runtime.py)."""
    from benchmark.config import Config

    def make(**overrides) -> Config:
        base = dict(experiment="test", dataset="lfw", data_home=lfw_home, max_identities=4,
                    backbone="resnet18", weights="random", image_size=64, resize=72, augment=False,
                    epochs=2, batch_size=16, eval_batch_size=64, num_workers=0, device="cpu",
                    tracking="none", runtime="torch")
        return Config(**{**base, **overrides})

    return make


# --- independent retrieval metrics ------------------------------------------------------------------

def reference_ranking(embeddings, i: int, bonus=None) -> np.ndarray:
    """Gallery indices for query ``i`` (itself excluded): score (+ ``bonus`` per item) descending,
    ties -> lower index."""
    x = np.asarray(embeddings, dtype=np.float64)
    others = np.delete(np.arange(len(x)), i)
    scores = (x[others] * x[i]).sum(1)  # not a BLAS product: duplicate rows must tie bit-exactly
    if bonus is not None:
        scores = scores + bonus[others]
    return others[np.lexsort((others, -scores))]


def reference_metrics(embeddings, labels, tie_eps: float = 0.0, favour: int = 0) -> dict:
    """Top-1/5/10, mAP (scikit-learn's average_precision_score), R-precision and MAP@R (their
    definitions, item by item) and the competition score, over the queries that have at least one
    other item of their identity.

    ``favour`` = +1 / -1 with ``tie_eps``: every same-identity item's score is raised / lowered by
    ``tie_eps``, i.e. scores closer than that are ranked best / worst for the query: the highest /
    lowest value any float rounding of the similarities could give (``oracle_bounds``)."""
    labels = np.asarray(labels)
    return metrics_of_rankings(
        labels[reference_ranking(embeddings, i, favour * tie_eps * (labels == labels[i]) if favour else None)]
        == labels[i] for i in range(len(labels)))


def metrics_of_rankings(rankings) -> dict:
    """The metrics of per-query ranked relevance vectors (True = same identity), queries without a
    relevant item left out."""
    from sklearn.metrics import average_precision_score

    hits = {1: [], 5: [], 10: []}
    aps, r_precisions, aps_at_r = [], [], []
    for relevant in rankings:
        if not relevant.any():
            continue
        for k in hits:
            hits[k].append(bool(relevant[:k].any()))
        rank_score = np.arange(len(relevant), 0, -1)  # strictly decreasing with rank: no ties left
        aps.append(average_precision_score(relevant, rank_score))
        r = int(relevant.sum())
        r_precisions.append(relevant[:r].sum() / r)
        aps_at_r.append(sum(relevant[:p + 1].sum() / (p + 1) for p in range(r) if relevant[p]) / r)
    top = {k: float(np.mean(v)) for k, v in hits.items()}
    return {"top1": top[1], "top5": top[5], "top10": top[10], "map": float(np.mean(aps)),
            "map_at_r": float(np.mean(aps_at_r)), "r_precision": float(np.mean(r_precisions)),
            "score": 600 * top[1] + 300 * top[5] + 100 * top[10], "n_queries": len(aps)}


@pytest.fixture
def ranked_oracle():
    """``metrics_of_rankings``: the oracle's definitions on rankings made elsewhere (query -> gallery)."""
    return metrics_of_rankings


@pytest.fixture
def oracle():
    """The independent metrics implementation above, for test modules in any folder."""
    return reference_metrics


#: how far two float32 similarities of unit vectors may differ between two correct implementations
#: (BLAS kernels sum in CPU-specific orders): ~100x the rounding of a 512-d dot product
TIE_EPS = 1e-5
RANKING_KEYS = ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score")


def within_oracle(metrics: dict, prefix: str, embeddings, labels, eps: float = TIE_EPS) -> tuple[dict, dict]:
    """Assert ``metrics[prefix + k]`` lies within what the oracle gives on ``embeddings`` under every
    ordering of scores closer than ``eps`` (worst and best case for the same-identity items).

    A tiny random model's embeddings are nearly collapsed (score gaps of 1e-9 occur); which way such a
    near-tie falls depends on the CPU's float kernels, so an exact comparison passes on one machine
    and fails on another. Far from ties the bounds coincide and this is an exact comparison."""
    lo = reference_metrics(embeddings, labels, eps, -1)
    hi = reference_metrics(embeddings, labels, eps, +1)
    assert metrics[f"{prefix}n_queries"] == lo["n_queries"]
    for k in RANKING_KEYS:
        assert lo[k] - 1e-9 <= metrics[f"{prefix}{k}"] <= hi[k] + 1e-9, (k, lo[k], metrics[f"{prefix}{k}"], hi[k])
    return lo, hi


@pytest.fixture
def oracle_bounds():
    """``within_oracle``, for test modules in any folder."""
    return within_oracle


# --- results sets shared by the results and report tests ----------------------------------------------
@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """The synthetic study of synthetic_results.py written as real run records."""
    from benchmark.config import load_experiments, resolve
    from synthetic_results import SCORES, SEEDED, make_images, metrics_for, npz_bytes, write_run

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
def synthetic(synthetic_dir):
    from benchmark.results import store

    return store.load(synthetic_dir)


@pytest.fixture(scope="session")
def demo_df(tmp_path_factory):
    """Three demo-like runs (one backbone, ORL), image paths that do not exist on this machine."""
    from benchmark.config import resolve
    from benchmark.results import store
    from synthetic_results import metrics_for, npz_bytes, write_run

    out = tmp_path_factory.mktemp("demo") / "runs"
    rng = np.random.default_rng(1)
    emb, labels = rng.normal(size=(12, 8)).astype(np.float32), np.repeat(np.arange(4), 3)
    blob = npz_bytes(emb / np.linalg.norm(emb, axis=1, keepdims=True), labels, [f"s{i}" for i in labels],
                     [f"/nonexistent/orl/s{i}/{j}.pgm" for j, i in enumerate(labels)])
    for name, score in (("demo-lr0.001-ep3", 410.0), ("demo-lr0.01-ep3", 455.0), ("demo-no-normalize", 390.0)):
        cfg = resolve(name)
        write_run(out, name, cfg, metrics_for(score, score + 10, cfg.backbone, cfg.epochs, rng), blob)
    return store.load(out)


@pytest.fixture
def count_extract(monkeypatch):
    """The cached engine's passes over the images, each as the names of the outputs it made (a cache
    hit makes none)."""
    calls = []
    from benchmark.features import engines

    real = engines.extract_views

    def counting(net, paths, views, *args):
        calls.append([v.name for v in views])
        return real(net, paths, views, *args)

    monkeypatch.setattr(engines, "extract_views", counting)
    return calls
