"""Partial unfreezing: cached engine (boundary-activation cache) against the reference engine (full
forward every step), and the boundary-cache size per backbone — in one process.

Prints, for one configuration (default: LFW-62, EfficientNet-Lite0 real weights, trainable_blocks=1):
wall time of the reference run, of the cached run that writes the boundary cache (cold), and of
another configuration that reads it (warm: lr 0.01), their ratios and scores; then, per backbone,
the boundary activation shape (random init) and the cache a run needs for LFW-62 x (eval + 5 views).
Targets are checked here, never in tests.

    python benchmarks/unfreeze_speed.py                                   # LFW-62, Lite0, 3 epochs
    python benchmarks/unfreeze_speed.py --set max_identities=10           # a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark import pipeline, run, splits
from benchmark.features import extract as features
from benchmark.features.cache import FeatureCache
from benchmark.config import Config, from_dict, parse_overrides
from benchmark.data import load_dataset
from benchmark.models.backbones import build_backbone, split

BASE = {"backbone": "efficientnet_lite0", "weights": "imagenet", "trainable_blocks": 1, "tracking": "none",
        "num_workers": 2}
SIZE_BACKBONES = ("resnet50", "efficientnet_b0", "vit_b_16", "efficientnet_lite0")


def _timed(cfg: Config) -> tuple[dict, float]:
    pipeline._BACKBONES.clear()
    t0 = time.perf_counter()
    metrics, *_ = run.execute(cfg)
    return metrics, time.perf_counter() - t0


def speed(cfg: Config) -> dict:
    ref, t_ref = _timed(cfg.replace(engine="reference"))
    cold, t_cold = _timed(cfg.replace(engine="cached"))
    warm, t_warm = _timed(cfg.replace(engine="cached", lr=cfg.lr * 10))
    out = {"reference_s": t_ref, "cached_cold_s": t_cold, "cached_warm_s": t_warm,
           "ratio_warm": t_ref / t_warm, "ratio_cold": t_ref / t_cold,
           "test_score": {"reference": ref["test/score"], "cached": cold["test/score"],
                          "cached_lr_x10": warm["test/score"]}}
    print(f"reference {t_ref:.1f} s | cached, writing the boundary cache {t_cold:.1f} s "
          f"({out['ratio_cold']:.2f}x) | cached, reading it (another config) {t_warm:.1f} s "
          f"({out['ratio_warm']:.1f}x; target >= 5x)")
    print(f"test/score reference {ref['test/score']:.1f}, cached {cold['test/score']:.1f} (augmented views: "
          "bank vs online, equal only in distribution)")
    return out


def sizes(cfg: Config) -> list[dict]:
    """Boundary cache per backbone for ``cfg``'s data: (all images' eval view + aug_views x training images)."""
    df = splits.make_split(load_dataset(cfg), cfg)
    n_all, n_train = len(df), int((df["split"] == "train").sum())
    n = n_all + cfg.aug_views * n_train
    rows = []
    for name in SIZE_BACKBONES:
        c = cfg.replace(backbone=name, weights="random")
        frozen, _ = split(build_backbone(c), c.trainable_blocks)
        prep, _ = pipeline.feature_spec(c.replace(runtime="torch"), frozen, torch.device("cpu"), FeatureCache(c.cache_dir))
        shape = features.output_shape(frozen, prep)
        per = int(np.prod(shape)) * getattr(torch, c.boundary_dtype).itemsize
        rows.append({"backbone": name, "shape": list(shape), "kB_per_image": per / 1e3, "images": n,
                     "GB": per * n / 1e9, "features_GB": build_backbone(c).spec.dim * 4 * n / 1e9})
        print(f"{name:20s} boundary {str(list(shape)):16s} {per / 1e3:7.1f} kB/image x {n} = "
              f"{per * n / 1e9:6.2f} GB {c.boundary_dtype} (frozen features: {rows[-1]['features_GB']:.3f} GB)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/unfreeze_speed.json"))
    ap.add_argument("--skip-speed", action="store_true", help="only the cache sizes")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="unfreeze-speed-"))
    cfg = from_dict({**BASE, "cache_dir": str(cache), **parse_overrides(args.set)})
    print(f"{torch.get_num_threads()} threads; {cfg.backbone} trainable_blocks={cfg.trainable_blocks} "
          f"epochs={cfg.epochs} augment={cfg.augment} boundary_dtype={cfg.boundary_dtype}")
    try:
        result = {"config": cfg.to_dict(), "sizes": sizes(cfg)}
        if not args.skip_speed:
            result["speed"] = speed(cfg)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
