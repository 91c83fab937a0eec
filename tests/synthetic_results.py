"""Builders of the report tests' fixed synthetic results set (fixtures in conftest.py): the
report's 24 configurations (closed-set), 3 of them with 3 seeds, the same 24 under open-set, one
failed run, and per-run history.csv + embeddings.npz whose image paths point to small generated
PNGs; written as real run records and read back with ``benchmark.results.store.load``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.results import record
from benchmark.config import dump_yaml

#: closed-set test score of seed 0 (Table 2 / text of the report where it gives one)
SCORES = {
    "efficientnet_b0-lr0.001-ep3": 438.7, "efficientnet_b0-lr0.001-ep5": 428.2,
    "efficientnet_b0-lr0.01-ep3": 405.0, "efficientnet_b0-lr0.01-ep5": 395.0,
    "efficientnet_b0-lr0.1-ep3": 402.8, "efficientnet_b0-lr0.1-ep5": 437.6,
    "vit_b_16-lr0.001-ep3": 443.1, "vit_b_16-lr0.001-ep5": 450.8, "vit_b_16-lr0.01-ep3": 420.0,
    "vit_b_16-lr0.01-ep5": 432.0, "vit_b_16-lr0.1-ep3": 380.0, "vit_b_16-lr0.1-ep5": 396.1,
    "resnet50-lr0.001-ep3": 292.8, "resnet50-lr0.001-ep5": 300.0, "resnet50-lr0.01-ep3": 250.0,
    "resnet50-lr0.01-ep5": 240.0, "resnet50-lr0.1-ep3": 155.2, "resnet50-lr0.1-ep5": 160.0,
    "efficientnet_b0-lr0.001-ep1": 429.8, "efficientnet_b0-lr0.001-ep2": 453.6,
    "efficientnet_b0-bs8": 408.3, "efficientnet_b0-bs64": 413.3,
    "efficientnet_b0-no-normalize": 407.7, "efficientnet_b0-no-augment": 433.1,
}
SEEDED = {"efficientnet_b0-lr0.001-ep3": 3, "efficientnet_b0-lr0.001-ep2": 3, "vit_b_16-lr0.001-ep5": 3}
PER_EPOCH_S = {"efficientnet_b0": 36.0, "vit_b_16": 221.0, "resnet50": 90.0, "efficientnet_lite0": 20.0}
N_IDS, PER_ID = 8, 4


def make_images(root) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """32 small PNGs (8 identities x 4) and embeddings that retrieve them partly right."""
    rng = np.random.default_rng(0)
    paths, labels, ids = [], [], []
    for i in range(N_IDS):
        d = root / f"Person_{i}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(40, 215, 3)
        for j in range(PER_ID):
            px = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            p = d / f"Person_{i}_{j:04d}.png"
            Image.fromarray(px).save(p)
            paths.append(str(p))
            labels.append(i)
            ids.append(f"Person_{i}")
    protos = rng.normal(size=(N_IDS, 16))
    emb = protos[labels] + rng.normal(0, 1.2, (len(labels), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), np.array(labels), ids, paths


def _tops(s: float) -> dict:
    """Top-1/5/10 in [0, 1], increasing, with 600 Top-1 + 300 Top-5 + 100 Top-10 = 1000 s (a record
    with impossible ones is damaged): 0.7 s, 1.35 s, 1.75 s, Top-5/10 capped at 1 and Top-1 making up."""
    t5, t10 = min(1.0, 1.35 * s), min(1.0, 1.75 * s)
    return {"top1": (1000 * s - 300 * t5 - 100 * t10) / 600, "top5": t5, "top10": t10}


def metrics_for(score: float, val_score: float, backbone: str, epochs: int, rng) -> dict:
    s = score / 1000
    v = val_score / 1000
    top, vtop = _tops(s), _tops(v)
    train_s = PER_EPOCH_S[backbone] * epochs * float(rng.uniform(0.95, 1.05))
    features_s = PER_EPOCH_S[backbone] * 0.3
    cost_s = train_s + features_s + 5.0
    m = {f"test/{k}": val for k, val in top.items()} | {f"val/{k}": val for k, val in vtop.items()}
    m |= {"test/map": 0.85 * s, "val/map": 0.85 * v,
          "test/score": 600 * top["top1"] + 300 * top["top5"] + 100 * top["top10"],
          "val/score": 600 * vtop["top1"] + 300 * vtop["top5"] + 100 * vtop["top10"],
          "test/nmi": 0.5, "test/intra": 0.4, "test/inter": 0.9, "best_epoch": epochs,
          "time/train_s": train_s, "time/total_s": cost_s, "time/features_s": features_s, "time/cost_s": cost_s}
    m["score_per_minute"] = m["test/score"] / (cost_s / 60)
    return m


def history_for(epochs: int, final_val: float) -> str:
    rows = []
    for e in range(1, epochs + 1):
        vs = final_val - 12 * (epochs - e) + (6 if e == 2 else 0)
        rows.append({"epoch": e, "train/loss": 3.0 / e, "val/loss": 2.0 + 0.08 * (e - 2) ** 2,
                     "val/top1": 0.7 * vs / 1000, "val/top5": 1.35 * vs / 1000, "val/top10": 1.75 * vs / 1000,
                     "val/map": 0.85 * vs / 1000, "val/score": vs, "epoch_s": 10.0})
    return pd.DataFrame(rows).to_csv(index=False)


def ok_files(files: dict) -> dict:
    """``files`` of a successful record, completed with the minimal valid content of each record file
    a test does not care about (a successful record holds all of them: ``RunRecord.check_files``)."""
    emb = np.zeros((2, 4), dtype=np.float32)
    return {"history.csv": "", "split.json": json.dumps({"items": []}), "environment.json": "{}",
            "embeddings.npz": npz_bytes(emb, np.arange(2), ["a", "b"], ["a.jpg", "b.jpg"]), **files}


def write_run(out, run_id, cfg, metrics, emb_bytes, status="ok", error=None):
    files = {"config.yaml": dump_yaml(cfg)}
    if status == "ok":
        files = ok_files(files | {"metrics.json": json.dumps(metrics),
                                  "history.csv": history_for(cfg.epochs, metrics["val/score"]),
                                  **({"embeddings.npz": emb_bytes} if emb_bytes is not None else {})})
        doc = {"status": "ok"}
    else:
        doc = {"status": "failed", "error": error, "traceback": f"Traceback ...\n{error}"}
    record.write(out, run_id, files, doc)


def npz_bytes(emb, labels, ids, paths) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, embeddings=emb, labels=labels, identities=np.array(ids, dtype=str),
                        paths=np.array(paths, dtype=str))
    return buf.getvalue()


def ok_closed(df: pd.DataFrame) -> pd.DataFrame:
    """The pandas reference: successful closed-set runs."""
    return df[(df["status"] == "ok") & (df["protocol"] == "closed-set")]
