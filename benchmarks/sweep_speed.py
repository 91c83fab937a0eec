"""Speed of the sweep: cached engine (full grid) against the reference engine (a subset), in one process.

Prints per-configuration time for each engine and their ratio, total sweep wall time from process
start, images/s of the feature pass against the rates measured on one H200 (issue text), the cost of
a seeded sweep (24 x N) against 24, cached-vs-reference scores over several seeds, and peak host/GPU
memory. Targets are checked here, never in tests.

    python benchmarks/sweep_speed.py --set weights=random                      # the full study
    python benchmarks/sweep_speed.py --set weights=random max_identities=6     # a CPU-sized check
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: "from process start"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmark import pipeline, sweep  # noqa: E402
from benchmark.features.cache import FeatureCache  # noqa: E402
from benchmark.config import parse_overrides, resolve  # noqa: E402
from benchmark.results import store  # noqa: E402

#: forward-only images/s on one H200, batch 256, random init (issue "Speed"): fp32, bf16+channels_last
H200_RATES = {"resnet50": (3785, 15456), "efficientnet_b0": (8910, 21105), "vit_b_16": (1253, 6762)}
ROOT = Path(__file__).resolve().parents[1]


def _fresh_process_state() -> None:
    """Forget built backbones, so each phase pays its own start-up."""
    pipeline._BACKBONES.clear()


def _sweep(sweep_file, out: Path, overrides: dict, cache: Path, **kw) -> tuple[pd.DataFrame, float]:
    _fresh_process_state()
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    summary = sweep.run_sweep(sweep_file, out, {**overrides, "cache_dir": str(cache)}, **kw)
    wall = time.perf_counter() - t0
    if sweep.exit_code(summary):
        print(sweep.format_summary(summary))
    return store.load(out), wall


def _feature_rates(cache: Path) -> pd.DataFrame:
    rows = [{"backbone": e["backbone"], "images": e["shape"][0], "cost_s": e["cost_s"]}
            for e in FeatureCache(cache).entries() if "backbone" in e]
    df = pd.DataFrame(rows).groupby("backbone").sum()
    df["images_per_s"] = df["images"] / df["cost_s"]
    return df


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=str(ROOT / "sweep.yaml"))
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--reference", nargs="+", default=["*-lr0.001-ep3", "*-lr0.01-ep3"], metavar="PATTERN",
                   help="experiments also run with the reference engine (default: 2 per architecture)")
    p.add_argument("--seeds", type=int, default=4, help="also time the grid x this many seeds (0: skip)")
    p.add_argument("--noise-seeds", type=int, default=3,
                   help="seeds of --noise-experiment per engine, to compare scores within seed noise (0: skip)")
    p.add_argument("--noise-experiment", default="resnet50-lr0.001-ep3",
                   help="its random-init features carry signal (random EfficientNet-B0 features collapse to "
                        "~1e-14, so every score ties)")
    p.add_argument("--out", default=None, help="results and timings (default: a temporary folder)")
    args = p.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-speed-"))
    shutil.rmtree(out / "runs", ignore_errors=True)
    overrides = {"tracking": "none", **parse_overrides(args.set)}
    base_cfg = resolve("efficientnet_b0-lr0.001-ep3", overrides)
    device = pipeline.resolve_device(base_cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    cached, wall_24 = _sweep(args.sweep, out / "runs/cached", overrides, out / "cache24")
    from_start = time.perf_counter() - T0
    rates = _feature_rates(out / "cache24")
    reference, _ = _sweep(args.sweep, out / "runs/reference", {**overrides, "engine": "reference"},
                          out / "cache-ref", select=args.reference)
    seeded_wall = None
    if args.seeds:
        seeded, seeded_wall = _sweep(args.sweep, out / "runs/seeded", overrides, out / "cache96",
                                     seeds=args.seeds)
    noise = None
    if args.noise_seeds:
        noise = {}
        for engine in ("cached", "reference"):
            df, _ = _sweep(args.sweep, out / f"runs/noise-{engine}", {**overrides, "engine": engine},
                           out / f"cache-noise-{engine}", select=[args.noise_experiment], seeds=args.noise_seeds)
            noise[engine] = df["test/score"].agg(["mean", "std", "count"]).to_dict()

    # ---- the table ------------------------------------------------------------------------------
    t = cached.set_index("experiment")[["backbone", "status", "time/total_s", "time/cost_s", "test/score"]]
    ref = reference.set_index("experiment")[["time/total_s", "test/score"]].add_prefix("ref ")
    table = t.join(ref, how="left")
    table["ratio"] = table["ref time/total_s"] / table["time/total_s"]
    pd.set_option("display.width", 200)
    print("\nPer configuration (seconds; cached = this run's wall time with features from the shared cache,")
    print("cost = what the configuration costs on its own incl. its feature extraction; ref = reference engine)")
    print(table.round(3).to_string())
    both = table.dropna(subset=["ref time/total_s"])
    # the whole sweep with the reference engine, estimated from its mean time per architecture
    ref_per_arch = both.groupby("backbone")["ref time/total_s"].mean()
    ref_sweep = float(table["backbone"].map(ref_per_arch).sum()) if set(table["backbone"]) <= set(ref_per_arch.index) \
        else None
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU)"
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    print(f"\nfeature pass ({pipeline.precision(base_cfg, device)}):")
    for bb, r in rates.iterrows():
        ref_rate = H200_RATES.get(bb)
        vs = f"  (H200 forward-only: {ref_rate[0]} fp32, {ref_rate[1]} bf16+cl)" if ref_rate else ""
        print(f"  {bb:18s} {int(r['images']):6d} images in {r['cost_s']:7.1f} s = {r['images_per_s']:8.1f} img/s{vs}")
    summary = {
        "device": str(device), "gpu": gpu, "configs": len(cached),
        "failed": int((cached["status"] != "ok").sum()),
        "sweep_wall_s": wall_24, "sweep_from_process_start_s": from_start,
        "reference_configs": len(both), "cached_vs_reference_ratio_median": float(both["ratio"].median()),
        "cached_vs_reference_ratio_min": float(both["ratio"].min()),
        "reference_sweep_estimate_s": ref_sweep,
        "sweep_speedup_vs_reference": ref_sweep / wall_24 if ref_sweep else None,
        "seeded_configs": len(cached) * args.seeds if args.seeds else None,
        "seeded_wall_s": seeded_wall, "seeded_over_24": seeded_wall / wall_24 if seeded_wall else None,
        "noise": noise, "peak_host_gib": peak_host, "peak_gpu_gib": peak_gpu,
    }
    print("\nsummary")
    for k, v in summary.items():
        print(f"  {k:34s} {json.dumps(v) if isinstance(v, dict) else v}")
    table.to_csv(out / "per_config.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nwritten: {out / 'per_config.csv'}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
