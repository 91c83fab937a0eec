"""The cross-domain study under the competition's real condition (issue 24 item 5), scored as the
server scores it.

On a ``make-competition`` layout whose training folder holds photos *and* renders of each person
(``--train-styles``), every recipe is trained on the whole of ``train/``, submitted for the test
folders and scored against the organizer's truth (``submit --train`` -> ``score-submission``): the
*renders available* arm. The same recipes trained on the training photos alone (a copy of ``train/``
without its renders) are the *held-out-style* arm: no render of any training person, as the earlier
study assumed. Trained recipes run once per seed; the test interval is over the test people
(a bootstrap over identities) and each gain over the frozen backbone is paired over the same people.

    python -m benchmark make-competition --out /tmp/day/comp --preset 2026 --train-styles cartoon,stylization \\
        --train-render-fraction 0.5 --gallery-style cartoon,stylization,sketch
    python benchmarks/competition_study.py --comp /tmp/day/comp --out /tmp/study

Each submission is kept (``<out>/<arm>/<backbone>-<recipe>-s<seed>.json``): a rerun scores what is
there and submits only what is missing. Trained recipes use ``augment=none`` (their features come
from the cache: a recipe x seed costs seconds, not a feature pass); ``--augment report`` restores
the report's views at about 5x the cost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.evaluation.formats import load, read
from benchmark.evaluation.measures import query_scores
from benchmark.evaluation.metrics import sample_interval

#: recipe -> the keys it sets, per arm (renders: training renders exist; held-out: photos only)
TTA = ["centering=true", "rerank=kreciprocal"]
METRIC = ["loss=supcon", "miner=multi_similarity", "samples_per_class=4", "epochs=5"]
CROSS = ["domain_balance=true", "positives=cross_domain"]
RECIPES = {
    "frozen": {"renders": ["embedding=backbone"], "held-out": ["embedding=backbone"]},
    "tta": {"renders": ["embedding=backbone", *TTA], "held-out": ["embedding=backbone", *TTA]},
    "report": {"renders": [], "held-out": []},
    "metric": {"renders": [*METRIC, *CROSS], "held-out": METRIC},
    "combined": {"renders": [*METRIC, *CROSS, *TTA], "held-out": [*METRIC, *TTA]},
}
#: the transductive remedies on the frozen backbone (``--recipes``): whitening (CORAL), pseudo-label
#: self-training, AdaBN (BatchNorm backbones only); no training images read, the same in both arms
TRANSDUCTIVE = {"whiten": ["embedding=backbone", "rerank=whiten"],
                "selftrain": ["embedding=backbone", "rerank=selftrain"],
                "adabn": ["embedding=backbone", "adabn=true"]}
RECIPES |= {name: {"renders": keys, "held-out": keys} for name, keys in TRANSDUCTIVE.items()}
#: recipes a backbone cannot take (sface, dlib: no BatchNorm)
NOT_FOR = {"adabn": ("sface", "dlib")}
SEEDLESS = {"frozen", "tta", *TRANSDUCTIVE}
#: how ``submit`` prints the label-free validators of its test queries and gallery
VALIDATORS_LINE = "validators of these queries and gallery (label-free): "


def photos_only(train: Path, to: Path) -> Path:
    """A copy of ``train`` without the files its ``domains.csv`` calls renders."""
    if (to / ".complete").exists():
        return to
    shutil.rmtree(to, ignore_errors=True)
    with open(train / "domains.csv", newline="") as f:
        photos = [r["path"] for r in csv.DictReader(f) if r["domain"] == "photo"]
    for rel in photos:
        (to / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(train / rel, to / rel)
    (to / ".complete").touch()
    return to


def first_hits(path: Path, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """(each truth query's identity, the rank of its first correct gallery name or inf)."""
    submission, _ = read(load(path))
    gallery = truth["gallery"]
    labels, ranks = [], []
    for q, identity in sorted(truth["queries"].items()):
        hit = [gallery[g] == identity for g in submission.get(q, [])[:10]]
        labels.append(identity)
        ranks.append(hit.index(True) + 1 if any(hit) else np.inf)
    return np.asarray(labels), np.asarray(ranks, dtype=float)


def submit(comp: Path, train: Path, keys: list[str], out: Path, base: Path) -> tuple[float, dict]:
    """(seconds ``submit`` took, 0 when the file was there; the label-free validators it printed for
    the test queries and gallery, kept beside the submission as ``<stem>.validators.json``)."""
    kept = out.with_suffix(".validators.json")
    if out.exists() and kept.exists():
        return 0.0, json.loads(kept.read_text())
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmark", "submit", "--config", str(base),
                           *(["--set", *keys] if keys else []), "--train", str(train), "--query", str(comp / "test" / "query"),
                           "--gallery", str(comp / "test" / "gallery"), "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"submit {out.name} failed:\n{done.stdout[-2000:]}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(VALIDATORS_LINE)), VALIDATORS_LINE)
    found = {k: None if v == "n/a" else float(v)
             for k, v in (item.split("=") for item in line[len(VALIDATORS_LINE):].split(", ") if "=" in item)}
    kept.write_text(json.dumps(found))
    return time.perf_counter() - t0, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comp", type=Path, required=True, help="a make-competition folder with --train-styles")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["sface", "efficientnet_lite0"])
    parser.add_argument("--augment", default="none", help="the trained recipes' augmentation (default: none)")
    parser.add_argument("--recipes", nargs="+", default=["frozen", "tta", "report", "metric", "combined"],
                        choices=list(RECIPES), help="which recipes (frozen is always run: the gains read it)")
    parser.add_argument("--arms", nargs="+", default=["renders", "held-out"], choices=["renders", "held-out"])
    args = parser.parse_args()
    comp, out = args.comp, args.out
    if not (comp / "train" / "domains.csv").exists():
        sys.exit(f"{comp}/train/domains.csv missing: make the layout with make-competition --train-styles")
    out.mkdir(parents=True, exist_ok=True)
    # the shared settings; each submission sets its recipe with --set. The renders arm reads train/'s
    # domains (the cross-domain positives and balanced batches need them); the photos-only arm is a
    # query -> gallery setting without them (which the test-time remedies ask for)
    bases = {"renders": "dataset: imagefolder\ndomains: domains.csv\n", "held-out": "query_fraction: 0.5\n"}
    for arm, text in bases.items():
        (out / f"base-{arm}.yaml").write_text(f"protocol: open-set\nmin_faces_per_person: 2\n{text}")
    truth = json.loads((comp / "truth.json").read_text())
    trains = {"renders": comp / "train", "held-out": out / "train-photos"}
    trains = {arm: train for arm, train in trains.items() if arm in args.arms}
    if "held-out" in trains:
        photos_only(comp / "train", trains["held-out"])
    recipes = {name: RECIPES[name] for name in RECIPES if name == "frozen" or name in args.recipes}
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for arm, train in trains.items():
        for backbone in args.backbones:
            for recipe, keys in recipes.items():
                if backbone in NOT_FOR.get(recipe, ()):
                    continue
                for seed in ([0] if recipe in SEEDLESS else args.seeds):
                    path = out / arm / f"{backbone}-{recipe}-s{seed}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    extra = [] if recipe in SEEDLESS else [f"augment={args.augment}"]
                    took, found = submit(comp, train, [f"backbone={backbone}", f"seed={seed}", *keys[arm], *extra], path,
                                  out / f"base-{arm}.yaml")
                    labels, ranks = first_hits(path, truth)
                    rows.append({"arm": arm, "backbone": backbone, "recipe": recipe, "seed": seed,
                                 "score": float(query_scores(ranks).mean()), "seconds": took,
                                 "labels": labels, "per_query": query_scores(ranks),
                                 **{f"validator/{k}": v for k, v in found.items()}})
                    print(f"{arm:9s} {backbone:18s} {recipe:9s} seed {seed}: {rows[-1]['score']:6.1f} "
                          f"({took:5.1f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    runs = pd.DataFrame(rows)
    table = summarize(runs)
    table.to_csv(out / "study.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    picks = validator_picks(runs)
    picks.to_csv(out / "validators.csv", index=False)
    print("\nLabel-free validators of the test queries and gallery, per arm and backbone: Spearman rho with "
          "the test score over the configurations (seed means), the test score of the configuration each picks, "
          "and its regret against the best by test")
    print(picks.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"load average at end: {os.getloadavg()[0]:.2f}; table: {out / 'study.csv'}")


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm x backbone x recipe: mean test score over seeds (± Student's t half-width), the test
    people's interval, and the gain over the frozen backbone paired over the same people."""
    out = []
    for (arm, backbone, recipe), g in runs.groupby(["arm", "backbone", "recipe"], sort=False):
        per_query = np.mean(np.stack(g["per_query"].to_list()), axis=0)
        labels = g["labels"].iloc[0]
        frozen = runs[(runs["arm"] == arm) & (runs["backbone"] == backbone) & (runs["recipe"] == "frozen")]
        base = frozen["per_query"].iloc[0]
        n = len(g)
        seed_ci = stats.t.ppf(0.975, n - 1) * g["score"].std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        out.append({"arm": arm, "backbone": backbone, "recipe": recipe, "n": n, "score": g["score"].mean(),
                    "seeds ±": seed_ci, "people ±": sample_interval(per_query, labels),
                    "gain vs frozen": per_query.mean() - base.mean(),
                    "gain ± (paired, people)": sample_interval(per_query - base, labels),
                    "s per submit": g["seconds"].mean()})
    return pd.DataFrame(out)


def validator_picks(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm x backbone x validator: how the label-free validators of each configuration's test
    queries and gallery rank the configurations against their test scores (issue 26's validator
    study, on the competition's test folders)."""
    from benchmark.evaluation.validators import VALIDATORS

    out = []
    for (arm, backbone), g in runs.groupby(["arm", "backbone"], sort=False):
        by = g.groupby("recipe", sort=False).mean(numeric_only=True)
        best = by["score"].max()
        for name, v in VALIDATORS.items():
            col = by[f"validator/{name}"].dropna() if f"validator/{name}" in by else pd.Series(dtype=float)
            if len(col) < 2:
                continue
            pick = col.idxmax() if v.higher else col.idxmin()
            rho = stats.spearmanr(col if v.higher else -col, by.loc[col.index, "score"]).statistic
            out.append({"arm": arm, "backbone": backbone, "validator": name, "configurations": len(col),
                        "rho": rho, "picks": pick, "its test score": by.loc[pick, "score"],
                        "best by test": by["score"].idxmax(), "regret": best - by.loc[pick, "score"]})
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
