"""torch eager vs ONNX Runtime for the frozen feature pass, per backbone, measured in one process.

For each backbone the same images go through the cached engine's streaming pass (decode, eval view,
network) once per runtime, alternating torch / onnxruntime ``--repeats`` times with a fresh feature
cache each time (the ONNX export is made before the first timed pass and not timed: it is made once
per network and cache folder). Printed per backbone: images/s of each runtime (best of the repeats),
their ratio, and the largest feature difference. Random weights where the real ones are not on this
machine (speed does not depend on weight values).

    python benchmarks/runtime_speed.py                       # LFW people with >= 20 images, first 6
    python benchmarks/runtime_speed.py --backbones efficientnet_lite0 resnet50 --identities 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmark import pipeline
from benchmark.config import Config
from benchmark.features import runtime
from benchmark.features.cache import FeatureCache
from benchmark.models import backbones

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50", "efficientnet_b0", "vit_b_16")


def _pass(cfg: Config) -> tuple[float, torch.Tensor, str]:
    prep = pipeline.prepare(cfg)
    t0 = time.perf_counter()
    feats = prep.engine.eval_all()
    return time.perf_counter() - t0, feats, prep.engine.prep.runtime


def measure(name: str, base: dict, repeats: int, root: Path) -> dict:
    weights = "imagenet" if backbones.availability(name) is None else "random"
    cfg = Config(**base, backbone=name, weights=weights)
    exports = root / "exports"  # the export, made once (not timed), reused by every onnxruntime pass
    device = torch.device("cpu")
    rt = pipeline.feature_spec(cfg, pipeline.frozen_backbone(cfg, device), device, FeatureCache(exports))[0].runtime
    times = {"torch": [], "onnxruntime": []}
    feats = {}
    n = None
    for r in range(repeats):
        for requested in ("torch", "onnxruntime"):
            cache = root / f"{name}-{requested}-{r}"
            shutil.copytree(exports / "onnx", cache / "onnx", dirs_exist_ok=True)
            s, f, used = _pass(cfg.replace(runtime=requested, cache_dir=str(cache)))
            times[requested].append(s)
            feats[used] = f
            n = len(f)
            shutil.rmtree(cache)
    best = {k: min(v) for k, v in times.items()}
    diff = float((feats["onnxruntime"] - feats["torch"]).abs().max()) if len(feats) == 2 else None
    row = {"backbone": name, "weights": weights, "images": n, "resolved_auto": rt,
           "torch_img_s": n / best["torch"], "onnxruntime_img_s": n / best["onnxruntime"],
           "speedup": best["torch"] / best["onnxruntime"], "max_abs_diff": diff,
           "torch_s": times["torch"], "onnxruntime_s": times["onnxruntime"]}
    print(f"{name:20s} {weights:8s} {n:5d} images  torch {row['torch_img_s']:7.1f} img/s  onnxruntime "
          f"{row['onnxruntime_img_s']:7.1f} img/s  x{row['speedup']:.2f}  max|diff| "
          f"{diff if diff is None else f'{diff:.1e}'}  (auto -> {rt})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=list(BACKBONES))
    ap.add_argument("--identities", type=int, default=6, help="first N LFW people with >= 20 images")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    base = dict(experiment="runtime-speed", dataset="lfw", max_identities=args.identities, embedding="backbone",
                tracking="none", device="cpu", num_workers=2, eval_batch_size=64)
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"tolerance {runtime.TOLERANCE:g}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, base, args.repeats, Path(tmp)) for name in args.backbones]
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
