"""Scale check (issue 11): time and peak memory of the full evaluation and of the feature pass as N grows.

    python benchmarks/scale.py                       # metrics at 10k/20k/50k, feature pass at 5k/20k images
    python benchmarks/scale.py --metrics 4000 --images 1000 --out /tmp/scale

Every measurement runs in a fresh process (peak RSS = that process's own maximum resident set):
- metrics: random L2-normalized 512-d embeddings, 10 per identity (the issue's setting):
  ``retrieval_metrics`` (Top-k, mAP, MAP@R, R-precision) + ``embedding_metrics`` (NMI, intra/inter);
- feature pass: a generated folder of small JPEGs (48x48, 10 per identity), ResNet-18 with random
  weights at 32x32, eval view of every image + one augmented view of half of them — the cached
  engine's streaming pass (``features.extract_views``) with the PIL decoder.
Results are printed and appended to ``<out>/scale.jsonl`` as each finishes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _peak_gpu_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0


def child_metrics(n: int, device: str, embedding: bool) -> dict:
    import numpy as np
    import torch

    from benchmark.evaluation.metrics import embedding_metrics, retrieval_metrics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n // 10), 10)
    t0 = time.perf_counter()
    r = retrieval_metrics(torch.from_numpy(x).to(device), labels)
    t1 = time.perf_counter()
    e = embedding_metrics(x, labels) if embedding else {"nmi": float("nan")}
    t2 = time.perf_counter()
    return {"n": n, "device": device, "retrieval_s": t1 - t0, "embedding_s": t2 - t1, "total_s": t2 - t0,
            "peak_rss_gb": _peak_rss_gb(), "peak_gpu_gb": _peak_gpu_gb(device), "map": r["map"], "map_at_r": r["map_at_r"], "nmi": e["nmi"]}


def make_folder(root: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"id{i // 10:05d}" / f"{i:06d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # blocky: compresses like a photo
            Image.fromarray(base).resize((48, 48), Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


def child_features(n: int, folder: str, device: str) -> dict:
    import numpy as np
    import torch

    from benchmark.config import Config
    from benchmark.features import extract as features
    from benchmark.features.augment import random_resized_crop_flip
    from benchmark.features.cache import FeatureCache
    from benchmark.features.views import eval_view
    from benchmark.models.backbones import build_backbone
    from benchmark.pipeline import feature_spec

    paths = make_folder(Path(folder), n)
    rss_before = _peak_rss_gb()
    cfg = Config(backbone="resnet18", weights="random", image_size=32, resize=36, eval_batch_size=256,
                 num_workers=2, device=device, tracking="none", runtime="torch")
    backbone = build_backbone(cfg).eval().to(device)
    prep, _ = feature_spec(cfg, backbone, torch.device(device), FeatureCache(Path(folder) / "cache"))
    views = [features.Output(np.arange(n), lambda imgs, rows: torch.stack([eval_view(i, prep) for i in imgs])),
             features.Output(np.arange(0, n, 2), lambda imgs, rows: random_resized_crop_flip(imgs, rows, 32),
                             "report view 0")]
    t0 = time.perf_counter()
    with torch.no_grad():
        out = features.extract_views(backbone, paths, views, prep, cfg.eval_batch_size, cfg.num_workers,
                                     f"features {n}")
    wall = time.perf_counter() - t0
    feature_gb = sum(t.numel() * 4 for t in out) / 2**30
    return {"images": n, "device": device, "pass_s": wall, "images_per_s": n / wall, "peak_rss_gb": _peak_rss_gb(),
            "peak_gpu_gb": _peak_gpu_gb(device),
            "peak_rss_before_pass_gb": rss_before, "features_gb": feature_gb}


def _measure(args: list[str], log: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(log, "a") as fh:  # as it goes: a time-out still leaves results
        fh.write(json.dumps(result) + "\n")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", nargs="*", type=int, default=[10_000, 20_000, 50_000])
    p.add_argument("--images", nargs="*", type=int, default=[5_000, 20_000])
    p.add_argument("--out", default=None, help="results (scale.jsonl) and the generated image folder")
    p.add_argument("--device", default="cpu", help="cpu | cuda (metrics and feature pass on it)")
    p.add_argument("--retrieval-only", action="store_true",
                   help="skip NMI/intra/inter (without faiss, scikit-learn k-means at k = N/10 takes minutes)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # one measurement, in this fresh process
    args = p.parse_args()
    if args.child:
        kind, n, *rest = args.child
        result = child_metrics(int(n), args.device, not args.retrieval_only) if kind == "metrics" \
            else child_features(int(n), rest[0], args.device)
        print(json.dumps(result))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="scale-"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "scale.jsonl"
    print(f"results -> {log}")
    common = ["--device", args.device] + (["--retrieval-only"] if args.retrieval_only else [])
    metrics = [_measure([*common, "--child", "metrics", str(n)], log) for n in args.metrics]
    if max(args.images, default=0):  # generate the largest folder once; smaller N use its first images
        make_folder(out / "images", max(args.images))
    passes = [_measure([*common, "--child", "features", str(n), str(out / "images")], log) for n in args.images]
    print("\nfull evaluation (retrieval + embedding metrics), random 512-d, 10 per identity:")
    for m in metrics:
        print(f"  N={m['n']:>6}: {m['total_s']:6.1f} s (retrieval {m['retrieval_s']:.1f} s, NMI/intra/inter "
              f"{m['embedding_s']:.1f} s), peak RSS {m['peak_rss_gb']:.2f} GB")
    print("feature pass (ResNet-18 random, 32x32, eval view + 1 augmented view of half the images):")
    for f in passes:
        print(f"  {f['images']:>6} images: {f['pass_s']:6.1f} s = {f['images_per_s']:.0f} img/s, peak RSS "
              f"{f['peak_rss_gb']:.2f} GB (of which output features {f['features_gb'] * 1024:.0f} MB)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
